"""``GeometricExtrapolator``: the original project's per-tensor extrapolation API, two numerics.

Users of RochaFurada/AIether call ``GeometricExtrapolator(...).extrapolate(W_history)`` on the
snapshot history of one tensor. This class keeps that constructor and those methods and offers
two modes (aiether spec §3.3):

- ``mode="fixed"`` (default): the geometric operator of :func:`aiether._extrapolation.fixed_extrapolate`
  (quadratic least-squares end velocity and acceleration, normalised and scaled by ``‖W_last‖``,
  sign-fixed uncentred escape gated by the window-normalised τ̃, κ̃), computed with torch.
- ``mode="reference"``: the original's coded rule, :func:`aiether._extrapolation.reference_extrapolate`,
  in float64 numpy, for equivalence tests and ablations.

Input and output keep their type: a numpy array gives a numpy array of the same dtype, a torch
tensor gives a tensor of the same dtype on the same device.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from aiether._extrapolation import _reference_tau_kappa, fixed_extrapolate, reference_extrapolate
from aiether._metrics import EPS, gram_tau_kappa, normalise_tau_kappa, velocity_gram

__all__ = [
    "FIXED_BETA0",
    "FIXED_ETA0",
    "FIXED_GAMMA0",
    "REFERENCE_BETA0",
    "REFERENCE_ETA0",
    "REFERENCE_GAMMA0",
    "ExtrapolationMode",
    "GeometricExtrapolator",
]

ExtrapolationMode = Literal["fixed", "reference"]
_MODES: tuple[str, ...] = ("fixed", "reference")

# Provisional defaults of the fixed geometric operator (spec §3.3, to be set by the §5 ablation).
FIXED_BETA0 = 0.02
FIXED_GAMMA0 = 0.01
FIXED_ETA0 = 0.01
# The original README's defaults, used by the reference rule.
REFERENCE_BETA0 = 0.1
REFERENCE_GAMMA0 = 0.15
REFERENCE_ETA0 = 0.03

History = npt.NDArray[Any] | Tensor


def _is_real_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _gain(name: str, value: float | None, default: float) -> float:
    if value is None:
        return default
    if not _is_real_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0 (or None), got {value!r}")
    return float(value)


class GeometricExtrapolator:
    """Extrapolates one tensor's weight trajectory to initialise a new block's tensor.

    Args:
        beta0: velocity gain β₀; ``None`` takes the mode's default (fixed 0.02, reference 0.1).
        gamma0: acceleration gain γ₀; ``None``: fixed 0.01, reference 0.15.
        eta0: escape gain η₀; ``None``: fixed 0.01, reference 0.03.
        k_subspace: subspace dimension ``k`` (the escape starts at mode ``k``), ``≥ 1``.
        ell_orth: number of escape modes ``ℓ``, ``≥ 0``.
        eps: the ε of τ, κ, β and of the zero-norm tests, ``> 0``.
        mode: ``"fixed"`` (geometric operator) or ``"reference"`` (the original's coded rule).
        tau_crit: threshold τ_c on τ̃ = τ/√T for the fixed mode's escape gate.
        kappa_crit: threshold κ_c on κ̃ = κ/√(T−1) for the fixed mode's escape gate.

    Raises:
        ValueError: a gain is negative or not finite, ``k_subspace < 1``, ``ell_orth < 0``,
            ``eps <= 0``, a threshold is not finite, or ``mode`` is unknown.

    ``W_hist`` arguments are ``(S, m, n)`` (matrices) or ``(S, d)`` (vectors) snapshot histories
    with ``S ≥ 2``, as a floating-point numpy array or torch tensor.
    """

    def __init__(
        self,
        beta0: float | None = None,
        gamma0: float | None = None,
        eta0: float | None = None,
        k_subspace: int = 5,
        ell_orth: int = 3,
        eps: float = EPS,
        *,
        mode: ExtrapolationMode = "fixed",
        tau_crit: float = 0.8,
        kappa_crit: float = 0.8,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        fixed = mode == "fixed"
        self.mode: ExtrapolationMode = mode
        self.beta0 = _gain("beta0", beta0, FIXED_BETA0 if fixed else REFERENCE_BETA0)
        self.gamma0 = _gain("gamma0", gamma0, FIXED_GAMMA0 if fixed else REFERENCE_GAMMA0)
        self.eta0 = _gain("eta0", eta0, FIXED_ETA0 if fixed else REFERENCE_ETA0)
        if not isinstance(k_subspace, int) or isinstance(k_subspace, bool) or k_subspace < 1:
            raise ValueError(f"k_subspace: expected an int >= 1, got {k_subspace!r}")
        if not isinstance(ell_orth, int) or isinstance(ell_orth, bool) or ell_orth < 0:
            raise ValueError(f"ell_orth: expected an int >= 0, got {ell_orth!r}")
        if not _is_real_number(eps) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
        for name, value in (("tau_crit", tau_crit), ("kappa_crit", kappa_crit)):
            if not _is_real_number(value) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        self.k_subspace = k_subspace
        self.ell_orth = ell_orth
        self.eps = float(eps)
        self.tau_crit = float(tau_crit)
        self.kappa_crit = float(kappa_crit)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(beta0={self.beta0}, gamma0={self.gamma0}, eta0={self.eta0}, "
            f"k_subspace={self.k_subspace}, ell_orth={self.ell_orth}, eps={self.eps}, "
            f"mode={self.mode!r}, tau_crit={self.tau_crit}, kappa_crit={self.kappa_crit})"
        )

    # ---------------------------------------------------------------------------------- inputs

    @staticmethod
    def _check(W_hist: object) -> None:
        if isinstance(W_hist, Tensor):
            floating = W_hist.is_floating_point()
            dtype: object = W_hist.dtype
        elif isinstance(W_hist, np.ndarray):
            floating = bool(np.issubdtype(W_hist.dtype, np.floating))
            dtype = W_hist.dtype
        else:
            raise TypeError(
                f"W_hist: expected a numpy.ndarray or torch.Tensor, got {type(W_hist).__name__}"
            )
        if not floating:
            raise TypeError(f"W_hist: expected a floating-point dtype, got {dtype}")
        shape = tuple(W_hist.shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"W_hist: expected shape (S, m, n) or (S, d), got {shape}")
        if shape[0] < 2:
            raise ValueError(f"W_hist: expected S >= 2 snapshots, got shape {shape}")

    @staticmethod
    def _as_tensor(W_hist: History) -> Tensor:
        if isinstance(W_hist, Tensor):
            return W_hist.detach()
        return torch.from_numpy(np.ascontiguousarray(W_hist))

    @staticmethod
    def _as_float64_numpy(W_hist: History) -> npt.NDArray[np.float64]:
        if isinstance(W_hist, Tensor):
            array: npt.NDArray[np.float64] = (
                W_hist.detach().to(device="cpu", dtype=torch.float64).numpy()
            )
            return array
        return np.asarray(W_hist, dtype=np.float64)

    def _tau_kappa(self, W_hist: History) -> tuple[float, float]:
        self._check(W_hist)
        if self.mode == "reference":
            flat = self._as_float64_numpy(W_hist).reshape(W_hist.shape[0], -1)
            return _reference_tau_kappa(flat, self.eps)
        hist = self._as_tensor(W_hist)
        dtype = torch.promote_types(hist.dtype, torch.float32)
        gram = velocity_gram(hist.reshape(hist.shape[0], -1).to(dtype))
        tau, kappa = gram_tau_kappa(gram, self.eps)
        return float(tau), float(kappa)

    # --------------------------------------------------------------------------------- metrics

    def compute_tau(self, W_hist: History) -> float:
        """Tortuosity τ = ``Σ_t‖V_t‖/(‖Δ‖+ε)`` of ``W_hist`` ``(S, m, n)`` or ``(S, d)``.

        1 on a straight line, ≈ √T for a random walk. The reference mode evaluates the original's
        vector formula in float64, the fixed mode the velocity Gram (:mod:`aiether._metrics`).
        """
        return self._tau_kappa(W_hist)[0]

    def compute_kappa_eff(self, W_hist: History) -> float:
        """Effective curvature κ = ``Σ_t‖V_t^⊥‖/(Σ_t|⟨V_t,Δ̂⟩| + ε)`` (0 when S < 3 or ‖Δ‖ < ε).

        0 on a straight line, ≈ √(T−1) for a random walk; ``W_hist`` is ``(S, m, n)`` or ``(S, d)``.
        """
        return self._tau_kappa(W_hist)[1]

    def compute_metrics(self, W_hist: History) -> dict[str, float]:
        """``{"tau": τ, "kappa_eff": κ}`` of ``W_hist`` ``(S, m, n)`` or ``(S, d)``."""
        tau, kappa = self._tau_kappa(W_hist)
        return {"tau": tau, "kappa_eff": kappa}

    # ------------------------------------------------------------------------------------ gains

    def beta(self, tau: float) -> float:
        """Velocity coefficient ``β₀/(τ+ε)`` (the original's)."""
        return float(self.beta0 / (tau + self.eps))

    def gamma(self, kappa: float) -> float:
        """Acceleration coefficient ``γ₀/(1+κ)``."""
        return float(self.gamma0 / (1.0 + kappa))

    def eta(self, tau: float, kappa: float, *, num_velocities: int | None = None) -> float:
        """Escape coefficient.

        Reference mode: ``η₀·τ·κ`` (always on; ``num_velocities`` is ignored). Fixed mode:
        ``η₀·(τ̃−τ_c)₊·(κ̃−κ_c)₊`` with τ̃ = τ/√T, κ̃ = κ/√(T−1), which needs the window's
        number of velocities ``T = S − 1``.

        Raises:
            ValueError: fixed mode without ``num_velocities``, or ``num_velocities < 1``.
        """
        if self.mode == "reference":
            return float(self.eta0 * tau * kappa)
        if num_velocities is None:
            raise ValueError("num_velocities: required in mode='fixed' (T = S - 1), got None")
        if (
            not isinstance(num_velocities, int)
            or isinstance(num_velocities, bool)
            or num_velocities < 1
        ):
            raise ValueError(f"num_velocities: expected an int >= 1, got {num_velocities!r}")
        tau_norm, kappa_norm = normalise_tau_kappa(
            torch.tensor(tau, dtype=torch.float64),
            torch.tensor(kappa, dtype=torch.float64),
            num_velocities,
        )
        gate = max(float(tau_norm) - self.tau_crit, 0.0) * max(
            float(kappa_norm) - self.kappa_crit, 0.0
        )
        return float(self.eta0 * gate)

    # ------------------------------------------------------------------------------ extrapolate

    @overload
    def extrapolate(self, W_hist: Tensor) -> tuple[Tensor, dict[str, float]]: ...

    @overload
    def extrapolate(
        self, W_hist: npt.NDArray[Any]
    ) -> tuple[npt.NDArray[Any], dict[str, float]]: ...

    def extrapolate(self, W_hist: History) -> tuple[History, dict[str, float]]:
        """The extrapolated next tensor of a snapshot history.

        Args:
            W_hist: ``(S, m, n)`` or ``(S, d)`` snapshots in time order, ``S ≥ 2``; a numpy array
                or a torch tensor of a floating dtype.

        Returns:
            ``(W_new, metrics)``: ``W_new`` of shape ``(m, n)`` or ``(d,)``, of the input's type
            and dtype (and device, for tensors); ``metrics`` with float ``tau``, ``kappa_eff`` and
            ``delta_norm`` (``‖W_last − W_0‖_F``), plus ``tau_norm`` and ``kappa_norm`` in fixed
            mode.

        Raises:
            TypeError: ``W_hist`` is neither a numpy array nor a tensor, or not floating point.
            ValueError: ``W_hist`` has ``S < 2`` or ``ndim`` not in {2, 3}.
        """
        self._check(W_hist)
        if self.mode == "fixed":
            w_new, tensor_metrics = fixed_extrapolate(
                self._as_tensor(W_hist),
                beta0=self.beta0,
                gamma0=self.gamma0,
                eta0=self.eta0,
                k_subspace=self.k_subspace,
                ell_orth=self.ell_orth,
                tau_crit=self.tau_crit,
                kappa_crit=self.kappa_crit,
                eps=self.eps,
            )
            metrics = {name: float(value) for name, value in tensor_metrics.items()}
            if isinstance(W_hist, Tensor):
                return w_new, metrics
            return w_new.numpy(), metrics

        w_ref, metrics = reference_extrapolate(
            self._as_float64_numpy(W_hist),
            beta0=self.beta0,
            gamma0=self.gamma0,
            eta0=self.eta0,
            k_subspace=self.k_subspace,
            ell_orth=self.ell_orth,
            eps=self.eps,
        )
        if isinstance(W_hist, Tensor):
            return torch.from_numpy(w_ref).to(dtype=W_hist.dtype, device=W_hist.device), metrics
        return w_ref.astype(W_hist.dtype, copy=False), metrics
