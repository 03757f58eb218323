"""Per-tensor extrapolation: the fixed geometric rule, the original's coded rule, and the
original-compatible ``GeometricExtrapolator`` (aiether spec §2 "Coded extrapolation", §3.3, §4)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from aiether._extrapolation import fixed_extrapolate, reference_extrapolate
from aiether.extrapolator import (
    FIXED_BETA0,
    FIXED_ETA0,
    FIXED_GAMMA0,
    REFERENCE_BETA0,
    REFERENCE_ETA0,
    REFERENCE_GAMMA0,
    GeometricExtrapolator,
)

EPS = 1e-8
F64 = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------------
# histories
# --------------------------------------------------------------------------------------------------


def _drift_walk(
    seed: int, num_snapshots: int, shape: tuple[int, ...], ratio: float = 1.0, scale: float = 0.05
) -> F64:
    """``W_t = W_0 + Σ (d + n_s)``: a fixed drift ``d`` plus noise with ``‖n_s‖ ≈ ‖d‖/ratio``."""
    rng = np.random.default_rng(seed)
    size = math.prod(shape)
    w0 = rng.standard_normal(shape)
    drift = rng.standard_normal(shape)
    drift *= scale / np.linalg.norm(drift)
    noise = rng.standard_normal((num_snapshots - 1, *shape)) * (scale / ratio / math.sqrt(size))
    steps = np.concatenate([np.zeros((1, *shape)), drift + noise])
    hist: F64 = w0 + np.cumsum(steps, axis=0)
    return hist


def _random_walk(seed: int, num_snapshots: int, shape: tuple[int, ...]) -> F64:
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(shape)
    steps = rng.standard_normal((num_snapshots - 1, *shape)) * 0.01
    hist: F64 = w0 + np.concatenate([np.zeros((1, *shape)), np.cumsum(steps, axis=0)])
    return hist


def _fixed(history: torch.Tensor, **overrides: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gains: dict[str, Any] = {
        "beta0": 0.02,
        "gamma0": 0.01,
        "eta0": 0.01,
        "k_subspace": 10,
        "ell_orth": 5,
    }
    gains.update(overrides)
    return fixed_extrapolate(history, **gains)


def _unit(x: F64) -> F64:
    return x / np.linalg.norm(x)


# --------------------------------------------------------------------------------------------------
# (a) the quadratic fit of the fixed rule
# --------------------------------------------------------------------------------------------------


def _quadratic(seed: int, num_snapshots: int, shape: tuple[int, ...]) -> tuple[F64, F64, F64, F64]:
    rng = np.random.default_rng(seed)
    a, b, c = (rng.standard_normal(shape) for _ in range(3))
    b *= 0.1
    c *= 0.01
    hist = np.stack([a + b * t + c * t * t for t in range(num_snapshots)])
    return hist, a, b, c


@pytest.mark.parametrize("num_snapshots", [3, 4, 7, 15])
def test_fixed_fit_recovers_end_velocity_on_quadratic(num_snapshots: int) -> None:
    hist, _, b, c = _quadratic(1, num_snapshots, (4, 5))
    last = hist[-1]
    w_new, metrics = _fixed(torch.from_numpy(hist), beta0=0.02, gamma0=0.0, eta0=0.0)
    v_end = b + 2.0 * c * (num_snapshots - 1)
    velocities = hist[1:] - hist[:-1]
    tau = np.linalg.norm(velocities.reshape(num_snapshots - 1, -1), axis=1).sum() / (
        np.linalg.norm(last - hist[0]) + EPS
    )
    torch.testing.assert_close(metrics["tau"], torch.tensor(tau, dtype=torch.float64))
    expected = last + np.linalg.norm(last) * 0.02 / tau * _unit(v_end)
    torch.testing.assert_close(w_new, torch.from_numpy(expected))


@pytest.mark.parametrize("num_snapshots", [3, 5, 15])
def test_fixed_fit_recovers_acceleration_on_quadratic(num_snapshots: int) -> None:
    hist, _, _, c = _quadratic(2, num_snapshots, (3, 6))
    last = hist[-1]
    w_new, metrics = _fixed(torch.from_numpy(hist), beta0=0.0, gamma0=0.5, eta0=0.0)
    kappa = float(metrics["kappa_eff"])
    expected = last + np.linalg.norm(last) * 0.5 / (1.0 + kappa) * _unit(2.0 * c)
    torch.testing.assert_close(w_new, torch.from_numpy(expected))


def test_fixed_fit_two_snapshots_is_a_line() -> None:
    rng = np.random.default_rng(3)
    hist = rng.standard_normal((2, 4, 4))
    w_new, _ = _fixed(torch.from_numpy(hist), beta0=0.0, gamma0=0.7, eta0=0.0)
    torch.testing.assert_close(w_new, torch.from_numpy(hist[-1]))  # a = 0: no acceleration term
    w_new, metrics = _fixed(torch.from_numpy(hist), beta0=0.02, gamma0=0.0, eta0=0.0)
    tau = float(metrics["tau"])
    expected = hist[-1] + np.linalg.norm(hist[-1]) * 0.02 / tau * _unit(hist[1] - hist[0])
    torch.testing.assert_close(w_new, torch.from_numpy(expected))


def test_fixed_fit_matches_polyfit_on_noisy_history() -> None:
    hist = _drift_walk(4, 9, (5, 6), ratio=0.5)
    s = hist.shape[0]
    coeffs = np.polyfit(np.arange(s, dtype=np.float64), hist.reshape(s, -1), 2)  # (3, D): c2 c1 c0
    v_end = (coeffs[1] + 2.0 * coeffs[0] * (s - 1)).reshape(5, 6)
    w_new, metrics = _fixed(torch.from_numpy(hist), beta0=0.03, gamma0=0.0, eta0=0.0)
    expected = hist[-1] + np.linalg.norm(hist[-1]) * 0.03 / float(metrics["tau"]) * _unit(v_end)
    torch.testing.assert_close(w_new, torch.from_numpy(expected))
    accel = (2.0 * coeffs[0]).reshape(5, 6)
    w_new, metrics = _fixed(torch.from_numpy(hist), beta0=0.0, gamma0=0.04, eta0=0.0)
    factor = 0.04 / (1.0 + float(metrics["kappa_eff"]))
    expected = hist[-1] + np.linalg.norm(hist[-1]) * factor * _unit(accel)
    torch.testing.assert_close(w_new, torch.from_numpy(expected))


# --------------------------------------------------------------------------------------------------
# (b) the reference rule against an independent re-derivation
# --------------------------------------------------------------------------------------------------


def _oracle_reference(
    hist: F64, *, beta0: float, gamma0: float, eta0: float, k: int, ell: int
) -> tuple[F64, float, float, bool]:
    """The §2 rule written differently: loops over t, direct vector τ/κ, the telescoped Ā, and the
    projector and singular values from ``eigh`` of the centred velocities' covariance.

    The escape ``Σ σ_i q_i`` depends on the sign of each ``q_i``, which the original takes from
    LAPACK's SVD (a §6 pitfall): only those signs are read from ``np.linalg.svd``. Modes whose
    covariance eigenvalue is at round-off level are given σ = 0 (the SVD returns ≈ 1e-16 there,
    ``eigh`` ≈ √(1e-16·λ_max), a difference that would otherwise exceed the tolerance).
    Returns ``(W_new, τ, κ, escape_used)``.
    """
    s = hist.shape[0]
    shape = hist.shape[1:]
    snaps = [hist[t].ravel() for t in range(s)]
    vel = [snaps[t] - snaps[t - 1] for t in range(1, s)]
    delta = snaps[-1] - snaps[0]
    delta_norm = math.sqrt(float(np.dot(delta, delta)))
    tau = sum(math.sqrt(float(np.dot(v, v))) for v in vel) / (delta_norm + EPS)
    kappa = 0.0
    if s >= 3 and delta_norm >= EPS:
        u = delta / (delta_norm + EPS)
        across = along = 0.0
        for v in vel:
            parallel = float(np.dot(v, u)) * u
            across += math.sqrt(float(np.dot(v - parallel, v - parallel)))
            along += math.sqrt(float(np.dot(parallel, parallel)))
        kappa = across / (along + EPS)
    v_bar = delta / (s - 1)
    a_bar = (vel[-1] - vel[0]) / (s - 2) if s >= 3 else np.zeros_like(delta)
    escape = np.zeros_like(delta)
    escape_used = False
    if len(shape) >= 2:
        mean = np.mean(np.stack(vel), axis=0)
        centred = np.stack([v - mean for v in vel])
        if math.sqrt(float(np.sum(centred * centred))) >= EPS:
            lam, vecs = np.linalg.eigh(centred.T @ centred)
            lam, vecs = lam[::-1], vecs[:, ::-1]
            cols = min(centred.shape)
            k_eff = min(k, cols)
            basis = vecs[:, :k_eff]
            v_bar = basis @ (basis.T @ v_bar)
            a_bar = basis @ (basis.T @ a_bar)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)  # the original's signs only
            summed = np.zeros_like(delta)
            for i in range(k_eff, min(k_eff + ell, cols)):
                if lam[i] > 1e-12 * lam[0]:
                    sign = 1.0 if float(np.dot(vecs[:, i], vt[i])) > 0 else -1.0
                    summed += math.sqrt(lam[i]) * sign * vecs[:, i]
            norm = math.sqrt(float(np.dot(summed, summed)))
            if norm > EPS:
                escape = summed / (norm + EPS)
                escape_used = True
    w_new = (
        snaps[-1]
        + beta0 / (tau + EPS) * v_bar
        + gamma0 / (1.0 + kappa) * a_bar
        + eta0 * tau * kappa * escape
    )
    return w_new.reshape(shape), tau, kappa, escape_used


def _close_1e10(actual: F64 | torch.Tensor, expected: F64) -> None:
    """atol 1e-10 absolute (values are O(1)), rtol 0: the spec's bar for the reference rule (§4)."""
    got = actual if isinstance(actual, torch.Tensor) else torch.from_numpy(actual)
    torch.testing.assert_close(got, torch.from_numpy(expected), atol=1e-10, rtol=0.0)


