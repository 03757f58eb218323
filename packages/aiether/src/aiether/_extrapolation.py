"""Per-tensor extrapolation of a weight trajectory: the fixed geometric rule and the original's rule.

Both functions take the snapshot history of **one** tensor, ``(S, *shape)`` in time order, and
return the extrapolated tensor ``W_new`` of shape ``shape`` plus its trajectory metrics.

- :func:`fixed_extrapolate` is the ``"geometric"`` operator of the specification (§3.3): a
  least-squares quadratic fit over the window gives the end velocity ``v_end`` and the acceleration
  ``a`` as fixed, data-independent combinations of the snapshots; the escape direction comes from
  the *uncentred* velocities with a data-determined sign; every term is normalised and scaled by
  ``‖W_last‖_F``; the escape is gated by the window-normalised statistics τ̃, κ̃. Torch, device-side.
- :func:`reference_extrapolate` is the rule the original project (RochaFurada/AIether 2.0.0) codes
  (§2 "Coded extrapolation"), reproduced in float64 numpy for equivalence tests and ablations: a
  subspace from the SVD of the *centred* velocities (which removes the trend), unnormalised
  projections, and an escape whose sign follows LAPACK's SVD convention.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from aiether._metrics import EPS, gram_tau_kappa, normalise_tau_kappa, velocity_gram

__all__ = ["fixed_extrapolate", "reference_extrapolate"]


# --------------------------------------------------------------------------------------------------
# fixed (geometric) rule
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _fit_weights(num_snapshots: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Weights ``w_v``, ``w_a`` with ``v_end = Σ_t w_v[t]·W_t`` and ``a = Σ_t w_a[t]·W_t``.

    Least squares ``W(t) ≈ c₀ + c₁t + c₂t²`` over ``t = 0 … S−1`` (a line when ``S == 2``), solved
    once per window length in float64 through the normal equations. The time axis is shifted to end
    at 0 (``t' = t − (S−1)``), which is the same polynomial, better conditioned, and makes
    ``v_end = c₁ + 2c₂(S−1)`` the linear coefficient and ``a = 2c₂`` twice the quadratic one.
    Both weight vectors sum to 0, so they may be applied to snapshots minus any fixed offset.
    """
    t = torch.arange(num_snapshots, dtype=torch.float64) - (num_snapshots - 1)
    degree = 1 if num_snapshots == 2 else 2
    design = torch.stack([t**p for p in range(degree + 1)], dim=1)  # (S, degree + 1)
    coef = torch.linalg.solve(design.T @ design, design.T)  # (degree + 1, S): c = coef @ W
    w_v = coef[1]
    w_a = 2.0 * coef[2] if degree == 2 else torch.zeros_like(w_v)
    return tuple(w_v.tolist()), tuple(w_a.tolist())


def _unit(x: Tensor, eps: float) -> Tensor:
    """``x/‖x‖``, or zeros when ``‖x‖ < eps`` (no host sync)."""
    norm = torch.linalg.vector_norm(x)
    return torch.where(norm >= eps, x / norm.clamp_min(eps), torch.zeros_like(x))


def _escape_direction(
    flat: Tensor, gram: Tensor, k_subspace: int, ell_orth: int, eps: float
) -> Tensor:
    """Unit ``ê ∝ Vᵀ Σ_{i=k}^{k+ℓ−1} u_i = Σ σ_i q_i`` from the uncentred velocities, or zeros.

    Args:
        flat: ``(S, D)`` snapshots in the computation dtype.
        gram: ``(T, T)`` velocity Gram ``V Vᵀ`` of ``flat``.
        k_subspace: first mode used (0-based), ``k``.
        ell_orth: number of modes used, ``ℓ``.
        eps: below this norm the direction is zero.

    Returns:
        ``(D,)`` unit vector, or zeros when no mode ``k ≤ i < min(k+ℓ, T)`` has a non-negligible
        singular value.
    """
    # The Gram is tiny (T×T): its eigendecomposition runs in float64 whatever the snapshot dtype.
    evals, evecs = torch.linalg.eigh(gram.to(torch.float64))
    evals, evecs = evals.flip(0), evecs.flip(1)  # descending
    lam = evals[k_subspace : k_subspace + ell_orth]
    u = evecs[:, k_subspace : k_subspace + ell_orth]  # (T, m), m ≥ 1 modes that exist
    # Sign fixed by the data, not by the solver: the largest-magnitude entry of each u_i is > 0.
    pivot = u.gather(0, u.abs().argmax(dim=0, keepdim=True)).squeeze(0)
    sign = torch.where(pivot < 0, -1.0, 1.0).to(u.dtype)
    # Modes with σ_i below σ_max·u^(1/4) (u: unit roundoff of the Gram's dtype; 1.9e-2 in float32,
    # 1.2e-4 in float64) are treated as absent: a rank-deficient window has eigenvalues at the
    # rounding level of the snapshots and the Gram (≈ 1e-7·λ_max in float32 at D = 1e5), and
    # normalising a sum of such modes alone would make a random direction of unit norm.
    tol = evals[0].clamp_min(0) * math.sqrt(torch.finfo(gram.dtype).eps)
    keep = (lam > tol) & (lam > eps * eps)
    coeff = (u * (sign * keep.to(u.dtype))).sum(dim=1).to(flat.dtype)  # (T,)
    velocities = flat[1:] - flat[:-1]  # (T, D)
    return _unit(coeff @ velocities, eps)


