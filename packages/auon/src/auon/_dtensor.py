"""DTensor (FSDP2) helpers: local shards, the groups to sum per-tensor scalars over, gather/reshard.

On plain tensors every helper is the identity (or a no-op), so the optimisers call them
unconditionally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

from torch import Tensor

from adaptnn_core import all_reduce_coalesced_

_DTensor: Any
try:  # torch.distributed may be unavailable on some builds.
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # pragma: no cover - platform dependent
    _DTensor = None


def _is_dtensor(t: Tensor) -> bool:
    return _DTensor is not None and isinstance(t, _DTensor)


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (shares storage; in-place ops update the DTensor), else ``t``."""
    if _is_dtensor(t):
        local: Tensor = cast(Any, t).to_local()
        return local
    return t


def _reduce_key(p: Tensor) -> tuple[Any, ...] | None:
    """Process groups over which the local per-tensor sums of ``p`` must be summed (None: none).

    ``Shard`` mesh dims need a SUM; ``Replicate`` dims need nothing; ``Partial`` parameters are
    rejected.
    """
    if not _is_dtensor(p):
        return None
    dp: Any = p
    mesh = dp.device_mesh
    groups = []
    for dim, placement in enumerate(dp.placements):
        if placement.is_shard():
            groups.append(mesh.get_group(dim))
        elif placement.is_partial():
            raise ValueError(
                f"params: a DTensor with a Partial placement is not supported ({dp.placements})"
            )
    return tuple(groups) if groups else None


def _all_reduce_by_key(
    stacked: Tensor, keys: Sequence[tuple[Any, ...] | None], op: Literal["sum", "max"]
) -> Tensor:
    """Reduce entry ``i`` of the 1-D ``stacked`` over the groups ``keys[i]``; one collective per group.

    Returns the reduced tensor (``stacked`` itself, reduced in place, in the common case where every
    entry has the same key).
    """
    distinct = {k for k in keys if k is not None}
    if not distinct:
        return stacked
    if len(distinct) == 1 and all(k is not None for k in keys):
        (key,) = distinct
        for group in key:
            all_reduce_coalesced_([stacked], op=op, group=group)
        return stacked
    out = stacked.clone()
    for key in distinct:
        idx = [i for i, k in enumerate(keys) if k == key]
        sub = out[idx].contiguous()
        for group in key:
            all_reduce_coalesced_([sub], op=op, group=group)
        out[idx] = sub
    return out


def _full_tensor(local: Tensor, like: Tensor) -> Tensor:
    """The full tensor whose local shard is ``local``, sharded like the DTensor ``like`` (gathers)."""
    if not _is_dtensor(like):
        return local
    from torch.distributed.tensor import DTensor

    lk: Any = like
    dt = DTensor.from_local(
        local,
        lk.device_mesh,
        lk.placements,
        shape=like.shape,
        stride=like.stride(),
    )
    return dt.full_tensor()


def _local_shard_of(full: Tensor, like: Tensor) -> Tensor:
    """The local shard of ``full`` (identical on every rank) under ``like``'s placements; no comms."""
    if not _is_dtensor(like):
        return full
    from torch.distributed.tensor import DTensor, Replicate

    lk: Any = like
    mesh = lk.device_mesh
    dt = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    local: Tensor = dt.redistribute(mesh, lk.placements).to_local()
    return local
