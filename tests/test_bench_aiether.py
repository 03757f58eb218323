"""The aiether growth benchmark's accounting: FLOPs per step, the FLOP-matched schedule and the
compute-to-target reading of a validation curve."""

from __future__ import annotations

import pytest

from aiether import AIetherGPT
from benchmarks._aiether_growth import Size, flops_to_reach, gpt_config, growth_schedule, step_flops

SIZE = Size(
    d=16, heads=2, l_max=4, seq=8, batch=2, budget_steps=100, schedule_fracs=(0.2, 0.4, 0.6)
)


def test_step_flops_follow_the_spec_formula() -> None:
    model = AIetherGPT(gpt_config(SIZE))
    flops = step_flops(model, SIZE)
    block = 16 * 16 * 16 + 16 * 13 + 16 * 2  # 16d² weights, 3d+d+8d+d biases, two norms
    tokens = 2 * 8
    for depth in (1, 4):
        want = 6 * (depth * block + 16) * tokens + 12 * depth * 16 * 8 * tokens
        assert flops[depth] == want


def test_the_schedule_grows_at_the_budget_fractions_and_spends_the_budget() -> None:
    model = AIetherGPT(gpt_config(SIZE))
    flops = step_flops(model, SIZE)
    steps, total = growth_schedule(flops, SIZE)
    budget = SIZE.budget_steps * flops[4]
    done, depth, crossings = 0, 1, []
    for s in range(total):
        done += flops[depth]
        if s in steps:
            crossings.append(done / budget)
            depth += 1
    assert len(steps) == 3
    for got, want in zip(crossings, SIZE.schedule_fracs, strict=True):
        assert want <= got < want + flops[4] / budget
    assert done >= budget > done - flops[4]
    assert total > SIZE.budget_steps  # shallower steps are cheaper: more of them


def test_flops_to_reach_interpolates_and_reports_misses() -> None:
    curve = [{"flops_frac": 0.5, "val_bpb": 3.0}, {"flops_frac": 1.0, "val_bpb": 2.0}]
    assert flops_to_reach(curve, 2.5) == pytest.approx(0.75)
    assert flops_to_reach(curve, 3.5) == pytest.approx(0.5)
    assert flops_to_reach(curve, 1.9) is None