# (S, shape, k, ℓ, whether the escape is non-zero). With D > T the centred velocities have rank
# T − 1, so the original's subspace is only determined when k ≤ T − 1 (beyond, LAPACK completes it
# with an arbitrary null direction) or when it is all of R^D (D ≤ T − 1, k ≥ D).
_REFERENCE_CASES = [
    (2, (4, 5), 3, 2, False),  # centred velocities are 0: no projection, no escape, Ā = 0
    (3, (4, 5), 1, 2, False),  # rank 1: the only escape mode is null
    (5, (4, 5), 2, 3, True),
    (5, (4, 5), 3, 1, False),
    (15, (6, 8), 10, 5, True),  # README k, ℓ
    (15, (6, 8), 5, 3, True),  # the original constructor's k, ℓ
    (15, (6, 8), 13, 5, False),
    (15, (2, 3), 10, 5, False),  # D = 6 < T: projection is the identity
    (15, (2, 3), 4, 5, True),
    (2, (7,), 10, 5, False),
    (3, (7,), 10, 5, False),
    (5, (7,), 2, 3, False),
    (15, (7,), 5, 3, False),
]


@pytest.mark.parametrize(("num_snapshots", "shape", "k", "ell", "escape"), _REFERENCE_CASES)
@pytest.mark.parametrize("gains", [(0.1, 0.15, 0.03), (0.3, 0.2, 0.5)])
def test_reference_matches_independent_derivation(
    num_snapshots: int,
    shape: tuple[int, ...],
    k: int,
    ell: int,
    escape: bool,
    gains: tuple[float, float, float],
) -> None:
    beta0, gamma0, eta0 = gains
    hist = _drift_walk(10 + num_snapshots, num_snapshots, shape, ratio=0.7, scale=0.3)
    expected, tau, kappa, escape_used = _oracle_reference(
        hist, beta0=beta0, gamma0=gamma0, eta0=eta0, k=k, ell=ell
    )
    assert escape_used == escape
    w_new, metrics = reference_extrapolate(
        hist, beta0=beta0, gamma0=gamma0, eta0=eta0, k_subspace=k, ell_orth=ell
    )
    assert w_new.dtype == np.float64
    assert w_new.shape == shape
    _close_1e10(w_new, expected)
    assert metrics["tau"] == pytest.approx(tau, rel=1e-12)
    assert metrics["kappa_eff"] == pytest.approx(kappa, rel=1e-12, abs=1e-15)
    assert metrics["delta_norm"] == pytest.approx(np.linalg.norm(hist[-1] - hist[0]), rel=1e-12)

    ext = GeometricExtrapolator(beta0, gamma0, eta0, k, ell, mode="reference")
    w_np, metrics_np = ext.extrapolate(hist)
    _close_1e10(w_np, expected)
    w_t, metrics_t = ext.extrapolate(torch.from_numpy(hist))
    _close_1e10(w_t, expected)
    assert metrics_np == metrics_t == metrics
    assert ext.compute_metrics(hist) == {"tau": metrics["tau"], "kappa_eff": metrics["kappa_eff"]}
    assert ext.compute_tau(hist) == metrics["tau"]
    assert ext.compute_kappa_eff(hist) == metrics["kappa_eff"]


