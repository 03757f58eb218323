"""The INL loop against closed forms and an independent float64 oracle (spec §2, §4)."""

from __future__ import annotations

import pytest
import torch
from _inl_oracle import oracle_loop

from inl_llm import INLConfig, INLLayer, SharedINLController
from inl_llm.functional import coefficients, fixed_point, inl_step, stable_coefficients

DT = 0.1


def test_closed_form_recursion_equals_the_unrolled_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    steps, shape = 12, (4, 7)
    raw = torch.randn(3, steps, *shape, generator=gen, dtype=torch.float64)
    alpha, beta, g = stable_coefficients(
        raw[0], raw[1], raw[2], alpha_max=0.95, p_margin=0.9, dt=DT
    )
    mu = torch.randn(shape, generator=gen, dtype=torch.float64)
    x0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    x, v = x0, torch.zeros_like(x0)
    for t in range(steps):
        x, v = inl_step(x, v, mu, alpha[t], beta[t], g[t], DT)
    c, d = coefficients(alpha, beta, g, DT)
    assert c.shape == (steps + 1, *shape)
    torch.testing.assert_close(x, mu + c[-1] * (x0 - mu), rtol=0, atol=1e-12)
    torch.testing.assert_close(v, d[-1] * (x0 - mu), rtol=0, atol=1e-12)
    assert (c[0] == 1).all() and (d[0] == 0).all()


def test_coefficients_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="share one shape"):
        coefficients(torch.ones(3, 2), torch.ones(3, 2), torch.ones(2, 2), DT)


def test_full_variant_with_frozen_coefficients_reaches_its_fixed_point() -> None:
    gen = torch.Generator().manual_seed(2)
    raw = torch.randn(3, 16, generator=gen, dtype=torch.float64)
    alpha, beta, g = stable_coefficients(raw[0], raw[1], raw[2], alpha_max=0.9, p_margin=0.9, dt=DT)
    # Keep the slowest mode fast enough for 500 steps: p away from 0.
    beta = beta.clamp_min(2.0)
    mu = torch.randn(16, generator=gen, dtype=torch.float64)
    v_cand = torch.randn(16, generator=gen, dtype=torch.float64)
    x, v = torch.randn(16, generator=gen, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    for _ in range(500):
        x, v = inl_step(x, v, mu, alpha, beta, g, DT, v_cand=v_cand)
    torch.testing.assert_close(x, fixed_point(mu, alpha, beta, v_cand), rtol=0, atol=1e-8)
    torch.testing.assert_close(v, torch.zeros_like(v), rtol=0, atol=1e-8)


def _randomise(layer: INLLayer, seed: int) -> None:
    """Move every parameter off its init so the oracle comparison exercises all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


CONFIGS = [
    {},
    {"variant": "full"},
    {"variant": "full", "excitation": "sparse", "excitation_amplitude": 0.5},
    {"mu_mode": "per_dim"},
    {"compat": "reference"},
    {"group_size": 5},
]


@pytest.mark.parametrize(
    "options", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
@pytest.mark.parametrize("training", [False, True])
def test_layer_equals_the_float64_oracle(options: dict[str, object], training: bool) -> None:
    torch.manual_seed(0)
    cfg = INLConfig(d_model=12, num_iterations=4, controller_hidden=16, **options)  # type: ignore[arg-type]
    layer = INLLayer(cfg).double().train(training)
    _randomise(layer, 3)
    x0, h = torch.randn(2, 3, 12, dtype=torch.float64), torch.randn(2, 3, 12, dtype=torch.float64)
    expected = oracle_loop(layer, x0, h)
    if cfg.compat != "reference":
        expected = layer.gate.double() * (expected - x0)
    torch.testing.assert_close(layer(x0, h), expected, rtol=1e-12, atol=1e-12)


def test_shared_controller_layer_equals_the_oracle() -> None:
    torch.manual_seed(0)
    cfg = INLConfig(d_model=8, num_iterations=3, controller_hidden=8, controller_scope="shared")
    shared = SharedINLController(cfg).double()
    layer = INLLayer(cfg, shared=shared).double()
    _randomise(layer, 4)
    _randomise(shared, 5)  # type: ignore[arg-type]
    x0, h = torch.randn(3, 2, 8, dtype=torch.float64), torch.randn(3, 2, 8, dtype=torch.float64)
    expected = layer.gate.double() * (oracle_loop(layer, x0, h) - x0)
    torch.testing.assert_close(layer(x0, h), expected, rtol=1e-12, atol=1e-12)


def test_hierarchical_output_is_an_elementwise_rescaling_of_x0_minus_mu() -> None:
    # With the coefficients the layer itself computes, x_T − μ = c_T⊙(x₀ − μ) (spec §2).
    torch.manual_seed(0)
    cfg = INLConfig(d_model=6, num_iterations=5, controller_hidden=8, mu_mode="per_dim")
    layer = INLLayer(cfg).double()
    _randomise(layer, 6)
    x0, h = torch.randn(1, 4, 6, dtype=torch.float64), torch.randn(1, 4, 6, dtype=torch.float64)
    _, stats = layer(x0, h, return_stats=True, return_trajectory=True)
    assert stats.trajectory is not None and stats.trajectory.shape == (6, 1, 4, 6)
    mu = layer.equilibrium().double()
    # Recover each step's coefficients from the controller on the recorded trajectory.
    assert layer.controller is not None
    ctx = layer.controller.context(h)
    x, v = x0, torch.zeros_like(x0)
    alphas, betas, gs = [], [], []
    for _ in range(5):
        raw = layer.controller(ctx, x, v)
        a, b, g = stable_coefficients(
            raw[..., 0, :],
            raw[..., 1, :],
            raw[..., 2, :],
            alpha_max=cfg.alpha_max,
            p_margin=cfg.p_margin,
            dt=cfg.dt,
        )
        alphas.append(a)
        betas.append(b)
        gs.append(g)
        x, v = inl_step(x, v, mu, a, b, g, cfg.dt)
    c, _ = coefficients(torch.stack(alphas), torch.stack(betas), torch.stack(gs), cfg.dt)
    torch.testing.assert_close(stats.trajectory[-1], mu + c[-1] * (x0 - mu), rtol=1e-12, atol=1e-12)
