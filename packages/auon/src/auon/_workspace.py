"""The CPU workspace: persistent scratch buffers that spare large per-step allocations on CPU."""

from __future__ import annotations

import torch
from torch import Tensor

from auon._dtensor import _local


def _cpu_workspace(
    owner: object, params: list[Tensor], dtype: torch.dtype | None
) -> list[tuple[Tensor, Tensor]] | None:
    """Two persistent scratch buffers per CPU parameter for :func:`auon.auon_step`, else ``None``.

    The CPU allocator returns large freed blocks to the operating system, so a fresh temporary
    per step costs page faults that can exceed the arithmetic; GPU caching allocators do not,
    hence CPU only. The buffers live in ``owner._auon_workspace`` (not in the optimiser state, so
    never in a checkpoint) and are rebuilt when a parameter's local shape or the dtype changes.
    ``dtype=None`` gives each parameter buffers of its own dtype.
    """
    locals_ = [_local(p) for p in params]
    if not locals_ or any(t.device.type != "cpu" for t in locals_):
        return None
    cache: dict[int, tuple[Tensor, Tensor, Tensor]] = owner.__dict__.setdefault(
        "_auon_workspace", {}
    )
    out = []
    for p, t in zip(params, locals_, strict=True):
        want = t.dtype if dtype is None else dtype
        entry = cache.get(id(p))
        if (
            entry is None
            or entry[0] is not p
            or entry[1].shape != t.shape
            or entry[1].dtype != want
        ):
            fresh = [torch.empty(t.shape, dtype=want) for _ in range(2)]
            entry = (p, fresh[0], fresh[1])
            cache[id(p)] = entry
        out.append((entry[1], entry[2]))
    return out
