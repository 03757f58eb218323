"""A compile-safe, NaN-safe exponential moving average held in fp32.

:class:`EMATracker` (a module with persistent buffers) and :func:`ema_update_` (the same rule on a
caller-owned buffer) skip non-finite observations element-wise instead of being poisoned by them,
never read a value back to the host and therefore trace under ``torch.compile(fullgraph=True)``.
The tracked value stays fp32 when the module is cast to fp16/bf16 (``.half()``, ``.to(dtype)``):
a bf16 EMA with γ = 0.99 stalls, because a step of ``(1 − γ)·(x − value)`` is below half an ulp.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from adaptnn_core._energy import _check_float_tensor
from adaptnn_core._precision import keep_fp32

__all__ = ["EMATracker", "ema_update_"]


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
        value: fp32 buffer of shape ``S``. It stays fp32 when the module is cast to fp16 or bf16
            (``.half()``, ``.bfloat16()``, ``.to(dtype)``), moves with ``.to(device)`` and follows
            ``.double()`` to float64.
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

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> EMATracker:
        # ``value`` stays at least fp32 through ``.half()``/``.to(torch.bfloat16)`` (device moves
        # and ``.double()`` still apply): see adaptnn_core._precision.
        before = self.value
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves it untyped
        self.value = keep_fp32(self.value, before)
        return self

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
