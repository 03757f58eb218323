"""Per-token halting (spec §3.1 "Halting", §4): compact batch, independence, invariants."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from inl_llm import INLConfig, INLLayer
from inl_llm.functional import inl_step, stable_coefficients

D = 12


def _layer(noise: float = 0.5, *, keep_out_weight: bool = False, **options: object) -> INLLayer:
    base: dict[str, object] = {
        "d_model": D,
        "num_iterations": 8,
        "controller_hidden": 16,
        "halting": "threshold",
        "halt_eps": 0.06,
        "min_iterations": 2,
        "output_gate_init": 1.0,
    }
    base.update(options)
    torch.manual_seed(0)
    layer = INLLayer(INLConfig(**base)).double()  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not (keep_out_weight and name == "controller.out.weight"):
                p.add_(noise * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return layer


def _inputs(b: int = 3, s: int = 7, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, s, D, generator=gen, dtype=torch.float64) * torch.rand(
        b, s, 1, generator=gen, dtype=torch.float64
    ).mul(3)
    return x0, torch.randn(b, s, D, generator=gen, dtype=torch.float64)


def _masked_full_path(
    layer: INLLayer, x0: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token iterates every step; halted tokens are frozen with ``torch.where``."""
    cfg = layer.config
    assert layer.controller is not None
    ctx = layer.controller.context(h)
    mu = layer.equilibrium()
    x, v = x0, torch.zeros_like(x0)
    running = torch.ones(x0.shape[:2], dtype=torch.bool)
    iterations = torch.zeros(x0.shape[:2], dtype=torch.long)
    for t in range(1, cfg.num_iterations + 1):
        raw = layer.controller(ctx, x, v)
        a, b, g = stable_coefficients(
            raw[..., 0, :],
            raw[..., 1, :],
            raw[..., 2, :],
            alpha_max=cfg.alpha_max,
            p_margin=cfg.p_margin,
            dt=cfg.dt,
        )
        x_new, v_new = inl_step(x, v, mu, a, b, g, cfg.dt)
        rel = (x_new - x).norm(dim=-1) / (x0.norm(dim=-1) + 1e-6)
        keep = running.unsqueeze(-1)
        x, v = torch.where(keep, x_new, x), torch.where(keep, v_new, v)
        iterations = iterations + running.long()
        if t >= cfg.min_iterations:
            running = running & (rel >= cfg.halt_eps)
    return layer.gate * (x - x0), iterations


def test_tokens_halt_at_different_steps_and_compact_equals_masked_full_path() -> None:
    layer = _layer()
    x0, h = _inputs()
    out, stats = layer(x0, h, return_stats=True)
    counts = stats.iterations.unique().tolist()
    assert len(counts) >= 3 and min(counts) >= 2 and max(counts) == 8, counts
    expected, iterations = _masked_full_path(layer, x0, h)
    assert torch.equal(stats.iterations, iterations)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_compact_path_gradients_equal_the_masked_full_path() -> None:
    layer = _layer()
    x0, h = _inputs()
    weight = torch.randn_like(x0)
    grads = []
    for fn in (lambda: layer(x0, h), lambda: _masked_full_path(layer, x0, h)[0]):
        layer.zero_grad()
        (fn() * weight).sum().backward()
        grads.append([p.grad.clone() for p in layer.parameters()])  # type: ignore[union-attr]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_halted_tokens_do_not_change_afterwards() -> None:
    short = _layer(num_iterations=5)
    long = _layer(num_iterations=8)
    long.load_state_dict(short.state_dict())
    x0, h = _inputs()
    out5, s5 = short(x0, h, return_stats=True)
    out8, s8 = long(x0, h, return_stats=True)
    halted = s5.iterations < 5
    assert halted.any()
    assert torch.equal(s8.iterations[halted], s5.iterations[halted])
    assert torch.equal(out8[halted], out5[halted])
    assert not torch.allclose(out8[~halted], out5[~halted])


def test_a_token_alone_equals_the_token_inside_a_batch() -> None:
    # A well-conditioned layer (outputs O(1)): strongly perturbed controllers show large transient
    # growth of the state-dependent system, which would amplify float32 rounding far past 1e-6.
    layer = _layer(noise=0.5, keep_out_weight=True, halt_eps=0.15).float()
    x0, h = (t.float() for t in _inputs(b=4, s=9))
    out, stats = layer(x0, h, return_stats=True)
    assert len(stats.iterations.unique()) >= 3, (
        stats.iterations.unique()
    )  # the batch mixes tokens that halt at different steps
    assert out.abs().max() < 10
    for b, s in [(0, 0), (1, 4), (3, 8), (2, 5)]:
        alone, st = layer(x0[b : b + 1, s : s + 1], h[b : b + 1, s : s + 1], return_stats=True)
        torch.testing.assert_close(alone[0, 0], out[b, s], rtol=1e-6, atol=1e-6)
        assert st.iterations[0, 0] == stats.iterations[b, s]


