"""Energy statistics in fp32 and a compile-safe, NaN-safe exponential moving average.

The energy of a tensor along a dimension is the mean of its squares. AION (Croxus-Labs/aion-torch)
scales a residual branch by a function of the ratio of the branch energy to the stream energy;
this module provides those statistics with the numerics the originals lacked:

* accumulation **and result** in fp32 (float64 input stays float64), so fp16/bf16 activations with
  a row RMS above ~256 do not overflow and ε = 1e-8 does not underflow;
* masks for padded tokens, with ``(sum, count)`` pairs that distributed code can all-reduce;
* an EMA (:class:`EMATracker`, :func:`ema_update_`) that skips non-finite inputs element-wise
  instead of being poisoned by them, never reads a value back to the host and therefore traces
  under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "EMATracker",
    "ema_update_",
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

    The result is **NaN when no entry is selected** (0/0), by design: an :class:`EMATracker` fed
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


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a float in [0, 1], got {gamma!r}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    return float(gamma)


def _ema_step(buf: Tensor, x: Tensor, gamma: float, valid: Tensor | None) -> Tensor:
    """Masked in-place EMA step on ``buf``; returns the bool mask of entries that were updated.

    Inputs are validated by the callers. No host sync: the skip is a ``torch.where`` select, so
    non-finite entries leave ``buf`` bit-for-bit unchanged (``lerp`` towards itself).
    """
    with torch.no_grad():
        xs = x.detach().to(buf.dtype)
        ok = torch.isfinite(xs)
        if valid is not None:
            ok = ok & valid
        ok = ok.expand(buf.shape)
        target = torch.where(ok, xs, buf)
        buf.lerp_(target, 1.0 - gamma)
    return ok


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target``."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


def _check_ema_inputs(buf: Tensor, x: object, valid: object, buf_name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"x must be real, got dtype {x.dtype}")
    if not _broadcasts_to(x.shape, buf.shape):
        raise ValueError(
            f"x of shape {tuple(x.shape)} does not broadcast to the {buf_name} shape "
            f"{tuple(buf.shape)}"
        )
    if valid is not None:
        if not isinstance(valid, Tensor):
            raise TypeError(f"valid must be a bool tensor or None, got {type(valid).__name__}")
        if valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
        if not _broadcasts_to(valid.shape, buf.shape):
            raise ValueError(
                f"valid of shape {tuple(valid.shape)} does not broadcast to the {buf_name} shape "
                f"{tuple(buf.shape)}"
            )
    return x


def ema_update_(buf: Tensor, x: Tensor, gamma: float, valid: Tensor | None = None) -> Tensor:
    """NaN-safe in-place EMA ``buf ← γ·buf + (1−γ)·x`` on a caller-owned floating buffer.

    Element-wise, the update happens only where ``x`` is finite (and ``valid`` is True);
    elsewhere ``buf`` is left unchanged. Runs under ``no_grad`` on ``x.detach()`` cast to
    ``buf.dtype``; no host sync, so it traces under ``torch.compile(fullgraph=True)``.

    Args:
        buf: fp32 (or other real floating) buffer of any shape ``S``, updated in place.
        x: New observation, broadcastable to ``S``.
        gamma: Decay in ``[0, 1]``; 1 freezes the buffer.
        valid: Optional bool tensor broadcastable to ``S``; False entries are not updated.

    Returns:
        ``buf``.

    Raises:
        TypeError: a non-tensor argument or a non-float ``gamma``.
        ValueError: ``buf`` not real floating, ``gamma`` outside ``[0, 1]``, shapes that do not
            broadcast to ``buf.shape``, ``valid`` not bool.
    """
    _check_float_tensor(buf, "buf")
    g = _check_gamma(gamma)
    _check_ema_inputs(buf, x, valid, "buf")
    _ema_step(buf, x, g, valid)
    return buf


class EMATracker(nn.Module):
    """NaN-safe exponential moving average held in persistent fp32 buffers.

    ``update_`` moves ``value`` towards finite observations with ``value.lerp_(x, 1 - gamma)`` and
    leaves it unchanged where the observation is NaN/Inf or not ``valid``. The counters
    ``num_updates`` / ``num_skipped`` grow by one per call in which any entry was updated /
    skipped, as tensor additions (no host sync, compiles with ``fullgraph=True``).

    Args:
        gamma: Decay in ``[0, 1]``; 1 freezes the value.
        init: Initial value of every entry. Must be 0 when ``bias_correction`` is True.
        shape: Shape ``S`` of the tracked value; ``()`` for a scalar.
        bias_correction: ``read()`` returns ``value / (1 − γ^num_updates)`` (Adam-style), the
            exact mean of a constant stream.

    Attributes:
        value: fp32 buffer of shape ``S``.
        num_updates: int64 0-dim buffer.
        num_skipped: int64 0-dim buffer.

    Raises:
        ValueError: ``gamma`` outside ``[0, 1]``, negative sizes in ``shape``, or
            ``bias_correction`` with ``init != 0``.
    """

    value: Tensor
    num_updates: Tensor
    num_skipped: Tensor

    def __init__(
        self,
        gamma: float = 0.99,
        init: float = 1.0,
        *,
        shape: tuple[int, ...] = (),
        bias_correction: bool = False,
    ) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        if isinstance(init, bool) or not isinstance(init, (int, float)):
            raise TypeError(f"init must be a float, got {init!r}")
        shape = tuple(shape)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
            raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
        if bias_correction and init != 0.0:
            raise ValueError(f"bias_correction=True requires init=0, got init={init!r}")
        self.init = float(init)
        self.shape = shape
        self.bias_correction = bool(bias_correction)
        self.register_buffer("value", torch.full(shape, self.init, dtype=torch.float32))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("num_skipped", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, init={self.init}, shape={self.shape}, "
            f"bias_correction={self.bias_correction}"
        )

    def update_(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Update with observation ``x`` (broadcastable to ``S``) and return :meth:`read`.

        Args:
            x: Observation, any real dtype; detached and cast to fp32.
            valid: Optional bool tensor broadcastable to ``S``; False entries are skipped.

        Returns:
            The (bias-corrected) value, shape ``S``.
        """
        _check_ema_inputs(self.value, x, valid, "tracker")
        ok = _ema_step(self.value, x, self.gamma, valid)
        with torch.no_grad():
            self.num_updates.add_(ok.any().to(torch.int64))
            self.num_skipped.add_((~ok).any().to(torch.int64))
        return self.read()

    def read(self) -> Tensor:
        """The current value, bias-corrected if configured; shape ``S``, fp32.

        With bias correction and no update yet, the (zero) value is returned instead of 0/0.
        """
        if not self.bias_correction:
            return self.value
        denom = 1.0 - torch.pow(self.gamma, self.num_updates.to(torch.float32))
        safe = torch.where(denom > 0, denom, torch.ones_like(denom))
        return self.value / safe

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Alias of :meth:`update_`."""
        return self.update_(x, valid)
