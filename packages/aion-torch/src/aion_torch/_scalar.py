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
Loading into a sharded module, a plain value (0-dim or ``(1,)``, e.g. from a 1.0.x checkpoint) is
first laid out like the sharded parameter, from each rank's own copy (no collective), so
``set_model_state_dict(model, full_sd, options=StateDictOptions(full_state_dict=True))`` loads a
1.0.x checkpoint into an FSDP2 model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.distributed
from torch import Tensor, nn

__all__ = ["ScalarParamModule", "scalar_parameter"]


def scalar_parameter(value: float, *, requires_grad: bool = True) -> nn.Parameter:
    """A fp32 parameter of shape ``(1,)`` holding ``value``."""
    return nn.Parameter(
        torch.full((1,), float(value), dtype=torch.float32), requires_grad=requires_grad
    )


def _as_param_layout(value: Tensor, param: Tensor) -> Tensor:
    """``value`` (0-dim or ``(1,)``, plain or a replicated DTensor) shaped like ``param`` (1,).

    For a DTensor ``param`` (FSDP2) the result is a DTensor with ``param``'s mesh and placements,
    built from this rank's copy of the full value (``src_data_rank=None``: no collective).
    """
    if not torch.distributed.is_available():
        return value.reshape(1)
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(value, DTensor):
        if value.ndim != 0:
            return value  # already a (1,) DTensor, e.g. FSDP2's own sharded state dict
        value = value.full_tensor()  # a 0-dim DTensor is replicated: a local copy
    full = value.reshape(1)
    if isinstance(param, DTensor):
        return distribute_tensor(
            full.to(param.device), param.device_mesh, param.placements, src_data_rank=None
        )
    return full


class ScalarParamModule(nn.Module):
    """Base of modules whose parameters named in ``scalar_params`` are ``(1,)`` scalars.

    ``state_dict()`` holds them as 0-dim views of the parameters (plain tensors only; with
    ``keep_vars=True`` the parameters themselves), and ``load_state_dict`` accepts 0-dim or
    ``(1,)`` values for them, also when FSDP2 has sharded the parameters.
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
            param = self._parameters.get(name)
            if (
                isinstance(value, Tensor)
                and param is not None
                and (value.ndim == 0 or type(param) is not nn.Parameter)
            ):
                state_dict[prefix + name] = _as_param_layout(value, param)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
