"""The ``AuON`` optimiser: ``torch.optim`` front end of :func:`auon.functional.auon_step`.

AuON (paper "AuON: A Linear-time Alternative to Orthogonal Momentum Updates") replaces Muon's
Newton–Schulz orthogonalisation by Frobenius normalisation of the Nesterov momentum and a cosh-based
factor. Two definitions are provided:

* ``variant="paper"`` (default): the paper and the original single-file trainer; the update has unit
  Frobenius norm up to the cosh factor ``r = 1 + O(1/N)``, times a shape factor.
* ``variant="repo"``: the refactored repository's class, reproduced bit for bit in float32. It
  applies the *un-normalised* momentum divided by ``r``, i.e. it is SGD-Nesterov with decoupled
  weight decay; kept for compatibility and equivalence tests.

``brake="rms"`` is an opt-in extension (not in the paper) whose factor does act on spiky updates.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from auon._auon_group import _auon_group_step, _validate_auon_group
from auon._base import ParamsT, _hyperparameters, _ValidatedOptimizer

__all__ = ["AuON"]


class AuON(_ValidatedOptimizer):
    """AuON: normalised Nesterov momentum with a cosh factor, in linear time.

    Per parameter ``p`` (viewed as a ``(shape[0], -1)`` matrix for the shape factor) with gradient
    ``g``, paper variant::

        m ← lerp(m, g, 1−β)                       (state "momentum_buffer", p.dtype)
        G = lerp(g, m, β)  (nesterov)  or  m
        X = G / (‖G‖_F + eps);  r = sqrt(mean cosh²(γX));  U = X / (r + eps_rms)
        p ← p·(1 − lr·wd) − lr·s·U

    with ``s`` from ``adjust_lr_fn`` on ``adaptnn_core.matrix_shape(p)``: ``None``/``"original"``
    ``sqrt(max(1, rows/cols))`` (the original code), ``"unit"`` 1 (the paper's equations),
    ``"match_muon"`` ``sqrt(min(rows, cols))·sqrt(max(1, rows/cols))`` (same Frobenius norm as a
    ``torch.optim.Muon`` update at the same lr), ``"match_rms_adamw"`` ``0.2·sqrt(rows·cols)``
    (update RMS 0.2). Note ``r − 1 ≤ sinh²(γ)/(2N)``: for realistic sizes AuON is Frobenius-normalised
    SGD-Nesterov to ~1e-5.

    ``variant="repo"`` reproduces the refactored repository bit for bit in float32: decay
    ``p·(1 − lr·wd·wd_mul)`` first, ``m ← β·m + (1−β)·g``, ``G = (1−β)·g + β·m``,
    ``p ← p − lr·G/(r + eps_rms)`` with ``r`` from ``γ·G/(‖G‖_F + eps)`` and γ = 1.5: the
    un-normalised momentum, any tensor shape, no shape factor.

    ``brake="rms"`` (experimental, not in the paper) multiplies ``U`` by
    :func:`auon.functional.rms_brake_factor` (temperature ``brake_temperature``): ≈1 for Gaussian-like
    updates, ≪1 for updates concentrated on a few entries.

    ``step`` never writes ``p.grad`` and never synchronises with the host: a zero gradient gives a
    zero update through ``eps``; with ``nonfinite="skip"`` a parameter whose update norm is not
    finite keeps its weights and momentum and its state counter ``"nonfinite_steps"`` grows. DTensor
    (FSDP2) parameters are updated on their local shards with one coalesced all-reduce per phase.

    Args:
        params: Parameters or param groups (any hyperparameter below may be overridden per group).
            Paper variant: every parameter must have ``ndim ≥ 2`` (use :func:`auon.matrix_param_groups`).
        lr: Learning rate (float ≥ 0 or 1-element tensor).
        momentum: ``β ∈ [0, 1]``.
        weight_decay: Decoupled weight decay ``≥ 0`` (multiplied by the unadjusted lr).
        gamma: cosh temperature ``> 0``; ``None`` → 1.0 (paper) or 1.5 (repo).
        variant: ``"paper"`` or ``"repo"``.
        nesterov: Nesterov look-ahead (paper variant; the repo variant always uses it).
        eps: Added to ``‖G‖_F`` (``> 0``).
        eps_rms: Added to ``r``.
        adjust_lr_fn: Shape factor rule, see above (paper variant only).
        compute_dtype: Dtype of ``X`` and the cosh; ``torch.bfloat16`` reproduces the original
            script's rounding.
        brake: ``"none"`` or ``"rms"``.
        brake_temperature: ``τ > 0`` of the brake.
        nonfinite: ``"skip"`` or ``"propagate"``.
        maximize: Maximise the objective.
        foreach: Multi-tensor ``torch._foreach_*`` path; ``None`` → on for CUDA parameters.

    Raises:
        ValueError: A bad hyperparameter (naming it), a complex parameter, a paper-variant
            parameter with ``ndim < 2``, or an option that the repo variant does not have.
        RuntimeError: At ``step``, a sparse gradient.

    Example:
        >>> import torch
        >>> from auon import AuON
        >>> w = torch.nn.Parameter(torch.randn(8, 4))
        >>> opt = AuON([w], lr=0.02)
        >>> w.sum().backward()
        >>> _ = opt.step()
    """

    def _validate_group(self, group: dict[str, Any]) -> None:
        _validate_auon_group(group)

    def _group_step(self, group: dict[str, Any]) -> None:
        _auon_group_step(self, group)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.24,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        gamma: float | None = None,
        *,
        variant: Literal["paper", "repo"] = "paper",
        nesterov: bool = True,
        eps: float = 1e-7,
        eps_rms: float = 1e-8,
        adjust_lr_fn: Literal["original", "unit", "match_muon", "match_rms_adamw"] | None = None,
        compute_dtype: torch.dtype = torch.float32,
        brake: Literal["none", "rms"] = "none",
        brake_temperature: float = 3.0,
        nonfinite: Literal["skip", "propagate"] = "skip",
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, _hyperparameters(locals()))
