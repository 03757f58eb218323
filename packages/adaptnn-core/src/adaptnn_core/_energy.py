"""Energy statistics in fp32: mean squares, masked (sum, count) pairs and energy ratios.

The energy of a tensor along a dimension is the mean of its squares. AION (Croxus-Labs/aion-torch)
scales a residual branch by a function of the ratio of the branch energy to the stream energy;
this module provides those statistics with the numerics the originals lacked:

* accumulation **and result** in fp32 (float64 input stays float64), so fp16/bf16 activations with
  a row RMS above ~256 do not overflow and ε = 1e-8 does not underflow;
* masks for padded tokens, with ``(sum, count)`` pairs that distributed code can all-reduce.

The NaN-safe moving average that consumes these statistics lives in :mod:`adaptnn_core._ema`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "energy_ratio",
    "masked_mean",
    "masked_sum_count",
    "mean_square",
    "rms",
]

_Reduction = Literal["none", "mean", "ratio_of_means"]
_REDUCTIONS: tuple[str, ...] = ("none", "mean", "ratio_of_means")


def _check_float_tensor(t: object, name: str) -> Tensor:
    """Return ``t`` if it is a real floating-point tensor, else raise naming ``name``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must have a real floating-point dtype, got {t.dtype} "
            "(integer, bool and complex tensors are not supported)"
        )
    return t


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation/result dtype: float64 stays float64, everything else becomes fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _normalize_dims(ndim: int, dim: int | tuple[int, ...], name: str) -> tuple[int, ...]:
    """Wrap negative dims and check them against ``ndim``; raise ``ValueError`` naming ``name``."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        raise ValueError(f"{name} must name at least one dimension, got {dim!r}")
    out: list[int] = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {dim!r}")
        if not -ndim <= d < ndim:
            raise ValueError(f"{name}={dim!r} is out of range for a tensor with {ndim} dims")
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={dim!r} names a dimension twice")
    return tuple(out)


def mean_square(x: Tensor, dim: int | tuple[int, ...] = -1, keepdim: bool = False) -> Tensor:
    """Mean of ``x²`` over ``dim``, accumulated and returned in fp32.

    This is the "energy" of AION (Croxus-Labs/aion-torch), without the cast back to the input
    dtype that overflows fp16 for a row RMS above ~256.

    Args:
        x: Real floating tensor, e.g. ``(B, T, D)``. float64 input is computed in float64.
        dim: Dimension(s) to reduce.
        keepdim: Keep the reduced dimension(s) with size 1.

    Returns:
        fp32 (or float64) tensor, e.g. ``(B, T)`` for ``dim=-1``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` is integer, bool or complex, 0-dim, ``dim`` is invalid, or a reduced
            dimension is empty.
    """
    _check_float_tensor(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-dim tensor")
    dims = _normalize_dims(x.ndim, dim, "dim")
    for d in dims:
        if x.shape[d] == 0:
            raise ValueError(f"x has an empty reduced dimension {d} (shape {tuple(x.shape)})")
    acc = _acc_dtype(x.dtype)
    if x.dtype == acc:
        # One reduction pass without a squared temporary of x's size: ‖x‖² / n.
        n = 1
        for d in dims:
            n *= x.shape[d]
        norm: Tensor = torch.linalg.vector_norm(x, dim=dims, keepdim=keepdim)
        return norm.square() / n
    return x.to(acc).square().mean(dim=dims, keepdim=keepdim)


def rms(
    x: Tensor, dim: int | tuple[int, ...] = -1, keepdim: bool = False, eps: float = 0.0
) -> Tensor:
    """Root mean square ``sqrt(mean(x²) + eps)`` over ``dim`` in fp32.

    Args:
        x: Real floating tensor, e.g. ``(B, T, D)``.
        dim: Dimension(s) to reduce.
        keepdim: Keep the reduced dimension(s).
        eps: Non-negative constant added (in fp32) under the square root.

    Returns:
        fp32 (or float64) tensor, e.g. ``(B, T)``.

    Raises:
        ValueError: as :func:`mean_square`, or ``eps < 0``.
    """
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    ms = mean_square(x, dim=dim, keepdim=keepdim)
    return (ms + eps).sqrt() if eps > 0.0 else ms.sqrt()


def _check_mask(mask: object, shape: torch.Size, name: str, what: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {tuple(mask.shape)}")
    return mask


def masked_sum_count(values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum of ``values`` where ``mask`` is True, and the number of such entries.

    Both results are 0-dim fp32 tensors (float64 for float64 ``values``), so the pair can be
    all-reduced in one flat buffer and divided afterwards. Masked-out entries are selected away
    with ``torch.where``, so a NaN in a padded position never reaches the sum.

    Args:
        values: Real floating tensor of any shape, e.g. ``(B, T)``.
        mask: Optional bool tensor of the same shape as ``values``; ``None`` counts everything.

    Returns:
        ``(sum, count)``, both 0-dim.

    Raises:
        TypeError: ``values`` or ``mask`` is not a tensor.
        ValueError: ``values`` is not real floating, or ``mask`` is not bool or has another shape.
    """
    _check_float_tensor(values, "values")
    acc = _acc_dtype(values.dtype)
    v = values.to(acc)
    if mask is None:
        count = torch.full((), values.numel(), dtype=acc, device=values.device)
        return v.sum(), count
    _check_mask(mask, values.shape, "mask", "the shape of values")
    total = torch.where(mask, v, torch.zeros((), dtype=acc, device=v.device)).sum()
    return total, mask.sum(dtype=acc)


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is True, as a 0-dim fp32 tensor.

    The result is **NaN when no entry is selected** (0/0), by design: an ``EMATracker`` fed
    from it skips that update instead of moving towards a meaningless 0.

    Args:
        values: Real floating tensor, e.g. ``(B, T)``.
        mask: Optional bool tensor of the same shape.

    Returns:
        0-dim fp32 (or float64) tensor.
    """
    total, count = masked_sum_count(values, mask)
    return total / count


def energy_ratio(
    y: Tensor,
    x: Tensor,
    *,
    dim: int = -1,
    eps: float = 1e-8,
    mask: Tensor | None = None,
    reduction: _Reduction = "mean",
    max_ratio: float | None = None,
) -> Tensor:
    """Energy ratio ``r_i = ms(y)_i / (ms(x)_i + eps)`` per token, optionally reduced.

    AION's rule (Croxus-Labs/aion-torch) is the arithmetic mean over tokens of this ratio. All
    arithmetic is fp32 (float64 for float64 inputs) and ε is added in fp32, where 1e-8 does not
    underflow.

    Args:
        y: Branch output, e.g. ``(B, T, D)``.
        x: Residual stream, same shape as ``y``.
        dim: The feature dimension reduced by the mean square.
        eps: Non-negative constant added to the energy of ``x``.
        mask: Optional bool tensor of ``x.shape`` without ``dim`` (e.g. ``(B, T)``); False marks
            padding. Ignored by ``reduction="none"`` apart from validation.
        reduction: ``"none"`` (per-token values, e.g. ``(B, T)``), ``"mean"`` (masked mean of the
            ``r_i``) or ``"ratio_of_means"`` (``mean ms(y) / (mean ms(x) + eps)`` over valid
            tokens).
        max_ratio: If given, each ``r_i`` is clamped to ``[0, max_ratio]`` before reduction.

    Returns:
        Per-token ratios (``"none"``) or a 0-dim tensor; NaN if the mask selects no token.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: dtypes not real floating, ``x.shape != y.shape``, empty tensors, bad ``dim``,
            ``mask`` not bool or of the wrong shape, bad ``eps``, ``reduction`` or ``max_ratio``.
    """
    _check_float_tensor(y, "y")
    _check_float_tensor(x, "x")
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"x and y must not be empty, got shape {tuple(x.shape)}")
    if x.ndim == 0:
        raise ValueError("x and y must have at least one dimension, got 0-dim tensors")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {dim!r}")
    (d,) = _normalize_dims(x.ndim, dim, "dim")
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if max_ratio is not None and not max_ratio > 0.0:
        raise ValueError(f"max_ratio must be > 0 or None, got {max_ratio!r}")
    token_shape = x.shape[:d] + x.shape[d + 1 :]
    if mask is not None:
        _check_mask(mask, token_shape, "mask", f"x.shape without dim {d}")

    ms_y = mean_square(y, dim=d)
    ms_x = mean_square(x, dim=d)
    if reduction == "ratio_of_means":
        # Clamping applies to per-token ratios; with this reduction it clamps the final ratio.
        sum_y, count = masked_sum_count(ms_y, mask)
        sum_x, _ = masked_sum_count(ms_x, mask)
        out = (sum_y / count) / (sum_x / count + eps)
        return out if max_ratio is None else out.clamp(0.0, max_ratio)
    r = ms_y / (ms_x + eps)
    if max_ratio is not None:
        r = r.clamp(0.0, max_ratio)
    if reduction == "none":
        return r
    return masked_mean(r, mask)
