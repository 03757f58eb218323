"""The opt-in RMS brake: passes Gaussian updates, suppresses spikes, never overflows."""

from __future__ import annotations

import torch

from auon import AuON, brake_reference_rms, rms_brake_factor


def test_gaussian_factor_near_one() -> None:
    torch.manual_seed(0)
    for shape in [(64, 64), (256, 128), (32, 512)]:
        f = rms_brake_factor(torch.randn(shape), 3.0).item()
        assert 0.95 <= f <= 1.0


def test_single_spike_is_suppressed() -> None:
    x = torch.zeros(64, 64)
    x[3, 7] = 1.0
    assert rms_brake_factor(x, 3.0).item() < 1e-6


def test_no_overflow_for_large_sqrt_n_over_tau() -> None:
    x = torch.zeros(1024, 1024)
    x[0, 0] = 5.0
    f = rms_brake_factor(x, 0.1)
    assert torch.isfinite(f) and f.item() >= 0.0
    z = rms_brake_factor(torch.zeros(8, 8), 3.0)  # all zeros: finite
    assert torch.isfinite(z)


def test_reference_rms_formula() -> None:
    torch.manual_seed(1)
    tau = 2.0
    z = torch.randn(2_000_000, dtype=torch.float64) / tau
    mc = torch.sqrt(torch.mean(torch.cosh(z) ** 2)).item()
    assert abs(mc - brake_reference_rms(tau)) < 2e-3


def test_optimizer_brake_matches_factor() -> None:
    torch.manual_seed(2)
    g = torch.zeros(32, 32)
    g[1, 2] = 3.0
    g += 1e-3 * torch.randn(32, 32)
    a = torch.nn.Parameter(torch.zeros(32, 32))
    b = torch.nn.Parameter(torch.zeros(32, 32))
    oa = AuON([a], lr=1.0, momentum=0.0, brake="rms")
    ob = AuON([b], lr=1.0, momentum=0.0)
    a.grad, b.grad = g, g.clone()
    oa.step()
    ob.step()
    factor = rms_brake_factor(g, 3.0)
    assert factor.item() < 0.01
    # atol=0: braked entries lie far below the default atol (1e-5), which would pass anything.
    # rtol=1e-5: the step folds the factor into one fp32 coefficient, the reference evaluates it
    # apart and multiplies after; the two differ by a few fp32 ulps (2.1e-6 seen), not more.
    torch.testing.assert_close(a.detach(), b.detach() * factor, atol=0.0, rtol=1e-5)
