"""``AionResidual``: the adaptive residual ``out = x + α·y`` with α from an energy ratio.

AION (Croxus-Labs/aion-torch) scales a residual branch ``y`` by ``α = α0 / (1 + β·r̄)``, where
``r̄`` is an exponential moving average of the ratio of the branch energy ``E[y²]`` to the stream
energy ``E[x²]`` (``x_norm`` when given). Two numerics are provided:

* ``mode="default"``: statistics detached and in fp32 (``adaptnn_core``), per-token ratios clamped
  to ``[0, max_ratio]`` and masked, a NaN-safe EMA updated in place, no host synchronisation, one
  graph under ``torch.compile(fullgraph=True)``, α in eval recomputed from the current parameters,
  token-weighted distributed statistics on an explicit process group (``"allreduce"``) or one
  coalesced reduction per optimiser step (``"deferred"`` with :func:`aion_torch.sync_stats`).
* ``mode="reference"``: the aion-torch 1.0.x numerics, bit for bit in fp32 (energies cast back to
  the input dtype, mean of per-token ratios, ratio not detached, equal-weight AVG all-reduce on
  WORLD, eval with ``alpha_cached``), but with buffers written in place and ``alpha_cached``
  stored detached so that ``deepcopy`` and eval-mode backward work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast, overload

import torch
from torch import Tensor

from adaptnn_core import all_reduce_, ema_update_, keep_fp32, masked_sum_count, mean_square
from aion_torch._reference import reference_forward
from aion_torch._scalar import ScalarParamModule, scalar_parameter

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["AionResidual"]

Mode = Literal["default", "reference"]
Reduction = Literal["mean", "ratio_of_means"]
SyncStats = Literal["none", "allreduce", "deferred"]

_MODES: tuple[str, ...] = ("default", "reference")
_REDUCTIONS: tuple[str, ...] = ("mean", "ratio_of_means")
_SYNCS: tuple[str, ...] = ("none", "allreduce", "deferred")
_PARAMS: tuple[str, ...] = ("alpha0", "beta")
_DEFAULT_MAX_RATIO = 1e4
_FP32_STATS: tuple[str, ...] = ("ratio_ema", "alpha_cached")


def _st_clamp_min0(p: Tensor) -> Tensor:
    """``max(p, 0)`` in the forward with an identity (straight-through) gradient.

    A plain clamp would freeze a scalar that an optimiser step pushed below 0 (its gradient is 0
    there); with the straight-through gradient it can move back into the valid range.
    """
    if not p.requires_grad:
        return p.clamp(min=0.0)
    return p - p.detach().clamp(max=0.0)  # value p − min(p, 0) = max(p, 0), gradient 1


class AionResidual(ScalarParamModule):
    """Adaptive residual ``out = x + α·y`` with ``α = α0 / (1 + β·r̄)`` (AION).

    ``r̄`` is an EMA of the batch energy ratio ``E[y²] / (E[d²] + ε)``, ``d = x_norm`` if given else
    ``x``. The constructor keeps the aion-torch 1.0.x positional signature; everything new is
    keyword-only.

    Args:
        alpha0: Initial base scale α0 (> 0); a ``(1,)`` fp32 parameter.
        beta: Initial sensitivity β (≥ 0); a ``(1,)`` fp32 parameter. In the default mode the
            forward uses ``max(β, 0)`` (and ``max(α0, 0)``), with a straight-through gradient.
        ema_gamma: EMA decay γ in ``[0, 1]``. γ = 1 means "no smoothing": α uses the batch
            statistic (in the default mode ``ratio_ema`` then stores the last statistic).
        epsilon: ε (> 0) added to the stream energy.
        mode: ``"default"`` (improved numerics) or ``"reference"`` (aion-torch 1.0.x numerics);
            the reference mode accepts no other keyword option.
        detach_stats: Default mode: compute the statistic under ``no_grad`` (then
            ``∂out/∂x = 1`` and ``∂out/∂y = α`` exactly). False lets gradients flow through it.
        reduction: ``"mean"`` (masked mean of per-token ratios, the AION rule) or
            ``"ratio_of_means"`` (``mean E[y²] / (mean E[d²] + ε)``).
        max_ratio: Per-token ratios are clamped to ``[0, max_ratio]`` (> 0).
        sync_stats: ``"none"`` (local statistic), ``"allreduce"`` (token-weighted SUM
            all-reduce of (sum, count) on ``process_group`` in every training forward) or
            ``"deferred"`` (accumulate into ``pending``; :func:`aion_torch.sync_stats` reduces
            every layer at once per optimiser step and updates the EMA).
        process_group: Group for the collectives; ``None`` = default group.
        trainable: Names among ``("alpha0", "beta")`` that require grad; the others are frozen.

    Attributes:
        alpha0, beta: ``(1,)`` fp32 parameters (FSDP2 shards no 0-dim parameter), saved in and
            loaded from ``state_dict`` as 0-dim tensors like aion-torch 1.0.x (see
            :mod:`aion_torch._scalar`).
        ratio_ema: fp32 0-dim buffer (init 1.0), persistent.
        step_count: int32 0-dim buffer, training forwards counted, persistent.
        alpha_cached: fp32 0-dim buffer, α of the last training forward (detached), persistent.
        num_skipped: int64 0-dim buffer, non-finite statistics skipped (not persistent).
        pending: fp32 ``(2,)`` tensor, (ratio sum, token count) awaiting ``sync_stats``; not a
            buffer (see :attr:`pending`), not in ``state_dict``.

    ``ratio_ema``, ``alpha_cached`` and ``pending`` stay fp32 when the module is cast to fp16 or
    bf16 (``.half()``, ``.bfloat16()``, ``.to(dtype)``): a bf16 EMA stalls. Device moves apply to
    them and ``.double()`` upgrades them to float64; ``step_count`` and ``num_skipped`` keep their
    integer dtypes.

    Raises:
        ValueError: an invalid value (the original messages are kept: "alpha0 must be
            positive", "beta must be non-negative", "ema_gamma must be in [0, 1]", "epsilon
            must be positive").
    """

    post_norm: ClassVar[bool] = False
    scalar_params: ClassVar[tuple[str, ...]] = _PARAMS

    ratio_ema: Tensor
    step_count: Tensor
    alpha_cached: Tensor
    num_skipped: Tensor
    _pending: Tensor

    def __init__(
        self,
        alpha0: float = 0.1,
        beta: float = 0.05,
        ema_gamma: float = 0.99,
        epsilon: float = 1e-8,
        *,
        mode: Mode = "default",
        detach_stats: bool = True,
        reduction: Reduction = "mean",
        max_ratio: float = _DEFAULT_MAX_RATIO,
        sync_stats: SyncStats = "none",
        process_group: ProcessGroup | None = None,
        trainable: Sequence[str] = _PARAMS,
    ) -> None:
        super().__init__()
        for name, value in (
            ("alpha0", alpha0),
            ("beta", beta),
            ("ema_gamma", ema_gamma),
            ("epsilon", epsilon),
            ("max_ratio", max_ratio),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {value!r}")
        if not alpha0 > 0:
            raise ValueError(f"alpha0 must be positive, got {alpha0!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be non-negative, got {beta!r}")
        if not 0 <= ema_gamma <= 1:
            raise ValueError(f"ema_gamma must be in [0, 1], got {ema_gamma!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if sync_stats not in _SYNCS:
            raise ValueError(f"sync_stats must be one of {_SYNCS}, got {sync_stats!r}")
        if not max_ratio > 0:
            raise ValueError(f"max_ratio must be positive, got {max_ratio!r}")
        if not isinstance(detach_stats, bool):
            raise TypeError(f"detach_stats must be a bool, got {detach_stats!r}")
        names = (trainable,) if isinstance(trainable, str) else tuple(trainable)
        unknown = [n for n in names if n not in _PARAMS]
        if unknown:
            raise ValueError(f"trainable must contain only {_PARAMS}, got unknown {unknown!r}")
        if reduction == "ratio_of_means" and sync_stats == "deferred":
            raise ValueError(
                "reduction='ratio_of_means' is not supported with sync_stats='deferred' "
                "(pending holds a (ratio sum, count) pair)"
            )
        if mode == "reference":
            non_default = [
                name
                for name, bad in (
                    ("detach_stats", detach_stats is not True),
                    ("reduction", reduction != "mean"),
                    ("max_ratio", max_ratio != _DEFAULT_MAX_RATIO),
                    ("sync_stats", sync_stats != "none"),
                    ("process_group", process_group is not None),
                    ("trainable", set(names) != set(_PARAMS)),
                )
                if bad
            ]
            if non_default:
                raise ValueError(
                    f"mode='reference' reproduces aion-torch 1.0.x and accepts no other option; "
                    f"got non-default {non_default}"
                )

        self.mode: Mode = mode
        self.ema_gamma = float(ema_gamma)
        self.epsilon = float(epsilon)
        self.detach_stats = detach_stats
        self.reduction: Reduction = reduction
        self.max_ratio = float(max_ratio)
        self.sync_stats: SyncStats = sync_stats
        self.process_group = process_group
        self.trainable = tuple(n for n in _PARAMS if n in names)

        self.alpha0 = scalar_parameter(alpha0, requires_grad="alpha0" in names)
        self.beta = scalar_parameter(beta, requires_grad="beta" in names)
        self.register_buffer("ratio_ema", torch.tensor(1.0, dtype=torch.float32))
        self.register_buffer("step_count", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("alpha_cached", torch.tensor(float(alpha0), dtype=torch.float32))
        self.register_buffer("num_skipped", torch.tensor(0, dtype=torch.int64), persistent=False)
        # Not a registered buffer: DDP (broadcast_buffers=True, the default) broadcasts rank 0's
        # buffers before every forward, which would overwrite this rank's accumulator between the
        # micro-batches of one step. ``_apply`` moves it with the module; it was never persistent.
        # (DDP's ignore list would need the wrapped model's qualified names from the user.)
        self._pending = torch.zeros(2, dtype=torch.float32)

    @property
    def pending(self) -> Tensor:
        """fp32 ``(2,)`` (ratio sum, token count) of deferred statistics awaiting ``sync_stats``.

        A plain tensor attribute rather than a buffer, so that DDP's buffer broadcast leaves each
        rank's own accumulator alone; it moves with ``.to()``/``.cuda()`` like a buffer and is
        not in ``state_dict``.
        """
        if self._pending.device != self.ratio_ema.device:
            # a wrapper moved only the registered tensors (FSDP2's fully_shard moves parameters
            # and buffers, not other attributes): follow them; a metadata check, no host sync
            self._pending = self._pending.to(self.ratio_ema.device)
        return self._pending

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> AionResidual:
        # Statistics stay at least fp32 through .half()/.bfloat16()/.to(dtype); device moves and
        # .double() apply (adaptnn_core.keep_fp32). ``pending`` is not a buffer: moved here.
        before = {name: getattr(self, name) for name in _FP32_STATS}
        pending = self._pending
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves it untyped
        for name, old in before.items():
            setattr(self, name, keep_fp32(getattr(self, name), old))
        self._pending = keep_fp32(fn(pending), pending)
        return self

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, ema_gamma={self.ema_gamma}, epsilon={self.epsilon}, "
            f"detach_stats={self.detach_stats}, reduction={self.reduction!r}, "
            f"max_ratio={self.max_ratio}, sync_stats={self.sync_stats!r}, "
            f"trainable={self.trainable}"
        )

    def no_weight_decay(self) -> set[str]:
        """Parameter names that must not be weight-decayed (timm convention): α0 and β."""
        return set(_PARAMS)

    # ------------------------------------------------------------------ validation
    def _check_inputs(
        self, x: object, y: object, x_norm: object, mask: object
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        if isinstance(x_norm, bool):
            raise TypeError(
                "x_norm must be a tensor or None, got a bool: since aion-torch 1.0.1 the third "
                "positional argument is x_norm; pass return_stats by keyword"
            )
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        x, y = cast(Tensor, x), cast(Tensor, y)
        if x.numel() == 0:
            raise ValueError(f"x cannot be empty, got shape {tuple(x.shape)}")
        if y.numel() == 0:
            raise ValueError(f"y cannot be empty, got shape {tuple(y.shape)}")
        if x.shape != y.shape:
            raise ValueError(
                f"Input shapes must match: x {tuple(x.shape)} vs y {tuple(y.shape)} "
                "(no broadcasting)"
            )
        if not x.is_floating_point() or not y.is_floating_point():
            raise ValueError(f"x and y must be floating tensors, got {x.dtype} and {y.dtype}")
        if x_norm is not None:
            if not isinstance(x_norm, Tensor):
                raise TypeError(f"x_norm must be a tensor or None, got {type(x_norm).__name__}")
            if x_norm.shape != x.shape:
                raise ValueError(
                    f"Input shapes must match: x {tuple(x.shape)} vs x_norm {tuple(x_norm.shape)}"
                )
            if not x_norm.is_floating_point():
                raise ValueError(f"x_norm must be a floating tensor, got {x_norm.dtype}")
        if mask is not None:
            if self.mode == "reference":
                raise ValueError("mask is not supported in mode='reference' (aion-torch 1.0.x)")
            if (
                not isinstance(mask, Tensor)
                or mask.dtype != torch.bool
                or mask.shape != x.shape[:-1]
            ):
                got = (
                    f"{mask.dtype} {tuple(mask.shape)}"
                    if isinstance(mask, Tensor)
                    else type(mask).__name__
                )
                raise ValueError(
                    f"mask must be bool with shape x.shape[:-1] = {tuple(x.shape[:-1])}, got {got}"
                )
        return x, y, x_norm, mask

    # ------------------------------------------------------------------ forward
    @overload
    def forward(
        self,
        x: Tensor,
        y: Tensor,
        x_norm: Tensor | None = ...,
        return_stats: Literal[False] = ...,
        *,
        mask: Tensor | None = ...,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        x: Tensor,
        y: Tensor,
        x_norm: Tensor | None,
        return_stats: Literal[True],
        *,
        mask: Tensor | None = ...,
    ) -> tuple[Tensor, dict[str, Any]]: ...

    @overload
    def forward(
        self,
        x: Tensor,
        y: Tensor,
        x_norm: Tensor | None = ...,
        *,
        return_stats: Literal[True],
        mask: Tensor | None = ...,
    ) -> tuple[Tensor, dict[str, Any]]: ...

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        x_norm: Tensor | None = None,
        return_stats: bool = False,
        *,
        mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """Return ``x + α·y`` (and statistics when ``return_stats``).

        Args:
            x: Residual stream ``(..., D)``, e.g. ``(B, T, D)``.
            y: Branch output, same shape and dtype as ``x``.
            x_norm: Optional normalised stream (same shape) whose energy replaces that of ``x``
                (pre-norm blocks pass ``norm(x)``).
            return_stats: Also return a dict ``{"alpha", "ratio", "ratio_ema"}`` of detached
                0-dim tensors (reference mode: ``{"alpha", "ratio"}`` as Python floats, which
                synchronises the host).
            mask: Default mode only: bool ``x.shape[:-1]`` (e.g. ``(B, T)``), True = real
                token; padded tokens do not enter the statistic.

        Returns:
            ``out`` with the shape and dtype of ``x``, or ``(out, stats)``.

        Raises:
            TypeError: a bool ``x_norm`` (pass ``return_stats`` by keyword) or a non-tensor.
            ValueError: empty inputs, mismatched shapes, a bad ``mask``; raised before any
                state changes.
        """
        x, y, x_norm, mask = self._check_inputs(x, y, x_norm, mask)
        if self.mode == "reference":
            return reference_forward(self, x, y, x_norm, return_stats)
        if not self.training:
            return self._forward_eval(x, y, return_stats)
        return self._forward_train(x, y, x_norm, return_stats, mask)

    def _alpha(self, ratio_s: Tensor) -> Tensor:
        """``max(α0, 0) / (1 + max(β, 0)·ratio_s)`` (straight-through clamps), 0-dim."""
        a0, b = self.alpha0.reshape(()), self.beta.reshape(())  # 0-dim: α keeps fp32 promotion
        return _st_clamp_min0(a0) / (1.0 + _st_clamp_min0(b) * ratio_s)

    def _forward_eval(
        self, x: Tensor, y: Tensor, return_stats: bool
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        ratio_s = self.ratio_ema.clone()
        alpha = self._alpha(ratio_s)
        out = torch.addcmul(x, alpha.to(y.dtype), y)
        if not return_stats:
            return out
        stats = {"alpha": alpha.detach(), "ratio": ratio_s, "ratio_ema": ratio_s}
        return out, stats

    def _local_parts(self, d: Tensor, y: Tensor, mask: Tensor | None) -> tuple[Tensor, ...]:
        """Reducible statistics of one batch, as 0-dim fp32 tensors.

        ``"mean"``: ``(Σ r_i, n)`` over valid tokens; ``"ratio_of_means"``:
        ``(Σ E[y²]_i, Σ E[d²]_i, n)``. A non-finite energy of a valid token makes the first entry
        NaN, so the whole batch is skipped by the EMA.
        """
        ex = mean_square(d)
        ey = mean_square(y)
        if self.reduction == "ratio_of_means":
            sy, n = masked_sum_count(ey, mask)
            sx, _ = masked_sum_count(ex, mask)
            return sy, sx, n
        r = (ey / (ex + self.epsilon)).clamp_(0.0, self.max_ratio)
        r = torch.where(torch.isfinite(ex + ey), r, math.nan)
        return masked_sum_count(r, mask)

    def _local_stats(self, d: Tensor, y: Tensor, mask: Tensor | None) -> Tensor:
        """:meth:`_local_parts` as one fp32 vector, ready for a single all-reduce."""
        return torch.stack(self._local_parts(d, y, mask))

    def _stat(self, parts: Sequence[Tensor]) -> Tensor:
        """Batch statistic from :meth:`_local_parts` (or their reduced sums); NaN when no valid
        token."""
        if self.reduction == "ratio_of_means":
            sy, sx, n = parts
            stat = (sy / n) / (sx / n + self.epsilon)
            return torch.where(torch.isfinite(stat), stat.clamp(0.0, self.max_ratio), math.nan)
        return parts[0] / parts[1]

    def _forward_train(
        self,
        x: Tensor,
        y: Tensor,
        x_norm: Tensor | None,
        return_stats: bool,
        mask: Tensor | None,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        d = x if x_norm is None else x_norm
        if self.sync_stats == "deferred":
            with torch.no_grad():
                v = self._local_stats(d, y, mask)
                ok = torch.isfinite(v[0])
                self.pending.add_(torch.where(ok, v, torch.zeros_like(v)))
                self.num_skipped.add_(~ok)
                stat = v[0] / v[1]
            ratio_s = self.ratio_ema.clone()
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_stats):
                parts: Sequence[Tensor] = self._local_parts(d, y, mask)
            if self.sync_stats == "allreduce":
                v = torch.stack(tuple(parts))
                reduced = v.detach().clone()
                all_reduce_(reduced, "sum", self.process_group)
                # value = the global sums exactly; gradient = identity to the local sums
                v = reduced + (v - v.detach()) if v.requires_grad else reduced
                parts = v.unbind()
            stat = self._stat(parts)
            # γ = 1 means "no smoothing" (aion-torch): use the statistic, and store it for eval.
            g = 0.0 if self.ema_gamma == 1.0 else self.ema_gamma
            finite = torch.isfinite(stat)
            if stat.requires_grad:
                ema_old = self.ratio_ema.clone()
                ratio_s = torch.where(finite, g * ema_old + (1.0 - g) * stat, ema_old)
                with torch.no_grad():
                    ema_update_(self.ratio_ema, stat, g)
                    self.num_skipped.add_(~finite)
            else:
                with torch.no_grad():
                    ema_update_(self.ratio_ema, stat, g)
                    self.num_skipped.add_(~finite)
                ratio_s = self.ratio_ema.clone()
        alpha = self._alpha(ratio_s)
        with torch.no_grad():
            self.alpha_cached.copy_(alpha)
            self.step_count.add_(1)
        out = torch.addcmul(x, alpha.to(y.dtype), y)
        if not return_stats:
            return out
        stats = {
            "alpha": alpha.detach(),
            "ratio": stat.detach(),
            "ratio_ema": self.ratio_ema.detach().clone(),
        }
        return out, stats
