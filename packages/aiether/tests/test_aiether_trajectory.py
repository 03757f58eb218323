"""Trajectory statistics: calibration (straight lines, random walks, drift plus noise), Gram ==
direct formulas, the CountSketch within 5%, ring-buffer order, aggregation and persistence."""

from __future__ import annotations

import math

import pytest
import torch

from aiether._metrics import gram_tau_kappa, normalise_tau_kappa, velocity_gram
from aiether.trajectory import TrajectoryTracker


def _direct_tau_kappa(history: torch.Tensor, eps: float = 1e-8) -> tuple[float, float]:
    """τ and κ from the vectors themselves (no Gram), float64."""
    w = history.double().reshape(history.shape[0], -1)
    v = w[1:] - w[:-1]
    delta = w[-1] - w[0]
    dn = float(delta.norm())
    tau = float(v.norm(dim=1).sum()) / (dn + eps)
    if w.shape[0] < 3 or dn < eps:
        return tau, 0.0
    unit = delta / dn
    along = v @ unit
    perp = v - along[:, None] * unit[None, :]
    return tau, float(perp.norm(dim=1).sum()) / (float(along.abs().sum()) + eps)


def _tau_kappa(history: torch.Tensor) -> tuple[float, float]:
    tau, kappa = gram_tau_kappa(velocity_gram(history.double()))
    return float(tau), float(kappa)


def _drift_plus_noise(ratio: float, t: int = 14, d: int = 20_000, seed: int = 0) -> torch.Tensor:
    """S = t + 1 snapshots; each step moves by a fixed drift plus fresh noise, ‖drift‖/‖noise‖ = ratio."""
    g = torch.Generator().manual_seed(seed)
    drift = torch.randn(d, generator=g, dtype=torch.float64)
    drift *= ratio / drift.norm()
    steps = torch.randn(t, d, generator=g, dtype=torch.float64)
    steps = steps / steps.norm(dim=1, keepdim=True) + drift
    return torch.cat([torch.zeros(1, d, dtype=torch.float64), steps.cumsum(0)])


def test_a_straight_line_has_tau_one_and_kappa_zero() -> None:
    direction = torch.randn(50, dtype=torch.float64)
    speeds = torch.tensor([0.0, 1.0, 3.0, 3.5, 7.0, 7.2], dtype=torch.float64)
    tau, kappa = _tau_kappa(speeds[:, None] * direction[None, :])
    assert tau == pytest.approx(1.0, abs=1e-9)
    assert kappa == pytest.approx(0.0, abs=1e-7)


def test_a_random_walk_is_calibrated_to_sqrt_t() -> None:
    t = 14
    for seed in range(3):
        walk = _drift_plus_noise(0.0, t=t, seed=seed)
        tau, kappa = _tau_kappa(walk)
        assert tau / math.sqrt(t) == pytest.approx(1.0, rel=0.03)
        assert kappa / math.sqrt(t - 1) == pytest.approx(1.0, rel=0.03)
        tau_n, kappa_n = normalise_tau_kappa(torch.tensor(tau), torch.tensor(kappa), t)
        assert float(tau_n) == pytest.approx(1.0, rel=0.03)
        assert float(kappa_n) == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize(
    ("ratio", "tau", "kappa"), [(0.5, 1.97, 1.7), (1.0, 1.36, 0.93), (2.0, 1.11, 0.48)]
)
def test_drift_plus_noise_matches_the_published_calibration(
    ratio: float, tau: float, kappa: float
) -> None:
    got_tau, got_kappa = _tau_kappa(_drift_plus_noise(ratio))
    assert got_tau == pytest.approx(tau, abs=0.1)
    assert got_kappa == pytest.approx(kappa, abs=0.1)