def fixed_extrapolate(
    history: Tensor,
    *,
    beta0: float,
    gamma0: float,
    eta0: float,
    k_subspace: int,
    ell_orth: int,
    tau_crit: float = 0.8,
    kappa_crit: float = 0.8,
    eps: float = EPS,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The fixed geometric extrapolation of one tensor's trajectory (aiether spec §3.3).

    ``W_new = W_last + ‖W_last‖_F·(β₀/τ·d_v + γ₀/(1+κ)·d_a + η₀(τ̃−τ_c)₊(κ̃−κ_c)₊·ê)`` where
    ``d_v``, ``d_a`` are the unit end velocity ``v_end = c₁ + 2c₂(S−1)`` and acceleration
    ``a = 2c₂`` of the least-squares fit ``W(t) ≈ c₀ + c₁t + c₂t²`` over ``t = 0 … S−1`` (a line
    for ``S == 2``, so ``d_a = 0``), and ``ê`` is the normalised ``Σ_{i=k}^{k+ℓ−1} σ_i q_i`` of
    the uncentred velocity matrix (each left vector ``u_i`` sign-fixed so that its largest-magnitude
    entry is positive; zero when no such mode exists). τ, κ are the raw statistics of
    :mod:`aiether._metrics`, τ̃ = τ/√T, κ̃ = κ/√(T−1) their window-normalised values.

    Tensors with fewer than 2 dimensions (biases, norms) are copied from the last snapshot.
    Everything stays on the history's device; there is no ``.item()``. When the escape is needed
    (``η₀ > 0`` and ``T > k``) the ``(T, T)`` ``torch.linalg.eigh`` runs, which on CUDA waits for
    the device.

    Args:
        history: ``(S, *shape)`` snapshots in time order, ``S ≥ 2``, floating point (any device).
        beta0: velocity gain β₀.
        gamma0: acceleration gain γ₀.
        eta0: escape gain η₀.
        k_subspace: first escape mode ``k`` (0-based; modes ``0 … k−1`` are the main subspace).
        ell_orth: number of escape modes ``ℓ``.
        tau_crit: threshold τ_c on τ̃ for the escape gate.
        kappa_crit: threshold κ_c on κ̃ for the escape gate.
        eps: norms below ``eps`` give zero directions; also the ε of τ and κ.

    Returns:
        ``(W_new, metrics)``: ``W_new`` of shape ``shape`` in the history's dtype (computed in
        float32, or float64 for float64 input); ``metrics`` holds 0-d tensors ``tau``,
        ``kappa_eff``, ``tau_norm``, ``kappa_norm`` and ``delta_norm`` (``‖W_last − W_0‖_F``).

    Raises:
        TypeError: ``history`` is not a floating-point tensor.
        ValueError: ``history`` has no time axis or ``S < 2``; ``k_subspace`` or ``ell_orth``
            is negative.
    """
    if not isinstance(history, Tensor):
        raise TypeError(f"history: expected a torch.Tensor, got {type(history).__name__}")
    if not history.is_floating_point():
        raise TypeError(f"history: expected a floating-point tensor, got dtype {history.dtype}")
    if history.ndim < 1 or history.shape[0] < 2:
        raise ValueError(
            f"history: expected shape (S, *shape) with S >= 2 snapshots, got {tuple(history.shape)}"
        )
    if k_subspace < 0 or ell_orth < 0:
        raise ValueError(
            f"k_subspace, ell_orth: expected >= 0, got k_subspace={k_subspace}, ell_orth={ell_orth}"
        )
    num_snapshots = history.shape[0]
    num_velocities = num_snapshots - 1
    shape = history.shape[1:]
    dtype = torch.promote_types(history.dtype, torch.float32)
    flat = history.detach().reshape(num_snapshots, -1).to(dtype)  # (S, D)
    last = flat[-1]

    gram = velocity_gram(flat)  # (T, T)
    tau, kappa = gram_tau_kappa(gram, eps)
    tau_norm, kappa_norm = normalise_tau_kappa(tau, kappa, num_velocities)
    metrics = {
        "tau": tau,
        "kappa_eff": kappa,
        "tau_norm": tau_norm,
        "kappa_norm": kappa_norm,
        "delta_norm": torch.linalg.vector_norm(last - flat[0]),
    }
    if len(shape) < 2:
        return history.detach()[-1].clone(), metrics

    w_v, w_a = _fit_weights(num_snapshots)
    # (S, D): the weights sum to 0, so they apply to W_t − W_last, which keeps the cancellation
    # between nearly equal snapshots out of the weighted sum
    offsets = flat - last
    v_end = torch.tensor(w_v, dtype=dtype, device=flat.device) @ offsets
    accel = torch.tensor(w_a, dtype=dtype, device=flat.device) @ offsets
    d_v = _unit(v_end, eps)
    d_a = _unit(accel, eps)

    escape = torch.zeros_like(last)
    if eta0 != 0.0 and k_subspace < num_velocities and ell_orth > 0:
        escape = _escape_direction(flat, gram, k_subspace, ell_orth, eps)

    # τ ≥ 1 − O(ε) whenever anything moved; the clamp only matters for a still history (d_v = 0).
    coef_v = beta0 / tau.clamp_min(eps)
    coef_a = gamma0 / (1.0 + kappa)
    gate = eta0 * (tau_norm - tau_crit).clamp_min(0) * (kappa_norm - kappa_crit).clamp_min(0)
    step = coef_v * d_v + coef_a * d_a + gate * escape
    w_new = last + torch.linalg.vector_norm(last) * step
    return w_new.reshape(shape).to(history.dtype), metrics


# --------------------------------------------------------------------------------------------------
# reference (original coded) rule
# --------------------------------------------------------------------------------------------------


def _reference_tau_kappa(flat: npt.NDArray[np.float64], eps: float) -> tuple[float, float]:
    """The original's τ and κ of ``(S, D)`` float64 snapshots, evaluated the way it codes them.

    τ = ``Σ‖V_t‖/(‖Δ‖+ε)`` (1 when S < 2). κ = ``Σ‖V_t − α_t Û‖ / (Σ‖α_t Û‖ + ε)`` with
    ``Û = Δ/(‖Δ‖+ε)`` and ``α_t = ⟨V_t, Û⟩`` (0 when S < 3 or ‖Δ‖ < ε): the vector form of the
    spec's formula, with the original's not-quite-unit ``Û`` kept, which differs from the Gram
    identity ``‖V_t^⊥‖² = G_tt − α_t²`` by O(ε/‖Δ‖).
    """
    num_snapshots = flat.shape[0]
    if num_snapshots < 2:
        return 1.0, 0.0
    velocities = flat[1:] - flat[:-1]
    delta = flat[-1] - flat[0]
    delta_norm = float(np.linalg.norm(delta))
    tau = float(np.sum(np.linalg.norm(velocities, axis=1))) / (delta_norm + eps)
    if num_snapshots < 3 or delta_norm < eps:
        return tau, 0.0
    direction = delta / (delta_norm + eps)
    along = velocities @ direction  # (T,)
    parallel = along[:, None] * direction
    across = float(np.sum(np.linalg.norm(velocities - parallel, axis=1)))
    kappa = across / (float(np.sum(np.linalg.norm(parallel, axis=1))) + eps)
    return tau, kappa


def reference_extrapolate(
    history: npt.NDArray[Any],
    *,
    beta0: float = 0.1,
    gamma0: float = 0.15,
    eta0: float = 0.03,
    k_subspace: int = 10,
    ell_orth: int = 5,
    eps: float = EPS,
) -> tuple[npt.NDArray[np.float64], dict[str, float]]:
    """The original project's coded extrapolation of one tensor (aiether spec §2), in float64.

    With velocities ``V_t = W_t − W_{t−1}`` (``t = 1 … S−1``), ``V̄ = Δ/(S−1)`` and
    ``Ā`` = the mean second difference ``(V_{S−1} − V_1)/(S−2)`` (0 when ``S == 2``, as the
    original codes it)::

        W_new = W_last + β₀/(τ+ε)·P_k V̄ + γ₀/(1+κ)·P_k Ā + η₀·τ·κ·v_esc

    For tensors of ≥ 2 dimensions ``P_k = Q_k Q_kᵀ`` projects onto the first ``min(k, r)`` right
    singular vectors of the **mean-centred** ``(T, D)`` velocity matrix (thin SVD, ``r`` its
    number of columns) and ``v_esc = s/(‖s‖+ε)`` with ``s = Σ_{i=k}^{k+ℓ−1} σ_i q_i`` over the
    columns that exist (zero when there are none or ``‖s‖ ≤ ε``). Following the original code,
    when the centred matrix has norm below ε (two snapshots, a straight line) there is no
    projection (``P_k = I``) and no escape. Tensors of fewer than 2 dimensions are never
    projected and have no escape. The escape's sign is whatever LAPACK returns (a documented
    flaw of the original, kept here on purpose).

    Args:
        history: ``(S, *shape)`` snapshots in time order (converted to float64).
        beta0: velocity gain β₀ (README default 0.1).
        gamma0: acceleration gain γ₀ (0.15).
        eta0: escape gain η₀ (0.03).
        k_subspace: subspace dimension ``k`` (10).
        ell_orth: number of escape modes ``ℓ`` (5).
        eps: the original's ε.

    Returns:
        ``(W_new, metrics)``: ``W_new`` of shape ``shape`` in float64 and float metrics ``tau``,
        ``kappa_eff``, ``delta_norm`` (``‖W_last − W_0‖_F``). With ``S < 2``, or when the SVD
        raises ``numpy.linalg.LinAlgError``, ``W_new`` is a copy of the last snapshot (spec §2
        step 4; the original's geometry module itself falls back to the unprojected update
        after an SVD failure).

    Raises:
        ValueError: ``history`` has no snapshot, or ``k_subspace``/``ell_orth`` is negative.
    """
    hist = np.asarray(history, dtype=np.float64)
    if hist.ndim < 1 or hist.shape[0] < 1:
        raise ValueError(
            f"history: expected shape (S, *shape) with S >= 1 snapshots, got {hist.shape}"
        )
    if k_subspace < 0 or ell_orth < 0:
        raise ValueError(
            f"k_subspace, ell_orth: expected >= 0, got k_subspace={k_subspace}, ell_orth={ell_orth}"
        )
    num_snapshots = hist.shape[0]
    shape = hist.shape[1:]
    flat = hist.reshape(num_snapshots, -1)
    last = flat[-1]
    tau, kappa = _reference_tau_kappa(flat, eps)
    metrics = {
        "tau": tau,
        "kappa_eff": kappa,
        "delta_norm": float(np.linalg.norm(last - flat[0])),
    }
    if num_snapshots < 2:
        return hist[-1].copy(), metrics

    velocities = flat[1:] - flat[:-1]  # (T, D)
    v_mean = velocities.mean(axis=0)
    if num_snapshots >= 3:
        a_mean = (flat[2:] - 2.0 * flat[1:-1] + flat[:-2]).mean(axis=0)
    else:
        a_mean = np.zeros_like(last)
    v_proj, a_proj, escape = v_mean, a_mean, np.zeros_like(last)

    if len(shape) >= 2:
        centred = velocities - velocities.mean(axis=0, keepdims=True)
        if np.linalg.norm(centred) >= eps:
            try:
                _, svals, vt = np.linalg.svd(centred, full_matrices=False)
            except np.linalg.LinAlgError:
                return hist[-1].copy(), metrics
            q = vt.T  # (D, r)
            k_eff = min(k_subspace, q.shape[1])
            if k_eff > 0:
                q_k = q[:, :k_eff]
                v_proj = q_k @ (q_k.T @ v_mean)
                a_proj = q_k @ (q_k.T @ a_mean)
            end = min(k_eff + ell_orth, q.shape[1])
            if k_eff < end:
                summed = q[:, k_eff:end] @ svals[k_eff:end]
                norm = float(np.linalg.norm(summed))
                if norm > eps:
                    escape = summed / (norm + eps)

    w_new = (
        last
        + beta0 / (tau + eps) * v_proj
        + gamma0 / (1.0 + kappa) * a_proj
        + eta0 * tau * kappa * escape
    )
    return w_new.reshape(shape), metrics
