"""``HybridAuON``: Newton–Schulz orthogonalisation followed by the AuON cosh step.

Paper variant (default): ``ns_steps = 1`` as the paper states; ``O = orthogonalize(G)`` in bf16;
``U = O/(r + eps_rms)`` with ``r = sqrt(mean cosh²(γ·O/‖O‖_F))``; decoupled decay and a Muon-style
shape factor. Repo variant: the refactored repository's class (5 fp32 NS steps per slice of the
leading dims, γ = 1.5, decay first with ``wd_mul``, no shape factor). It costs as much as Muon per
NS step: it is not linear time.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from auon._base import ParamsT, _hyperparameters, _ValidatedOptimizer
from auon._orth_step import _orth_group_step
from auon._validation import (
    _MUON_ADJUST_LR_FNS,
    _check_momentum_group,
    _check_ns,
    _check_variant,
)

__all__ = ["HybridAuON"]


def _validate_hybrid_group(group: dict[str, Any]) -> None:
    paper = _check_variant(group, {"gamma": (1.0, 1.5), "ns_steps": (1, 5)})
    _check_ns(group["ns_steps"])
    _check_momentum_group(
        group,
        f"HybridAuON(variant={group['variant']!r})",
        adjust_lr_fns=_MUON_ADJUST_LR_FNS,
        flags=("flatten",),
        eps_open=True,
        min_ndim=2 if paper else 0,
    )


class HybridAuON(_ValidatedOptimizer):
    """Newton–Schulz-orthogonalised Nesterov momentum, then the AuON cosh normalisation.

    Paper variant, per parameter: ``m ← lerp(m, g, 1−β)``; ``G = lerp(g, m, β)`` (or ``m``);
    ``O = adaptnn_core.orthogonalize(G, steps=ns_steps, coefficients=ns_coefficients,
    compute_dtype=bf16, flatten=flatten)``; ``r = sqrt(mean cosh²(γ·O/‖O‖_F))``;
    ``p ← p·(1 − lr·wd) − lr·s·O/(r + eps_rms)`` with the Muon shape factor ``s``
    (None/"original" ``sqrt(max(1, rows/cols))``, "unit" 1, "match_rms_adamw"
    ``0.2·sqrt(max(rows, cols))``; ``(rows, cols) = matrix_shape(p)``). ``flatten=False`` treats the
    leading dims of an ``ndim > 2`` tensor as a batch of matrices (e.g. a stacked ``(3, h, d)`` QKV).

    Repo variant: decay ``p·(1 − lr·wd·wd_mul)`` first; ``m ← β·m + (1−β)·g``;
    ``G = (1−β)·g + β·m``; ``O`` = 5 fp32 NS steps per slice (``O = G`` for ndim < 2); γ = 1.5;
    ``p ← p − lr·O/(r + eps_rms)``; no shape factor.

    Under FSDP2 (DTensor parameters) the full matrix is gathered, orthogonalised and re-sharded.

    Args:
        params: Parameters or param groups (paper variant: ``ndim ≥ 2`` only).
        lr: Learning rate (float ≥ 0 or 1-element tensor).
        momentum: ``β ∈ [0, 1]``.
        weight_decay: Decoupled decay ``≥ 0``.
        gamma: cosh temperature; ``None`` → 1.0 (paper) or 1.5 (repo).
        ns_steps: Newton–Schulz steps in ``[1, 99]``; ``None`` → 1 (paper) or 5 (repo).
        variant: ``"paper"`` or ``"repo"``.
        nesterov: Nesterov look-ahead (paper variant).
        ns_coefficients: ``"keller"``, ``"polar_express"`` or ``(a, b, c)`` (paper variant).
        flatten: ``(shape[0], -1)`` view for ``ndim > 2`` (paper variant).
        adjust_lr_fn: Shape factor rule (paper variant).
        eps: Added to norms.
        eps_rms: Added to ``r``.
        nonfinite: ``"skip"`` or ``"propagate"``.
        maximize: Maximise the objective.
        foreach: Multi-tensor momentum; ``None`` → on for CUDA parameters.

    Raises:
        ValueError: A bad hyperparameter (naming it) or a parameter the variant does not accept.
    """

    def _validate_group(self, group: dict[str, Any]) -> None:
        _validate_hybrid_group(group)

    def _group_step(self, group: dict[str, Any]) -> None:
        _orth_group_step(self, group, "HybridAuON")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.24,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        gamma: float | None = None,
        ns_steps: int | None = None,
        *,
        variant: Literal["paper", "repo"] = "paper",
        nesterov: bool = True,
        ns_coefficients: Any = "keller",
        flatten: bool = True,
        adjust_lr_fn: Literal["original", "unit", "match_rms_adamw"] | None = None,
        eps: float = 1e-7,
        eps_rms: float = 1e-8,
        nonfinite: Literal["skip", "propagate"] = "skip",
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, _hyperparameters(locals()))