@pytest.mark.parametrize("shape", [(6, 5, 7), (6, 9), (2, 4), (3, 4), (1, 4)])
def test_gram_formulas_equal_the_direct_ones(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    history = torch.randn(*shape, dtype=torch.float64).cumsum(0)
    tau, kappa = _tau_kappa(history.reshape(shape[0], -1))
    want_tau, want_kappa = _direct_tau_kappa(history) if shape[0] > 1 else (1.0, 0.0)
    assert tau == pytest.approx(want_tau, abs=1e-10, rel=1e-10)
    assert kappa == pytest.approx(want_kappa, abs=1e-10, rel=1e-10)


def test_no_displacement_gives_kappa_zero() -> None:
    w = torch.randn(4, 10, dtype=torch.float64)
    closed = torch.stack([w[0], w[1], w[2], w[0]])
    _, kappa = _tau_kappa(closed)
    assert kappa == 0.0


def _feed(tracker: TrajectoryTracker, p: torch.Tensor, history: torch.Tensor) -> None:
    for row in history:
        with torch.no_grad():
            p.copy_(row.reshape(p.shape))
        tracker.snapshot()


def test_the_ring_keeps_the_last_window_in_time_order() -> None:
    p = torch.zeros(3, 2)
    tracker = TrajectoryTracker([("w", p)], window=4, dtype=torch.float32)
    history = torch.arange(7 * 6, dtype=torch.float32).reshape(7, 6)
    _feed(tracker, p, history)
    assert tracker.num_snapshots == 4
    torch.testing.assert_close(tracker.history("w"), history[3:].reshape(4, 3, 2))
    tracker.clear()
    assert tracker.num_snapshots == 0


def test_tracker_metrics_equal_the_direct_formulas_and_aggregate_by_numel() -> None:
    torch.manual_seed(1)
    a, b = torch.zeros(8, 4), torch.zeros(3)
    tracker = TrajectoryTracker({"a": a, "b": b}, window=6, dtype=torch.float32)
    ha = torch.randn(6, 32).cumsum(0)
    hb = torch.randn(6, 3).cumsum(0)
    for ra, rb in zip(ha, hb, strict=True):
        a.copy_(ra.reshape(8, 4))
        b.copy_(rb)
        tracker.snapshot()
    m = tracker.metrics()
    for name, h in (("a", ha), ("b", hb)):
        tau, kappa = _direct_tau_kappa(h)
        assert float(m[name].tau) == pytest.approx(tau, rel=1e-5)
        assert float(m[name].kappa) == pytest.approx(kappa, rel=1e-5)
        assert m[name].num_velocities == 5
    agg = tracker.aggregate(m)
    want = (32 * float(m["a"].tau) + 3 * float(m["b"].tau)) / 35
    assert float(agg.tau) == pytest.approx(want, rel=1e-6)
    unweighted = tracker.aggregate(m, weighted=False)
    assert float(unweighted.kappa) == pytest.approx((float(m["a"].kappa) + float(m["b"].kappa)) / 2)


def test_sketch_statistics_are_within_five_percent_at_2048_dims() -> None:
    d = 20_000
    p = torch.zeros(d)
    for ratio in (0.0, 1.0):
        history = _drift_plus_noise(ratio, d=d, seed=3).float()
        full = TrajectoryTracker([("w", p)], window=15, dtype=torch.float32)
        sketch = TrajectoryTracker([("w", p)], window=15, storage="sketch", sketch_dim=2048, seed=4)
        _feed(full, p, history)
        _feed(sketch, p, history)
        mf, ms = full.metrics()["w"], sketch.metrics()["w"]
        assert float(ms.tau) == pytest.approx(float(mf.tau), rel=0.05)
        assert float(ms.kappa) == pytest.approx(float(mf.kappa), rel=0.05)
    with pytest.raises(ValueError, match="storage='full'"):
        sketch.history("w")


def test_maybe_snapshot_follows_the_interval() -> None:
    p = torch.zeros(2)
    tracker = TrajectoryTracker([("w", p)], interval=10)
    taken = [s for s in range(35) if tracker.maybe_snapshot(s)]
    assert taken == [0, 10, 20, 30]


def test_state_dict_round_trip() -> None:
    p = torch.zeros(5)
    tracker = TrajectoryTracker([("w", p)], window=4, dtype=torch.float32)
    _feed(tracker, p, torch.randn(6, 5))
    other = TrajectoryTracker([("w", torch.zeros(5))], window=4, dtype=torch.float32)
    other.load_state_dict(tracker.state_dict())
    torch.testing.assert_close(other.history("w"), tracker.history("w"))
    assert float(other.metrics()["w"].tau) == float(tracker.metrics()["w"].tau)
    with pytest.raises(ValueError, match="do not match"):
        TrajectoryTracker([("v", torch.zeros(5))], window=4).load_state_dict(tracker.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 2}, "window"),
        ({"interval": 0}, "interval"),
        ({"storage": "disk"}, "storage"),
        ({"sketch_dim": 0}, "sketch_dim"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrajectoryTracker([("w", torch.zeros(2))], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nothing to track"):
        TrajectoryTracker([])


def test_bfloat16_storage_keeps_small_motion_of_weights_near_one() -> None:
    # a norm weight at 1.0 moving 1e-3 per snapshot: bf16 rounds 1.001 to 1.0, the delta it keeps
    p = torch.ones(64)
    tracker = TrajectoryTracker([("w", p)], window=6)  # default bfloat16
    history = 1.0 + 1e-3 * torch.arange(6, dtype=torch.float32)[:, None] * torch.ones(1, 64)
    _feed(tracker, p, history)
    m = tracker.metrics()["w"]
    assert float(m.tau) == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(tracker.history("w"), history, rtol=0, atol=1e-5)
