"""``Muon`` baseline on ``adaptnn_core``'s Newton–Schulz, with ``torch.optim.Muon`` semantics.

``m ← lerp(m, g, 1−μ)``; update ``lerp(g, m, μ)`` (or ``m``); ``O = orthogonalize(update)`` (bf16
quintic Newton–Schulz, Keller coefficients by default); ``p ← p·(1 − lr·wd) − lr·s·O``. Generalised
to ``ndim > 2`` parameters through their ``(shape[0], -1)`` view. Defaults follow the original auon
package's ``Muon`` (lr 0.02, weight decay 0.01), not torch's (1e-3, 0.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch.distributed as dist
from torch import Tensor

from auon._base import ParamsT, _hyperparameters, _ValidatedOptimizer
from auon._dtensor import _is_dtensor
from auon._orth_step import _orth_group_step
from auon._validation import _MUON_ADJUST_LR_FNS, _check_bool, _check_momentum_group, _check_ns

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["Muon"]


def _validate_muon_group(group: dict[str, Any]) -> None:
    _check_ns(group["ns_steps"])
    _check_momentum_group(
        group,
        "Muon",
        adjust_lr_fns=_MUON_ADJUST_LR_FNS,
        flags=("flatten",),
        eps_open=False,
        min_ndim=2,
    )


class Muon(_ValidatedOptimizer):
    """Muon: orthogonalised Nesterov momentum (KellerJordan/Muon, ``torch.optim.Muon`` semantics).

    Per parameter (``ndim ≥ 2``, viewed as ``(shape[0], -1)`` unless ``flatten=False``):
    ``m.lerp_(g, 1−μ)``; ``G = lerp(g, m, μ)`` (or ``m``); ``O = adaptnn_core.orthogonalize(G,
    steps=ns_steps, coefficients=ns_coefficients, compute_dtype=bf16, eps=eps)``;
    ``p ← p·(1 − lr·wd)``; ``p ← p − lr·s·O`` with ``s = sqrt(max(1, rows/cols))`` (None/"original"),
    1 ("unit") or ``0.2·sqrt(max(rows, cols))`` ("match_rms_adamw"). Bit-identical to
    ``torch.optim.Muon`` on 2-D parameters whenever ``‖G‖ ≫ eps`` (torch divides by
    ``max(‖G‖, eps)``, we by ``‖G‖ + eps``, both rounded to bf16).
    ``lr_mul`` attributes of the original are not honoured: use param groups.

    Args:
        params: Parameters (``ndim ≥ 2``) or param groups.
        lr: Learning rate (float ≥ 0 or 1-element tensor).
        weight_decay: Decoupled decay ``≥ 0`` (unadjusted lr, as torch).
        momentum: ``μ ∈ [0, 1]``.
        ns_steps: Newton–Schulz steps in ``[1, 99]``.
        nesterov: Nesterov look-ahead.
        ns_coefficients: ``"keller"``, ``"polar_express"`` or an ``(a, b, c)`` triple.
        eps: Added to the Frobenius norm before NS.
        adjust_lr_fn: Shape factor rule.
        flatten: ``(shape[0], -1)`` view for ``ndim > 2``; ``False`` batches the leading dims.
        nonfinite: ``"skip"`` or ``"propagate"``.
        maximize: Maximise the objective.
        foreach: Multi-tensor momentum; ``None`` → on for CUDA parameters.
        split_across_ranks: With replicated parameters (DDP) and an initialised process group of
            more than one rank: each rank orthogonalises every ``world_size``-th parameter and
            the results are broadcast (one flat broadcast per rank and dtype), so the
            Newton–Schulz work is shared instead of repeated. The update is bit for bit the
            unsplit one. A no-op without ``torch.distributed``; not for DTensor (FSDP2)
            parameters, which are gathered per parameter instead.
        process_group: Group for ``split_across_ranks``; ``None`` = the default group. Not a
            param-group option, so it is not part of ``state_dict``.

    Raises:
        ValueError: A bad hyperparameter (naming it) or a parameter with ``ndim < 2``;
            ``split_across_ranks`` with DTensor parameters (at the first step).
    """

    def _validate_group(self, group: dict[str, Any]) -> None:
        _validate_muon_group(group)

    def _group_step(self, group: dict[str, Any]) -> None:
        _orth_group_step(self, group, "Muon", split_group=self._split_group)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.02,
        weight_decay: float = 0.01,
        momentum: float = 0.95,
        ns_steps: int = 5,
        *,
        nesterov: bool = True,
        ns_coefficients: Any = "keller",
        eps: float = 1e-7,
        adjust_lr_fn: Literal["original", "unit", "match_rms_adamw"] | None = None,
        flatten: bool = True,
        nonfinite: Literal["skip", "propagate"] = "skip",
        maximize: bool = False,
        foreach: bool | None = None,
        split_across_ranks: bool = False,
        process_group: ProcessGroup | None = None,
    ) -> None:
        defaults = _hyperparameters(locals())
        del defaults["split_across_ranks"], defaults["process_group"]  # not param-group options
        _check_bool(split_across_ranks, "split_across_ranks")
        self.split_across_ranks = split_across_ranks
        self.process_group = process_group
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        # Keep the split flag through pickling and deepcopy; a process group cannot travel, so a
        # copy uses the default group.
        state: dict[str, Any] = super().__getstate__()
        state["split_across_ranks"] = getattr(self, "split_across_ranks", False)
        return state

    def _split_group(self, params: list[Tensor]) -> ProcessGroup | None:
        """The group to share the orthogonalisation over, or ``None`` to do it all here."""
        if not getattr(self, "split_across_ranks", False):
            return None
        if any(_is_dtensor(p) for p in params):
            raise ValueError(
                "split_across_ranks is for replicated parameters (DDP); DTensor (FSDP2) "
                "parameters are gathered per parameter instead: pass split_across_ranks=False"
            )
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = getattr(self, "process_group", None) or dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None
