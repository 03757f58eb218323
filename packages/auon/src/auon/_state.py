"""Per-group state collection: parameters with gradients and their lazily created momentum state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from auon._dtensor import _local


class _GroupTensors(NamedTuple):
    """The tensors one step works on: parameters with gradients and their state, index-aligned."""

    params: list[Tensor]
    grads: list[Tensor]
    bufs: list[Tensor]  # "momentum_buffer"
    counters: list[Tensor] | None  # "nonfinite_steps" (int64 0-D), or None: not counted
    wd_muls: list[float]  # the parameters' ``wd_mul`` attributes (1.0 where absent)

    def subset(self, idx: Sequence[int]) -> _GroupTensors:
        """The entries ``idx``, in that order."""
        counters = self.counters
        return _GroupTensors(
            [self.params[i] for i in idx],
            [self.grads[i] for i in idx],
            [self.bufs[i] for i in idx],
            None if counters is None else [counters[i] for i in idx],
            [self.wd_muls[i] for i in idx],
        )

    def local(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The local shards (DTensor) or the tensors themselves: parameters, gradients, buffers."""
        return (
            [_local(p) for p in self.params],
            [_local(g) for g in self.grads],
            [_local(m) for m in self.bufs],
        )


def _params_with_grads(group: dict[str, Any], name: str) -> list[Tensor]:
    """The parameters of ``group`` that have a gradient; ``RuntimeError`` for a sparse one."""
    out: list[Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        out.append(p)
    return out


def _collect_group(state: Any, group: dict[str, Any], name: str) -> _GroupTensors:
    """The parameters of ``group`` with gradients and their momentum state (created lazily).

    Creates ``"momentum_buffer"`` (zeros like ``p``) and ``"nonfinite_steps"`` (int64 0-D), each
    when missing: a state loaded from the original optimiser has only the momentum buffer.
    """
    params = _params_with_grads(group, name)
    for p in params:
        st = state[p]
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if "nonfinite_steps" not in st:
            st["nonfinite_steps"] = torch.zeros((), dtype=torch.int64, device=_local(p).device)
    return _GroupTensors(
        params,
        [cast(Tensor, p.grad) for p in params],
        [state[p]["momentum_buffer"] for p in params],
        [state[p]["nonfinite_steps"] for p in params],
        [float(getattr(p, "wd_mul", 1.0)) for p in params],
    )
