"""``energy`` and ``compute_alpha``: the oracle values of the spec and float64 gradchecks."""

from __future__ import annotations

import pytest
import torch

from aion_torch import compute_alpha, energy


@pytest.mark.parametrize(
    ("ratio", "expected"), [(0.5, 0.1 / 1.025), (0.0, 0.1), (100.0, 0.1 / 6.0)]
)
def test_compute_alpha_oracles(ratio: float, expected: float) -> None:
    out = compute_alpha(torch.tensor(0.1), torch.tensor(0.05), torch.tensor(ratio))
    torch.testing.assert_close(out, torch.tensor(expected))
    # the spec quotes 7 decimals: half a unit of the last one, plus fp32 rounding (< 1e-8)
    assert compute_alpha(0.1, 0.05, 0.5).item() == pytest.approx(0.0975610, abs=6e-8)
    assert compute_alpha(0.1, 0.05, 100.0).item() == pytest.approx(0.0166667, abs=6e-8)


def test_compute_alpha_beta_zero_dtype_and_broadcast() -> None:
    r = torch.tensor([0.0, 1.0, 10.0, 1e6], dtype=torch.float64)
    out = compute_alpha(torch.tensor(0.3, dtype=torch.float64), 0.0, r)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.full((4,), 0.3, dtype=torch.float64))
    vec = compute_alpha(torch.tensor([0.1, 0.2]), torch.tensor([0.05, 0.5]), torch.tensor(2.0))
    torch.testing.assert_close(vec, torch.tensor([0.1 / 1.1, 0.2 / 2.0]))


def test_compute_alpha_gradients_are_nonzero() -> None:
    a0 = torch.tensor(0.1, requires_grad=True)
    b = torch.tensor(0.05, requires_grad=True)
    compute_alpha(a0, b, torch.tensor(2.0)).backward()
    assert a0.grad is not None and b.grad is not None
    torch.testing.assert_close(a0.grad, torch.tensor(1 / 1.1))
    torch.testing.assert_close(b.grad, torch.tensor(-0.1 * 2.0 / 1.1**2))


def test_energy_oracle_and_dtypes() -> None:
    t = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(energy(t), torch.tensor([14.0 / 3.0]))
    assert energy(t, keepdim=False).shape == ()
    h = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float16)
    out = energy(h)
    assert out.dtype == torch.float16 and out.shape == (1, 1)
    torch.testing.assert_close(out, torch.tensor([[14.0 / 3.0]], dtype=torch.float16))
    d = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert energy(d).dtype == torch.float64
    torch.testing.assert_close(energy(torch.ones(2, 5, 4), dim=1), torch.ones(2, 1, 4))


def test_energy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="t must be a floating"):
        energy(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="cannot be empty"):
        energy(torch.zeros(3, 0))


def test_gradcheck_float64() -> None:
    t = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: energy(u, -1, True), (t,))
    a0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    r = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(compute_alpha, (a0, b, r))