def test_masked_tokens_cost_nothing_and_get_zero_update() -> None:
    layer = _layer()
    x0, h = _inputs()
    mask = torch.rand(x0.shape[:2], generator=torch.Generator().manual_seed(3)) > 0.4
    calls: list[int] = []
    assert layer.controller is not None
    layer.controller.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    out, stats = layer(x0, h, mask=mask, return_stats=True)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    assert (stats.iterations[~mask] == 0).all()
    # The controller only ever sees real, still-running tokens.
    assert calls[0] == int(mask.sum())
    assert calls == sorted(calls, reverse=True) and calls[-1] < calls[0]
    assert sum(calls) == int(stats.iterations.sum())
    full, _ = layer(x0, h, return_stats=True)
    torch.testing.assert_close(out[mask], full[mask], rtol=1e-12, atol=1e-12)


def test_same_rule_in_train_and_eval_and_no_state_mutation() -> None:
    layer = _layer()
    x0, h = _inputs()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    a, sa = layer.train()(x0, h, return_stats=True)
    b, sb = layer.eval()(x0, h, return_stats=True)
    assert torch.equal(a, b) and torch.equal(sa.iterations, sb.iterations)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


def test_random_depth_training_samples_T_in_range() -> None:
    layer = _layer(random_depth_training=True, halt_eps=1e-12, min_iterations=2)
    x0, h = _inputs()
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        _, stats = layer.train()(x0, h, return_stats=True)
        seen.update(stats.iterations.unique().tolist())
    assert seen == set(range(2, 9))
    _, stats = layer.eval()(x0, h, return_stats=True)
    assert (stats.iterations == 8).all()


def test_fixed_path_stats_and_trajectory() -> None:
    layer = _layer(halting="none")
    x0, h = _inputs()
    out, stats = layer(x0, h, return_stats=True, return_trajectory=True)
    assert (stats.iterations == 8).all()
    assert stats.trajectory is not None
    last = stats.trajectory[-1]
    torch.testing.assert_close(out, layer.gate * (last - x0))
    expected = (last - stats.trajectory[-2]).norm(dim=-1) / (x0.norm(dim=-1) + 1e-6)
    torch.testing.assert_close(stats.step_norm, expected)
    halting = _layer()
    with pytest.raises(ValueError, match="return_trajectory"):
        halting(x0, h, return_trajectory=True)


def test_with_min_iterations_equal_to_T_halting_equals_the_fixed_path() -> None:
    layer = _layer(min_iterations=8)
    fixed = INLLayer(dataclasses.replace(layer.config, halting="none")).double()
    fixed.load_state_dict(layer.state_dict())
    x0, h = _inputs()
    torch.testing.assert_close(layer(x0, h), fixed(x0, h), rtol=1e-12, atol=1e-12)


def test_halting_fires_as_a_token_converges_to_mu_zero() -> None:
    # At the default init (μ = 0) x contracts geometrically towards 0. A step measured against the
    # shrinking state, ‖x_t − x_{t−1}‖ / ‖x_{t−1}‖, would stay constant (≈ 1 − ρ) and never fall
    # below 1e-2; measured against ‖x₀‖ it decays like ρ^t, so every token halts before T = 50.
    layer = INLLayer(
        INLConfig(d_model=64, num_iterations=50, halting="threshold", halt_eps=1e-2)
    ).eval()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.nn.functional.rms_norm(torch.randn(2, 16, 64, generator=gen), (64,))
    h = torch.randn(2, 16, 64, generator=gen)
    _, stats = layer(x0, h, return_stats=True)
    assert (stats.iterations < 50).all(), stats.iterations
    assert (stats.step_norm < 1e-2).all()
    fixed = INLLayer(dataclasses.replace(layer.config, halting="none")).eval()
    fixed.load_state_dict(layer.state_dict())
    _, fixed_stats = fixed(x0, h, return_stats=True, return_trajectory=True)
    traj = fixed_stats.trajectory
    assert traj is not None
    against_state = (traj[1:] - traj[:-1]).norm(dim=-1) / traj[:-1].norm(dim=-1)
    assert (against_state[-1] > 1e-2).all()  # the spec's denominator would never halt here
