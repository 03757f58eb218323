"""GrowthTrigger: the geometric and plateau conditions, patience, the blocks (min_step, warm-up,
cooldown, full depth), schedules, the reference rule and state round trips."""

from __future__ import annotations

import pytest
import torch

from aiether.trajectory import TrajectoryMetrics
from aiether.trigger import GrowthTrigger


def _m(
    tau_n: float, kappa_n: float, t: int = 14, raw: tuple[float, float] | None = None
) -> TrajectoryMetrics:
    tau, kappa = raw if raw is not None else (tau_n * t**0.5, kappa_n * (t - 1) ** 0.5)
    return TrajectoryMetrics(
        torch.tensor(tau), torch.tensor(kappa), torch.tensor(tau_n), torch.tensor(kappa_n), t
    )


def _ask(
    trigger: GrowthTrigger,
    step: int,
    metrics: TrajectoryMetrics | None,
    loss: float | None,
    **kw: object,
) -> bool:
    args = {"num_active": 1, "max_layers": 4, "in_warmup": False, **kw}
    return trigger.should_grow(step, metrics, loss, **args)  # type: ignore[arg-type]


def test_geometric_needs_both_statistics_for_patience_evaluations() -> None:
    trigger = GrowthTrigger("geometric", patience=2)
    assert not _ask(trigger, 1, _m(0.9, 0.9), 1.0)
    assert not _ask(trigger, 2, _m(0.9, 0.5), 1.0)  # κ̃ below: the counter resets
    assert not _ask(trigger, 3, _m(0.9, 0.9), 1.0)
    assert _ask(trigger, 4, _m(0.85, 0.81), 1.0)
    assert trigger.last_growth == 4
    assert trigger.counter == 0


def test_too_few_snapshots_never_trigger() -> None:
    trigger = GrowthTrigger("geometric", patience=1)
    assert not _ask(trigger, 1, _m(5.0, 5.0, t=1), 1.0)
    assert not _ask(trigger, 2, None, 1.0)


def test_plateau_compares_against_plateau_window_evaluations_ago() -> None:
    trigger = GrowthTrigger("plateau", patience=1, plateau_threshold=0.01, plateau_window=2)
    losses = [3.0, 2.5, 2.0, 1.99, 1.985]
    decisions = [_ask(trigger, i, None, loss) for i, loss in enumerate(losses)]
    # at i=3: (2.5 − 1.99)/2.5 = 0.2 ≥ 0.01; at i=4: (2.0 − 1.985)/2.0 = 0.0075 < 0.01
    assert decisions == [False, False, False, False, True]


def test_geometric_plus_plateau_needs_both() -> None:
    trigger = GrowthTrigger(patience=1, plateau_window=1)
    assert not _ask(trigger, 0, _m(1.0, 1.0), 2.0)
    assert not _ask(trigger, 1, _m(1.0, 1.0), 1.0)  # noisy but still improving fast
    assert not _ask(trigger, 2, _m(0.2, 0.2), 1.0)  # plateau but still a clear direction
    assert _ask(trigger, 3, _m(1.0, 1.0), 1.0)


def test_non_evaluation_steps_do_not_count() -> None:
    trigger = GrowthTrigger("geometric", patience=2)
    assert not _ask(trigger, 1, _m(1.0, 1.0), 1.0)
    assert not _ask(trigger, 2, _m(1.0, 1.0), None)
    assert trigger.counter == 1


@pytest.mark.parametrize(
    ("kwargs", "ask", "why"),
    [
        ({"min_step": 10}, {"step": 5}, "before min_step"),
        ({}, {"in_warmup": True}, "warm-up"),
        ({}, {"num_active": 4}, "full depth"),
        ({"max_layers": 2}, {"num_active": 2}, "the trigger's max_layers"),
    ],
)
def test_blocks(kwargs: dict[str, object], ask: dict[str, object], why: str) -> None:
    trigger = GrowthTrigger("geometric", patience=1, **kwargs)  # type: ignore[arg-type]
    step = int(ask.pop("step", 20))  # type: ignore[call-overload]
    assert not _ask(trigger, step, _m(1.0, 1.0), 1.0, **ask), why


def test_cooldown() -> None:
    trigger = GrowthTrigger("geometric", patience=1, cooldown_steps=10)
    assert _ask(trigger, 5, _m(1.0, 1.0), 1.0)
    assert not _ask(trigger, 14, _m(1.0, 1.0), 1.0)
    assert _ask(trigger, 15, _m(1.0, 1.0), 1.0)


def test_schedule_grows_at_the_given_steps_even_during_a_warm_up() -> None:
    trigger = GrowthTrigger("schedule", schedule=(7, 3))
    grown = [s for s in range(12) if _ask(trigger, s, None, None, in_warmup=True)]
    assert grown == [3, 7]
    late = GrowthTrigger("schedule", schedule=(3,))
    assert not _ask(late, 3, None, None, num_active=4)  # full: skipped, still due
    assert _ask(late, 4, None, None, num_active=2)


def test_reference_mode_thresholds_default_to_zero_and_use_raw_values() -> None:
    trigger = GrowthTrigger("reference", patience=3)
    assert trigger.tau_crit == 0.0
    assert trigger.kappa_crit == 0.0
    grown = [s for s in range(9) if _ask(trigger, s, _m(0.1, 0.1, raw=(1.2, 0.1)), 1.0)]
    assert grown == [2, 5, 8]  # every `patience` evaluations, as the original
    strict = GrowthTrigger("reference", tau_crit=2.0, kappa_crit=0.0, patience=1)
    assert not _ask(strict, 0, _m(5.0, 5.0, raw=(1.5, 3.0)), 1.0)


def test_state_round_trip() -> None:
    trigger = GrowthTrigger("geometric+plateau", patience=3)
    for s, loss in enumerate([3.0, 2.0, 1.9]):
        _ask(trigger, s, _m(1.0, 1.0), loss)
    other = GrowthTrigger("geometric+plateau", patience=3)
    other.load_state_dict(trigger.state_dict())
    assert other.state_dict() == trigger.state_dict()
    with pytest.raises(ValueError, match="mode"):
        GrowthTrigger("plateau").load_state_dict(trigger.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "sometimes"}, "mode"),
        ({"tau_crit": -1.0}, "tau_crit"),
        ({"kappa_crit": float("nan")}, "kappa_crit"),
        ({"patience": 0}, "patience"),
        ({"plateau_window": 0}, "plateau_window"),
        ({"cooldown_steps": -1}, "cooldown_steps"),
        ({"mode": "schedule"}, "schedule"),
        ({"schedule": (-1,)}, "schedule"),
        ({"max_layers": 0}, "max_layers"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GrowthTrigger(**kwargs)  # type: ignore[arg-type]