def test_reference_defaults_are_the_readme_gains() -> None:
    hist = _drift_walk(20, 15, (6, 8), ratio=0.7, scale=0.3)
    expected, *_ = _oracle_reference(hist, beta0=0.1, gamma0=0.15, eta0=0.03, k=10, ell=5)
    w_new, _ = reference_extrapolate(hist)
    w_cls, _ = GeometricExtrapolator(k_subspace=10, ell_orth=5, mode="reference").extrapolate(hist)
    _close_1e10(w_new, expected)
    _close_1e10(w_cls, expected)


def test_reference_svd_failure_copies_last_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    hist = _drift_walk(21, 6, (4, 5))

    def failing_svd(*args: Any, **kwargs: Any) -> Any:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", failing_svd)
    w_new, metrics = reference_extrapolate(hist)
    np.testing.assert_array_equal(w_new, hist[-1])
    assert w_new is not hist[-1]
    assert metrics["tau"] > 1.0


def test_reference_short_history_copies_last_snapshot() -> None:
    hist = _drift_walk(22, 2, (3, 3))[:1]
    w_new, metrics = reference_extrapolate(hist)
    np.testing.assert_array_equal(w_new, hist[0])
    assert metrics == {"tau": 1.0, "kappa_eff": 0.0, "delta_norm": 0.0}
    with pytest.raises(ValueError, match="history"):
        reference_extrapolate(np.zeros((0, 3)))


