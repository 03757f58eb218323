"""Tensor-list ops that run ``torch._foreach_*`` kernels or a per-tensor loop with the same formulas.

The two paths agree, so an optimiser can pick either per call (``foreach=None`` → foreach for CUDA
tensors, as ``torch.optim``). An argument that is a list (or tuple) holds one entry per tensor;
anything else (a float, a 0-D tensor) is shared by all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


def _entry(arg: Any, i: int) -> Any:
    return arg[i] if isinstance(arg, (list, tuple)) else arg


def _foreach_args(args: tuple[Any, ...]) -> list[Any]:
    return [list(a) if isinstance(a, (list, tuple)) else a for a in args]


def _each(name: str, xs: list[Tensor], *args: Any, foreach: bool) -> list[Tensor]:
    """``torch.<name>(x_i, *args_i)`` for every ``i``: one ``torch._foreach_<name>`` or a loop."""
    if foreach:
        return list(getattr(torch, f"_foreach_{name}")(xs, *_foreach_args(args)))
    fn = getattr(torch, name)
    return [fn(x, *(_entry(a, i) for a in args)) for i, x in enumerate(xs)]


def _each_(name: str, xs: list[Tensor], *args: Any, foreach: bool) -> None:
    """``x_i.<name>_(*args_i)`` in place for every ``i``: one ``torch._foreach_<name>_`` or a loop."""
    if foreach:
        getattr(torch, f"_foreach_{name}_")(xs, *_foreach_args(args))
        return
    for i, x in enumerate(xs):
        getattr(x, f"{name}_")(*(_entry(a, i) for a in args))


def _neg(xs: list[Tensor], foreach: bool) -> list[Tensor]:
    return _each("neg", xs, foreach=foreach)


def _lerp(a: list[Tensor], b: list[Tensor], w: float, foreach: bool) -> list[Tensor]:
    return _each("lerp", a, b, w, foreach=foreach)


def _mul(xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> list[Tensor]:
    """``x_i * c_i`` with 0-D tensors ``c_i``."""
    return _each("mul", xs, cs, foreach=foreach)


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


def _norms(
    xs: list[Tensor], foreach: bool, ord: float = 2.0, dtype: torch.dtype | None = None
) -> Tensor:
    """Stacked vector norms accumulated in ``dtype``, shape ``(len(xs),)``.

    ``dtype=None``: fp32 (float64 for float64 input). Pass float64 where the squares of fp32 or
    bf16 entries above ~1.8e19 must not overflow (a finite tensor must have a finite norm).
    """
    acc = dtype or (torch.float64 if xs[0].dtype == torch.float64 else torch.float32)
    if foreach:
        return torch.stack(torch._foreach_norm(xs, ord, dtype=acc))
    return torch.stack([torch.linalg.vector_norm(x, ord, dtype=acc) for x in xs])


def _lerp_(a: list[Tensor], b: list[Tensor], w: float | Sequence[Tensor], foreach: bool) -> None:
    """``a_i ← lerp(a_i, b_i, w)`` with a float or per-tensor 0-D tensor weights ``w_i``."""
    _each_("lerp", a, b, w, foreach=foreach)


def _mul_(xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> None:
    _each_("mul", xs, cs, foreach=foreach)


def _addcmul_(ps: list[Tensor], xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> None:
    """``p_i += x_i * c_i`` with 0-D tensors ``c_i``."""
    _each_("addcmul", ps, xs, cs, foreach=foreach)


def _unary_(xs: list[Tensor], name: str, foreach: bool) -> None:
    _each_(name, xs, foreach=foreach)


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
