"""Tensor-list ops that run ``torch._foreach_*`` kernels or a per-tensor loop with the same formulas.

The two paths agree, so an optimiser can pick either per call (``foreach=None`` → foreach for CUDA
tensors, as ``torch.optim``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


def _neg(xs: list[Tensor], foreach: bool) -> list[Tensor]:
    return list(torch._foreach_neg(xs)) if foreach else [torch.neg(x) for x in xs]


def _lerp(a: list[Tensor], b: list[Tensor], w: float, foreach: bool) -> list[Tensor]:
    return (
        list(torch._foreach_lerp(a, b, w))
        if foreach
        else [torch.lerp(x, y, w) for x, y in zip(a, b, strict=True)]
    )


def _lerp_into(
    a: list[Tensor], b: list[Tensor], w: float, out: list[Tensor] | None, foreach: bool
) -> list[Tensor]:
    """``lerp(a_i, b_i, w)``, written into ``out_i`` when given (no allocation)."""
    if out is None:
        return _lerp(a, b, w, foreach)
    return [torch.lerp(x, y, w, out=o) for x, y, o in zip(a, b, out, strict=True)]


def _mul_into(
    xs: list[Tensor], cs: Sequence[Tensor], out: list[Tensor] | None, foreach: bool
) -> list[Tensor]:
    """``x_i * c_i`` with 0-D tensors ``c_i``, written into ``out_i`` when given."""
    if out is None:
        return _mul(xs, cs, foreach)
    return [torch.mul(x, c, out=o) for x, c, o in zip(xs, cs, out, strict=True)]


def _sums(xs: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Stacked sums ``Σ x_i`` accumulated in ``dtype``, shape ``(len(xs),)``."""
    return torch.stack([x.sum(dtype=dtype) for x in xs])


def _lerp_(a: list[Tensor], b: list[Tensor], w: float, foreach: bool) -> None:
    if foreach:
        torch._foreach_lerp_(a, b, w)
    else:
        for x, y in zip(a, b, strict=True):
            x.lerp_(y, w)


def _lerp_weighted_(a: list[Tensor], b: list[Tensor], ws: Sequence[Tensor], foreach: bool) -> None:
    """``a_i ← lerp(a_i, b_i, w_i)`` with 0-D tensor weights ``w_i``."""
    if foreach:
        torch._foreach_lerp_(a, b, list(ws))
    else:
        for x, y, w in zip(a, b, ws, strict=True):
            x.lerp_(y, w)


def _norms(xs: list[Tensor], foreach: bool, ord: float = 2.0) -> Tensor:
    """Stacked fp32 (float64 for float64 input) vector norms, shape ``(len(xs),)``."""
    acc = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    if foreach:
        return torch.stack(torch._foreach_norm(xs, ord, dtype=acc))
    return torch.stack([torch.linalg.vector_norm(x, ord, dtype=acc) for x in xs])


def _mul(xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> list[Tensor]:
    """``x_i * c_i`` with 0-D tensors ``c_i``."""
    if foreach:
        return list(torch._foreach_mul(xs, list(cs)))
    return [x * c for x, c in zip(xs, cs, strict=True)]


def _mul_(xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> None:
    if foreach:
        torch._foreach_mul_(xs, list(cs))
    else:
        for x, c in zip(xs, cs, strict=True):
            x.mul_(c)


def _addcmul_(ps: list[Tensor], xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> None:
    """``p_i += x_i * c_i`` with 0-D tensors ``c_i``."""
    if foreach:
        torch._foreach_addcmul_(ps, xs, list(cs))
    else:
        for p, x, c in zip(ps, xs, cs, strict=True):
            p.addcmul_(x, c)


def _unary_(xs: list[Tensor], name: str, foreach: bool) -> None:
    if foreach:
        getattr(torch, f"_foreach_{name}_")(xs)
    else:
        for x in xs:
            getattr(x, f"{name}_")()


def _use_foreach(foreach: bool | None, tensors: Iterable[Tensor]) -> bool:
    """``None`` → foreach for CUDA tensors (as torch.optim), else the given flag."""
    if foreach is None:
        return all(t.is_cuda for t in tensors)
    return foreach


def _buckets(n: int, keys: Callable[[int], Any]) -> list[list[int]]:
    """Indices grouped by ``keys(i)`` in first-seen order."""
    out: dict[Any, list[int]] = {}
    for i in range(n):
        out.setdefault(keys(i), []).append(i)
    return list(out.values())
