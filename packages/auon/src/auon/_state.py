"""Per-group state collection: parameters with gradients and their lazily created momentum state."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from auon._dtensor import _local


def _collect_group(
    state: Any, group: dict[str, Any], name: str
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[float]]:
    """Parameters with gradients, their gradients, momentum buffers, counters and ``wd_mul``s.

    Creates ``"momentum_buffer"`` (zeros like ``p``) and ``"nonfinite_steps"`` (int64 0-D) lazily.
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    bufs: list[Tensor] = []
    counters: list[Tensor] = []
    wd_muls: list[float] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        st = state[p]
        if len(st) == 0:
            st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["nonfinite_steps"] = torch.zeros((), dtype=torch.int64, device=_local(p).device)
        params.append(p)
        grads.append(p.grad)
        bufs.append(st["momentum_buffer"])
        counters.append(st["nonfinite_steps"])
        wd_muls.append(float(getattr(p, "wd_mul", 1.0)))
    return params, grads, bufs, counters, wd_muls
