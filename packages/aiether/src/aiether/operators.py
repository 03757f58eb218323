"""Growth operators: how a new block's weights are initialised from the source (frontier) block.

- ``"copy"``: the source's weights (G_stack-like duplication);
- ``"random"``: the block keeps the model's initialisation (an inactive slot is never touched by
  the optimiser, so its weights are still the init); with ``preserve="zero_out"`` this is the
  zero-init growth baseline;
- ``"geometric"``: per ≥2-D tensor, the source's trajectory extrapolated one step ahead by the
  fixed rule of :func:`aiether._extrapolation.fixed_extrapolate` (quadratic fit, normalised
  directions, gated escape); vectors are copied;
- ``"reference"``: the original project's coded rule, float64 numpy, README defaults.

The trajectory operators need a :class:`~aiether.trajectory.TrajectoryTracker` with
``storage="full"`` tracking the source block's parameters under their block-relative names. The
extrapolation step ``W_new − W_last`` is computed from the stored snapshots and added to the
source's current (full-precision) weights, so bfloat16 storage does not round the new block.
The preservation rule of the stack is applied after the operator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from aiether._extrapolation import fixed_extrapolate, reference_extrapolate
from aiether.trajectory import TrajectoryTracker

OperatorName = Literal["copy", "random", "geometric", "reference"]
OPERATORS: tuple[str, ...] = ("copy", "random", "geometric", "reference")


@dataclass(frozen=True, kw_only=True)
class GeometricParams:
    """Gains and subspace sizes of the trajectory operators (defaults: the ``geometric`` ones;
    :meth:`reference_defaults` gives the original README's)."""

    beta0: float = 0.02
    gamma0: float = 0.01
    eta0: float = 0.01
    k_subspace: int = 10
    ell_orth: int = 5
    tau_crit: float = 0.8
    kappa_crit: float = 0.8

    def __post_init__(self) -> None:
        for name in ("beta0", "gamma0", "eta0", "tau_crit", "kappa_crit"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if self.k_subspace < 1:
            raise ValueError(f"k_subspace must be >= 1, got {self.k_subspace!r}")
        if self.ell_orth < 0:
            raise ValueError(f"ell_orth must be >= 0, got {self.ell_orth!r}")

    @classmethod
    def reference_defaults(cls) -> GeometricParams:
        """β₀ 0.1, γ₀ 0.15, η₀ 0.03, k 10, ℓ 5 (the original README)."""
        return cls(beta0=0.1, gamma0=0.15, eta0=0.03, k_subspace=10, ell_orth=5)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_pair(new: nn.Module, source: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    src = dict(source.named_parameters())
    dst = dict(new.named_parameters())
    if src.keys() != dst.keys():
        raise ValueError("new and source blocks have different parameter names")
    for name, p in dst.items():
        if p.shape != src[name].shape:
            raise ValueError(
                f"{name}: shapes differ ({tuple(p.shape)} vs {tuple(src[name].shape)})"
            )
    return {name: (dst[name], src[name]) for name in dst}


@torch.no_grad()
def initialise_block(
    operator: OperatorName,
    new: nn.Module,
    source: nn.Module,
    *,
    tracker: TrajectoryTracker | None = None,
    params: GeometricParams | None = None,
) -> dict[str, Any]:
    """Initialise ``new`` in place from ``source`` with ``operator``.

    Returns:
        ``{"parameters": …, "metrics": {tensor name: {"tau", "kappa_eff", "delta_norm", …}}}``
        (metrics only for the trajectory operators, as floats).

    Raises:
        ValueError: an unknown operator, mismatched blocks, or a trajectory operator without a
            full-storage tracker over the source's parameters.
    """
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
    pairs = _check_pair(new, source)
    if operator == "random":
        return {"parameters": {}, "metrics": {}}
    if operator == "copy":
        for p_new, p_src in pairs.values():
            p_new.copy_(p_src)
        for (_, b_new), (_, b_src) in zip(new.named_buffers(), source.named_buffers(), strict=True):
            b_new.copy_(b_src)
        return {"parameters": {}, "metrics": {}}
    if params is None:
        params = (
            GeometricParams.reference_defaults() if operator == "reference" else GeometricParams()
        )
    if tracker is None or tracker.storage != "full":
        raise ValueError(f"operator {operator!r} needs a TrajectoryTracker with storage='full'")
    missing = set(pairs) - set(tracker.names)
    if missing:
        raise ValueError(f"the tracker does not follow the source tensors {sorted(missing)}")
    metrics: dict[str, dict[str, float]] = {}
    for name, (p_new, p_src) in pairs.items():
        history = tracker.history(name)
        if history.shape[0] < 2:
            p_new.copy_(p_src)
            continue
        last = history[-1].float()
        if operator == "geometric":
            w_new, m = fixed_extrapolate(
                history.float(),
                beta0=params.beta0,
                gamma0=params.gamma0,
                eta0=params.eta0,
                k_subspace=params.k_subspace,
                ell_orth=params.ell_orth,
                tau_crit=params.tau_crit,
                kappa_crit=params.kappa_crit,
            )
            step = w_new.float() - last
            metrics[name] = {k: float(v) for k, v in m.items()}
        else:
            w_ref, m_ref = reference_extrapolate(
                history.double().cpu().numpy(),
                beta0=params.beta0,
                gamma0=params.gamma0,
                eta0=params.eta0,
                k_subspace=params.k_subspace,
                ell_orth=params.ell_orth,
            )
            step = torch.from_numpy(w_ref).to(last.device, torch.float32) - last
            metrics[name] = {k: float(v) for k, v in m_ref.items()}
        p_new.copy_((p_src.float() + step.reshape(p_src.shape)).to(p_new.dtype))
    return {"parameters": params.as_dict(), "metrics": metrics}
