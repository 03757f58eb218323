"""Scalar parameters stored as 1-element vectors but checkpointed as 0-dim tensors.

FSDP2 (``torch.distributed.fsdp.fully_shard``) shards every parameter along dim 0 and refuses
0-dim ones ("doesn't support scalar parameters"), so AION's α0 and β and ReZero's α are parameters
of shape ``(1,)``. Checkpoints keep the 0-dim form of aion-torch 1.0.x: :class:`ScalarParamModule`
loads 0-dim (and ``(1,)``) tensors into them with ``strict=True`` and saves plain tensors as 0-dim
views, which the published 1.0.2 loads.

Under FSDP2 the saved values are DTensor shards and keep the parameter's ``(1,)`` shape, because
distributed checkpointing matches each saved shard to the sharded parameter; a full state dict
gathered from it (``get_model_state_dict(..., options=StateDictOptions(full_state_dict=True))``)
therefore holds ``(1,)`` tensors, which this package loads and 1.0.2 needs ``.reshape(())`` for.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["ScalarParamModule", "scalar_parameter"]


def scalar_parameter(value: float, *, requires_grad: bool = True) -> nn.Parameter:
    """A fp32 parameter of shape ``(1,)`` holding ``value``."""
    return nn.Parameter(
        torch.full((1,), float(value), dtype=torch.float32), requires_grad=requires_grad
    )


class ScalarParamModule(nn.Module):
    """Base of modules whose parameters named in ``scalar_params`` are ``(1,)`` scalars.

    ``state_dict()`` holds them as 0-dim views of the parameters (plain tensors only; with
    ``keep_vars=True`` the parameters themselves), and ``load_state_dict`` accepts 0-dim or
    ``(1,)`` values for them.
    """

    scalar_params: ClassVar[tuple[str, ...]] = ()

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if keep_vars:
            return
        for name in self.scalar_params:
            value = destination.get(prefix + name)
            # exact type: a DTensor shard (FSDP2) keeps the parameter's shape for checkpointing
            if type(value) is Tensor and value.shape == (1,):
                destination[prefix + name] = value.view(())

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        for name in self.scalar_params:
            value = state_dict.get(prefix + name)
            if isinstance(value, Tensor) and value.ndim == 0:
                state_dict[prefix + name] = value.reshape(1)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
