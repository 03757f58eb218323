"""``adaptnn_core.dist``: thin torch.distributed helpers that degrade to no-ops in a single process.

Every function takes an explicit ``group`` (``None`` = the default group), works the same on
gloo and NCCL (``"avg"`` is SUM followed by a division, not ``ReduceOp.AVG``), never
synchronises the host, and refuses tensors that require grad: statistics are reduced detached,
never through autograd (an in-place collective is an identity to autograd). To reduce or
broadcast into a parameter, pass ``p.detach()``, which shares its storage.

The functions are also re-exported at the top level (``from adaptnn_core import all_reduce_``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "all_reduce_",
    "all_reduce_coalesced_",
    "broadcast_",
    "is_initialized",
    "rank",
    "world_size",
]

_ReduceOpName = Literal["sum", "avg", "max", "min"]
_OPS: tuple[str, ...] = ("sum", "avg", "max", "min")


def is_initialized() -> bool:
    """True when torch.distributed is available and a default process group exists."""
    return bool(dist.is_available() and dist.is_initialized())


def world_size(group: ProcessGroup | None = None) -> int:
    """Number of ranks in ``group`` (``None`` = default group); 1 when not initialised."""
    if not is_initialized():
        return 1
    return int(dist.get_world_size(group))


def rank(group: ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (``None`` = default group); 0 when not initialised."""
    if not is_initialized():
        return 0
    return int(dist.get_rank(group))


def _check_tensor(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.requires_grad:
        raise ValueError(
            f"{name} requires grad; collectives are applied to detached statistics only "
            "(pass tensor.detach(), which shares storage)"
        )
    return t


def _check_op(op: str, tensors: Sequence[Tensor], name: str) -> None:
    if op not in _OPS:
        raise ValueError(f"op must be one of {_OPS}, got {op!r}")
    if op == "avg":
        for t in tensors:
            if not (t.is_floating_point() or t.is_complex()):
                raise ValueError(f'op="avg" needs a floating {name}, got dtype {t.dtype}')


def _torch_op(op: str) -> dist.ReduceOp.RedOpType:
    if op == "max":
        return dist.ReduceOp.MAX
    if op == "min":
        return dist.ReduceOp.MIN
    return dist.ReduceOp.SUM  # "sum", and "avg" = SUM then divide


def _active_world(group: ProcessGroup | None) -> int:
    """World size if a collective is needed, else 0 (not initialised or a single rank)."""
    if not is_initialized():
        return 0
    n = world_size(group)
    return n if n > 1 else 0


def all_reduce_(t: Tensor, op: _ReduceOpName = "sum", group: ProcessGroup | None = None) -> Tensor:
    """In-place all-reduce of ``t`` over ``group``; a no-op when there is nothing to reduce.

    Args:
        t: Tensor of any shape; must not require grad.
        op: ``"sum"``, ``"avg"`` (SUM then divide by the group size), ``"max"`` or ``"min"``.
        group: Process group; ``None`` is the default group.

    Returns:
        ``t``, reduced in place.

    Raises:
        TypeError: ``t`` is not a tensor.
        ValueError: ``t.requires_grad``, an unknown ``op``, or ``"avg"`` on a non-floating ``t``.
    """
    _check_tensor(t, "t")
    _check_op(op, (t,), "t")
    n = _active_world(group)
    if n == 0:
        return t
    buf = t if t.is_contiguous() else t.contiguous()
    dist.all_reduce(buf, op=_torch_op(op), group=group)
    if op == "avg":
        buf.div_(n)
    if buf is not t:
        t.copy_(buf)
    return t


def all_reduce_coalesced_(
    tensors: Sequence[Tensor], op: _ReduceOpName = "sum", group: ProcessGroup | None = None
) -> list[Tensor]:
    """All-reduce many tensors with one flat buffer and one collective per (dtype, device).

    Every rank must pass tensors of the same dtypes and shapes in the same order. Results are
    copied back into the given tensors.

    Args:
        tensors: Tensors of any shapes and dtypes; none may require grad.
        op: ``"sum"``, ``"avg"``, ``"max"`` or ``"min"``.
        group: Process group; ``None`` is the default group.

    Returns:
        The same tensors as a list, reduced in place.

    Raises:
        TypeError: an element is not a tensor.
        ValueError: an element requires grad, an unknown ``op``, or ``"avg"`` on a non-floating
            tensor.
    """
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a sequence of tensors, got {type(tensors).__name__}")
    ts = [_check_tensor(t, f"tensors[{i}]") for i, t in enumerate(tensors)]
    _check_op(op, ts, "tensor")
    n = _active_world(group)
    if n == 0 or not ts:
        return ts
    buckets: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(ts):
        buckets.setdefault((t.dtype, t.device), []).append(i)
    for idx in buckets.values():
        flat = torch.cat([ts[i].reshape(-1) for i in idx])
        dist.all_reduce(flat, op=_torch_op(op), group=group)
        if op == "avg":
            flat.div_(n)
        for i, chunk in zip(idx, flat.split_with_sizes([ts[i].numel() for i in idx]), strict=True):
            ts[i].copy_(chunk.view(ts[i].shape))
    return ts


def broadcast_(t: Tensor, src: int = 0, group: ProcessGroup | None = None) -> Tensor:
    """In-place broadcast of ``t`` from global rank ``src``; a no-op in a single process.

    Args:
        t: Tensor of any shape; must not require grad (pass ``p.detach()`` for a parameter).
        src: Global rank that holds the data (as in ``torch.distributed.broadcast``).
        group: Process group; ``None`` is the default group.

    Returns:
        ``t``, overwritten with ``src``'s data on every rank.

    Raises:
        TypeError: ``t`` is not a tensor or ``src`` not an int.
        ValueError: ``t.requires_grad`` or ``src < 0``.
    """
    _check_tensor(t, "t")
    if isinstance(src, bool) or not isinstance(src, int):
        raise TypeError(f"src must be an int, got {src!r}")
    if src < 0:
        raise ValueError(f"src must be >= 0, got {src}")
    if _active_world(group) == 0:
        return t
    buf = t if t.is_contiguous() else t.contiguous()
    dist.broadcast(buf, src=src, group=group)
    if buf is not t:
        t.copy_(buf)
    return t