def test_reference_escape_follows_solver_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents the §6 pitfall: the original's escape flips with the SVD's sign convention."""
    hist = _drift_walk(23, 15, (6, 8), ratio=0.7, scale=0.3)
    w_lapack, _ = reference_extrapolate(hist)
    w_no_escape, _ = reference_extrapolate(hist, eta0=0.0)
    original_svd = np.linalg.svd

    def flipped_svd(a: Any, *args: Any, **kwargs: Any) -> Any:
        u, s, vt = original_svd(a, *args, **kwargs)
        return -u, s, -vt

    monkeypatch.setattr(np.linalg, "svd", flipped_svd)
    w_flipped, _ = reference_extrapolate(hist)
    w_no_escape_flipped, _ = reference_extrapolate(hist, eta0=0.0)
    np.testing.assert_allclose(w_no_escape_flipped, w_no_escape, rtol=0, atol=1e-12)  # P_k is not
    np.testing.assert_allclose(w_flipped - w_no_escape, -(w_lapack - w_no_escape), rtol=1e-9)
    assert np.abs(w_flipped - w_lapack).max() > 1e-3


# --------------------------------------------------------------------------------------------------
# (c) the reference rule's centring erases the trend
# --------------------------------------------------------------------------------------------------


def test_reference_projection_loses_the_trend() -> None:
    num_snapshots, dim, k = 15, 20_000, 10
    hist = _drift_walk(30, num_snapshots, (100, dim // 100), ratio=1.0)
    flat = hist.reshape(num_snapshots, -1)
    velocities = flat[1:] - flat[:-1]
    v_bar = (flat[-1] - flat[0]) / (num_snapshots - 1)
    centred = velocities - velocities.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = np.linalg.norm(vt[:k] @ v_bar) / np.linalg.norm(v_bar)
    assert ratio < 0.05
    # ... and it is what the coded rule applies: with γ₀ = η₀ = 0 the step is β₀/(τ+ε)·P_kV̄.
    w_new, metrics = reference_extrapolate(hist, beta0=0.1, gamma0=0.0, eta0=0.0, k_subspace=k)
    step = np.linalg.norm(w_new - hist[-1]) / (0.1 / (metrics["tau"] + EPS))
    assert step / np.linalg.norm(v_bar) == pytest.approx(ratio, rel=1e-6)
    # the fixed rule keeps it: its velocity direction points along the drift
    drift = v_bar  # V̄ = drift + mean noise, ‖mean noise‖ ≈ ‖drift‖/√T
    w_fixed, m_fixed = _fixed(torch.from_numpy(hist), beta0=0.1, gamma0=0.0, eta0=0.0)
    d_v = (w_fixed.numpy() - hist[-1]).ravel()
    cosine = float(d_v @ drift) / (np.linalg.norm(d_v) * np.linalg.norm(drift))
    assert cosine > 0.5
    assert float(m_fixed["tau"]) == pytest.approx(1.36, abs=0.1)  # spec §2 calibration at r = 1


# --------------------------------------------------------------------------------------------------
# (d) the fixed rule's escape: data-determined sign, zero without modes
# --------------------------------------------------------------------------------------------------


def _escape_oracle(hist: F64, k: int, ell: int) -> F64:
    """``ê`` from the SVD of the uncentred velocities, each ``u_i`` sign-fixed by its largest entry."""
    s = hist.shape[0]
    flat = hist.reshape(s, -1)
    velocities = flat[1:] - flat[:-1]
    u, svals, vt = np.linalg.svd(velocities, full_matrices=False)
    summed = np.zeros(flat.shape[1])
    for i in range(k, min(k + ell, s - 1)):
        sign = 1.0 if u[np.argmax(np.abs(u[:, i])), i] > 0 else -1.0
        summed += svals[i] * sign * vt[i]
    return _unit(summed).reshape(hist.shape[1:])


@pytest.mark.parametrize(("k", "ell"), [(1, 3), (5, 3), (10, 5), (12, 5)])
def test_fixed_escape_matches_signed_svd(k: int, ell: int) -> None:
    hist = _random_walk(40, 15, (20, 100))
    w_new, metrics = _fixed(
        torch.from_numpy(hist), beta0=0.0, gamma0=0.0, eta0=1.0, k_subspace=k, ell_orth=ell
    )
    gate = (float(metrics["tau_norm"]) - 0.8) * (float(metrics["kappa_norm"]) - 0.8)
    assert gate > 0  # a random walk: τ̃, κ̃ ≈ 1
    expected = hist[-1] + np.linalg.norm(hist[-1]) * gate * _escape_oracle(hist, k, ell)
    torch.testing.assert_close(w_new, torch.from_numpy(expected))


def test_fixed_escape_invariant_to_solver_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    hist = torch.from_numpy(_random_walk(41, 15, (20, 100)))
    reference, _ = _fixed(hist, eta0=1.0, k_subspace=3, ell_orth=4)
    original_eigh = torch.linalg.eigh
    calls: list[int] = []

    def flipped_eigh(a: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        evals, evecs = original_eigh(a, *args, **kwargs)
        calls.append(1)
        signs = torch.tensor([(-1.0) ** (i // 2) for i in range(evecs.shape[1])], dtype=evecs.dtype)
        return evals, evecs * signs

    monkeypatch.setattr(torch.linalg, "eigh", flipped_eigh)
    flipped, _ = _fixed(hist, eta0=1.0, k_subspace=3, ell_orth=4)
    assert calls
    torch.testing.assert_close(flipped, reference)


def test_fixed_escape_float32_matches_float64() -> None:
    hist = torch.from_numpy(_random_walk(42, 15, (32, 64)))
    w64, m64 = _fixed(hist, beta0=0.02, gamma0=0.01, eta0=1.0, k_subspace=2, ell_orth=3)
    w32, m32 = _fixed(hist.float(), beta0=0.02, gamma0=0.01, eta0=1.0, k_subspace=2, ell_orth=3)
    assert w32.dtype == torch.float32
    assert m32["tau"].dtype == torch.float32
    # the escape is a large step here (‖W‖·gate ≈ 0.1‖W‖); a solver-dependent sign would move it
    # by twice that, far outside float32 tolerances
    torch.testing.assert_close(w32, w64.float())
    for name in m64:
        torch.testing.assert_close(m32[name], m64[name].float())


def test_fixed_escape_negates_with_the_history() -> None:
    hist = torch.from_numpy(_random_walk(43, 15, (8, 50)))
    w_pos, _ = _fixed(hist, eta0=1.0, k_subspace=2, ell_orth=3)
    w_neg, _ = _fixed(-hist, eta0=1.0, k_subspace=2, ell_orth=3)
    torch.testing.assert_close(w_neg, -w_pos)


@pytest.mark.parametrize(("num_snapshots", "k"), [(5, 4), (5, 10), (11, 10), (2, 1)])
def test_fixed_escape_zero_without_modes(num_snapshots: int, k: int) -> None:
    hist = torch.from_numpy(_random_walk(44, num_snapshots, (10, 40)))
    w_new, _ = _fixed(
        hist, beta0=0.0, gamma0=0.0, eta0=5.0, tau_crit=0.0, kappa_crit=-1.0, k_subspace=k
    )
    torch.testing.assert_close(w_new, hist[-1])  # T ≤ k: no escape mode exists
    last_mode = num_snapshots - 2  # k = T − 1: exactly one escape mode exists
    w_more, _ = _fixed(
        hist, beta0=0.0, gamma0=0.0, eta0=5.0, tau_crit=0.0, kappa_crit=-1.0, k_subspace=last_mode
    )
    assert (w_more - hist[-1]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_escape_zero_for_rank_deficient_window(dtype: torch.dtype) -> None:
    """Velocities in a 2-D plane: modes 2, 3, … are rounding noise and must not become ê."""
    rng = np.random.default_rng(45)
    basis = rng.standard_normal((2, 4000))
    velocities = 0.01 * rng.standard_normal((14, 2)) @ basis
    hist64 = rng.standard_normal(4000) + np.concatenate([np.zeros((1, 4000)), velocities.cumsum(0)])
    hist = torch.from_numpy(hist64.reshape(15, 40, 100)).to(dtype)
    kwargs: dict[str, Any] = {"beta0": 0.0, "gamma0": 0.0, "eta0": 5.0, "tau_crit": 0.0}
    w_new, _ = _fixed(hist, kappa_crit=0.0, k_subspace=2, **kwargs)
    torch.testing.assert_close(w_new, hist[-1])
    w_second, m_second = _fixed(hist, kappa_crit=0.0, k_subspace=1, **kwargs)
    assert float(m_second["kappa_norm"]) > 0.0
    assert (w_second - hist[-1]).abs().max() > 1e-3  # the second real mode is used


# --------------------------------------------------------------------------------------------------
# (e) the escape gate
# --------------------------------------------------------------------------------------------------


def test_fixed_straight_line_is_velocity_only() -> None:
    rng = np.random.default_rng(50)
    a, b = rng.standard_normal((5, 7)), 0.1 * rng.standard_normal((5, 7))
    hist = np.stack([a + t * b for t in range(8)])
    last = hist[-1]
    w_new, metrics = _fixed(torch.from_numpy(hist), beta0=0.02, gamma0=0.5, eta0=10.0, k_subspace=1)
    expected = last + np.linalg.norm(last) * 0.02 / 1.0 * _unit(b)
    torch.testing.assert_close(w_new, torch.from_numpy(expected))
    torch.testing.assert_close(metrics["tau"], torch.tensor(1.0, dtype=torch.float64))
    # κ is 0 up to the ε inside Δ̂ = Δ/(‖Δ‖+ε): ‖V⊥‖ ≈ ‖V‖·√(2ε/‖Δ‖) ≈ 1e-4 of a step
    assert 0.0 <= float(metrics["kappa_eff"]) < 1e-3


def test_fixed_gate_closed_below_thresholds() -> None:
    hist = torch.from_numpy(_drift_walk(51, 15, (20, 50), ratio=2.0))
    _, metrics = _fixed(hist)
    assert float(metrics["tau_norm"]) < 0.8  # strong drift: τ ≈ 1.1, τ̃ ≈ 0.3
    w_gated, _ = _fixed(hist, eta0=100.0, k_subspace=2)
    w_off, _ = _fixed(hist, eta0=0.0, k_subspace=2)
    torch.testing.assert_close(w_gated, w_off)
    w_open, _ = _fixed(hist, eta0=100.0, k_subspace=2, tau_crit=0.0, kappa_crit=0.0)
    assert (w_open - w_off).abs().max() > 1e-2


def test_fixed_class_eta_is_the_gate() -> None:
    hist = _random_walk(52, 15, (20, 100))
    ext = GeometricExtrapolator(beta0=0.0, gamma0=0.0, eta0=0.5, k_subspace=3, ell_orth=2)
    w_new, metrics = ext.extrapolate(hist)
    eta = ext.eta(metrics["tau"], metrics["kappa_eff"], num_velocities=14)
    assert eta > 0
    tau_n, kappa_n = metrics["tau"] / math.sqrt(14), metrics["kappa_eff"] / math.sqrt(13)
    assert eta == pytest.approx(0.5 * (tau_n - 0.8) * (kappa_n - 0.8), rel=1e-12)
    assert metrics["tau_norm"] == pytest.approx(tau_n, rel=1e-12)
    step = np.linalg.norm(w_new - hist[-1])
    assert step == pytest.approx(np.linalg.norm(hist[-1]) * eta, rel=1e-9)
    with pytest.raises(ValueError, match="num_velocities"):
        ext.eta(2.0, 2.0)
    with pytest.raises(ValueError, match="num_velocities"):
        ext.eta(2.0, 2.0, num_velocities=0)
    assert ext.eta(1.0, 0.5, num_velocities=14) == 0.0


def test_class_gains() -> None:
    ref = GeometricExtrapolator(mode="reference")
    assert (ref.beta0, ref.gamma0, ref.eta0) == (REFERENCE_BETA0, REFERENCE_GAMMA0, REFERENCE_ETA0)
    assert (ref.beta0, ref.gamma0, ref.eta0) == (0.1, 0.15, 0.03)
    fixed = GeometricExtrapolator()
    assert (fixed.beta0, fixed.gamma0, fixed.eta0) == (FIXED_BETA0, FIXED_GAMMA0, FIXED_ETA0)
    assert (fixed.beta0, fixed.gamma0, fixed.eta0) == (0.02, 0.01, 0.01)
    assert (fixed.k_subspace, fixed.ell_orth, fixed.eps) == (5, 3, 1e-8)
    assert ref.beta(1.5) == 0.1 / (1.5 + 1e-8)
    assert ref.gamma(0.5) == 0.15 / 1.5
    assert ref.eta(2.0, 0.5) == 0.03 * 2.0 * 0.5
    assert ref.eta(2.0, 0.5, num_velocities=4) == 0.03


# --------------------------------------------------------------------------------------------------
# (f) types and dtypes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fixed", "reference"])
@pytest.mark.parametrize("shape", [(6, 4, 5), (6, 7)])
def test_numpy_in_numpy_out(mode: str, shape: tuple[int, ...]) -> None:
    hist64 = _drift_walk(60, shape[0], shape[1:])
    ext = GeometricExtrapolator(mode=mode, k_subspace=2)  # type: ignore[arg-type]
    for dtype in (np.float32, np.float64):
        w_new, metrics = ext.extrapolate(hist64.astype(dtype))
        assert isinstance(w_new, np.ndarray)
        assert w_new.dtype == dtype
        assert w_new.shape == shape[1:]
        assert set(metrics) >= {"tau", "kappa_eff", "delta_norm"}
        assert all(isinstance(v, float) for v in metrics.values())
    w_np, _ = ext.extrapolate(hist64)
    w_t, _ = ext.extrapolate(torch.from_numpy(hist64))
    torch.testing.assert_close(torch.from_numpy(w_np), w_t)


@pytest.mark.parametrize("mode", ["fixed", "reference"])
def test_torch_in_torch_out(mode: str) -> None:
    hist = torch.from_numpy(_drift_walk(61, 6, (4, 5)))
    ext = GeometricExtrapolator(mode=mode, k_subspace=2)  # type: ignore[arg-type]
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        w_new, _ = ext.extrapolate(hist.to(dtype).clone().requires_grad_())
        assert isinstance(w_new, torch.Tensor)
        assert w_new.dtype == dtype
        assert w_new.device == hist.device
        assert w_new.shape == (4, 5)
        assert not w_new.requires_grad


def test_fixed_metrics_are_device_tensors() -> None:
    hist = torch.from_numpy(_drift_walk(62, 6, (4, 5))).float()
    _, metrics = _fixed(hist)
    assert set(metrics) == {"tau", "kappa_eff", "tau_norm", "kappa_norm", "delta_norm"}
    for value in metrics.values():
        assert isinstance(value, torch.Tensor)
        assert value.ndim == 0
        assert value.dtype == torch.float32
    torch.testing.assert_close(metrics["delta_norm"], torch.linalg.vector_norm(hist[-1] - hist[0]))


def test_fixed_and_reference_metrics_agree() -> None:
    hist = _drift_walk(63, 15, (6, 8), ratio=0.7)
    fixed = GeometricExtrapolator().compute_metrics(hist)
    ref = GeometricExtrapolator(mode="reference").compute_metrics(hist)
    # the Gram identity and the original's vector form differ by O(ε/‖Δ‖) in κ
    assert fixed["tau"] == pytest.approx(ref["tau"], rel=1e-12)
    assert fixed["kappa_eff"] == pytest.approx(ref["kappa_eff"], rel=1e-6)


# --------------------------------------------------------------------------------------------------
# (g) errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fixed", "reference"])
def test_bad_histories(mode: str) -> None:
    ext = GeometricExtrapolator(mode=mode)  # type: ignore[arg-type]
    for bad in (np.zeros((1, 3, 3)), np.zeros((1, 4)), np.zeros(5), np.zeros((3, 2, 2, 2))):
        with pytest.raises(ValueError, match="W_hist"):
            ext.extrapolate(bad)
        with pytest.raises(ValueError, match="W_hist"):
            ext.extrapolate(torch.from_numpy(bad))
        with pytest.raises(ValueError, match="W_hist"):
            ext.compute_metrics(bad)
    for bad_type in (
        [[0.0, 1.0], [1.0, 2.0]],
        np.zeros((3, 2), dtype=np.int64),
        torch.zeros(3, 2, dtype=torch.int32),
    ):
        with pytest.raises(TypeError, match="W_hist"):
            ext.extrapolate(bad_type)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="W_hist"):
            ext.compute_tau(bad_type)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"beta0": -0.1}, "beta0"),
        ({"gamma0": -1.0}, "gamma0"),
        ({"eta0": -1e-3}, "eta0"),
        ({"eta0": float("nan")}, "eta0"),
        ({"k_subspace": 0}, "k_subspace"),
        ({"k_subspace": 2.5}, "k_subspace"),
        ({"ell_orth": -1}, "ell_orth"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-8}, "eps"),
        ({"mode": "geometric"}, "mode"),
        ({"tau_crit": float("inf")}, "tau_crit"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GeometricExtrapolator(**kwargs)


def test_fixed_extrapolate_bad_inputs() -> None:
    with pytest.raises(ValueError, match="history"):
        _fixed(torch.zeros(1, 3, 3))
    with pytest.raises(TypeError, match="history"):
        _fixed(np.zeros((3, 3, 3)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="history"):
        _fixed(torch.zeros(3, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="k_subspace"):
        _fixed(torch.zeros(3, 3, 3), k_subspace=-1)


# --------------------------------------------------------------------------------------------------
# (h) vectors are copied by the fixed rule
# --------------------------------------------------------------------------------------------------


def test_fixed_copies_vectors() -> None:
    hist = torch.from_numpy(_drift_walk(70, 6, (9,)))
    w_new, metrics = _fixed(hist, eta0=10.0, tau_crit=0.0, kappa_crit=0.0)
    assert torch.equal(w_new, hist[-1])
    w_new.add_(1.0)
    assert not torch.equal(w_new, hist[-1])  # a copy, not a view
    assert float(metrics["tau"]) > 1.0
    scalars = torch.arange(5, dtype=torch.float32)
    w_scalar, _ = _fixed(scalars)
    assert w_scalar.shape == ()
    assert float(w_scalar) == 4.0

    hist_np = _drift_walk(71, 6, (9,))
    w_np, _ = GeometricExtrapolator().extrapolate(hist_np)
    np.testing.assert_array_equal(w_np, hist_np[-1])
    w_np[0] += 1.0
    assert w_np[0] != hist_np[-1, 0]


def test_reference_moves_vectors_without_projection() -> None:
    hist = _drift_walk(72, 6, (9,))
    w_new, metrics = reference_extrapolate(hist, eta0=10.0)
    v_bar = (hist[-1] - hist[0]) / 5
    a_bar = ((hist[-1] - hist[-2]) - (hist[1] - hist[0])) / 4
    expected = (
        hist[-1] + 0.1 / (metrics["tau"] + EPS) * v_bar + 0.15 / (1 + metrics["kappa_eff"]) * a_bar
    )
    np.testing.assert_allclose(w_new, expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_fixed_on_cuda_matches_cpu() -> None:
    hist = torch.from_numpy(_random_walk(80, 15, (64, 96))).float()
    w_cpu, m_cpu = _fixed(hist, eta0=1.0, k_subspace=2, ell_orth=3)
    w_gpu, m_gpu = _fixed(hist.cuda(), eta0=1.0, k_subspace=2, ell_orth=3)
    assert w_gpu.device.type == "cuda"
    assert all(v.device.type == "cuda" for v in m_gpu.values())
    torch.testing.assert_close(w_gpu.cpu(), w_cpu)
    for name, value in m_cpu.items():
        torch.testing.assert_close(m_gpu[name].cpu(), value)
    ext = GeometricExtrapolator(eta0=1.0, k_subspace=2)
    w_cls, _ = ext.extrapolate(hist.cuda().bfloat16())
    assert w_cls.device.type == "cuda"
    assert w_cls.dtype == torch.bfloat16
