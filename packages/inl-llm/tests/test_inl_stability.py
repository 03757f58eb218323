"""Frozen-coefficient stability of the INL update (spec §2 "Stability", §4), in float64.

The iteration matrix M = [[1 − p, dt·g·α], [−β, α]] acting on (e, v), p = dt·g·β. The oracles are
the Jury conditions (|α| < 1 and 0 < p < 2(1 + α)), the discriminant of M's characteristic
polynomial, and the numbers the spec derives for the shipped initialisations.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from inl_llm.functional import iteration_matrix, spectral_radius, stable_coefficients

DT = 0.1


def test_stable_parameterisation_never_leaves_the_stability_region() -> None:
    gen = torch.Generator().manual_seed(0)
    # 10⁵ raw controller outputs up to |raw| ≈ 18. Beyond that σ(b) < 1e-8 and ρ = 1 − O(p) rounds
    # to 1 in float64: the margin tends to 0 as p → 0, as it must (p = 0 is the boundary).
    raw = torch.randn(3, 100_000, generator=gen, dtype=torch.float64) * 4.0
    for alpha_max, p_margin in [(0.95, 0.9), (0.999, 1.0), (0.5, 0.3)]:
        alpha, beta, g = stable_coefficients(
            raw[0], raw[1], raw[2], alpha_max=alpha_max, p_margin=p_margin, dt=DT
        )
        p = DT * g * beta
        assert (alpha.abs() < 1).all()
        assert (p > 0).all()
        assert (p < 2 * (1 + alpha)).all()
        rho = spectral_radius(alpha, beta, g, DT)
        assert rho.max() < 1, (alpha_max, p_margin, rho.max())


def test_jury_conditions_on_an_alpha_p_grid() -> None:
    alpha = torch.linspace(-1.3, 1.3, 199, dtype=torch.float64)
    p = torch.linspace(-0.5, 4.9, 701, dtype=torch.float64)
    a, pp = torch.meshgrid(alpha, p, indexing="ij")
    # No grid point sits on a boundary (the comparison there would be a coin toss).
    assert (pp - 2 * (1 + a)).abs().min() > 1e-6
    assert pp.abs().min() > 1e-4 and ((a.abs() - 1).abs()).min() > 1e-4
    g = torch.full_like(a, 0.5)
    beta = pp / (DT * g)
    rho = spectral_radius(a, beta, g, DT)
    stable = (a.abs() < 1) & (pp > 0) & (pp < 2 * (1 + a))
    mismatches = ((rho < 1) != stable).sum().item()
    assert mismatches == 0
    assert stable.any() and (~stable).any()


def test_complex_eigenvalues_have_modulus_sqrt_alpha() -> None:
    alpha = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    p = torch.linspace(1e-3, 3.9, 400, dtype=torch.float64)
    a, pp = torch.meshgrid(alpha, p, indexing="ij")
    g = torch.full_like(a, 0.5)
    eig = torch.linalg.eigvals(iteration_matrix(a, pp / (DT * g), g, DT))
    lo, hi = (1 - a.sqrt()) ** 2, (1 + a.sqrt()) ** 2
    predicted_complex = (pp > lo) & (pp < hi)
    # Away from the double-root boundary, where rounding decides the sign of the discriminant.
    clear = ((pp - lo).abs() > 1e-9) & ((pp - hi).abs() > 1e-9)
    is_complex = eig.imag.abs().amax(-1) > 1e-12
    assert (is_complex[clear] == predicted_complex[clear]).all()
    moduli = eig.abs()[predicted_complex & clear]
    expected = a.sqrt()[predicted_complex & clear].unsqueeze(-1).expand_as(moduli)
    torch.testing.assert_close(moduli, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("alpha", "beta", "g", "rho", "iters"),
    [(0.8, 0.5, 0.5, 0.894, 62), (0.5, 0.7, 0.5, 0.924, 87)],
)
def test_spectral_radius_of_the_shipped_inits(
    alpha: float, beta: float, g: float, rho: float, iters: int
) -> None:
    got = spectral_radius(
        torch.tensor(alpha, dtype=torch.float64),
        torch.tensor(beta, dtype=torch.float64),
        torch.tensor(g, dtype=torch.float64),
        DT,
    ).item()
    assert round(got, 3) == rho
    # Iterations for a 10³ reduction of the error: ln(10³) / ln(1/ρ).
    assert round(math.log(1e3) / math.log(1 / got)) == iters


def test_complex_case_matches_closed_form_modulus_for_the_first_init() -> None:
    # (α 0.8, p = 0.1·0.5·0.5 = 0.025) lies inside the complex band, so ρ = √0.8 exactly.
    a = torch.tensor(0.8, dtype=torch.float64)
    got = spectral_radius(
        a, torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64), DT
    )
    torch.testing.assert_close(got, a.sqrt(), rtol=1e-12, atol=0.0)


def test_energy_is_not_monotone() -> None:
    # α 0.9, β 0.1, g 0.5 from (e, v) = (1, 0): the energy ½e² + ½v² rises on 6 of 50 steps,
    # although the matrix is stable. The energy argument of the original documentation is false.
    alpha, beta, g = 0.9, 0.1, 0.5
    m = iteration_matrix(*(torch.tensor(x, dtype=torch.float64) for x in (alpha, beta, g)), DT)
    assert (
        spectral_radius(*(torch.tensor(x, dtype=torch.float64) for x in (alpha, beta, g)), DT) < 1
    )
    state = torch.tensor([1.0, 0.0], dtype=torch.float64)
    energies = [0.5 * state.square().sum().item()]
    for _ in range(50):
        state = m @ state
        energies.append(0.5 * state.square().sum().item())
    rises = sum(b > a for a, b in itertools.pairwise(energies))
    assert rises == 6
