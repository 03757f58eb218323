"""GrowthController with GrowthAwareLR on our GPT: scheduled growth with equal probe losses,
isolated warm-up multipliers, re-warm values and an unchanged horizon, optimiser-state transfer,
operators, layer states, parameter groups, and exact resume after a growth."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _aiether_tiny import TINY, batch, tiny_gpt
from torch import nn

from aiether import (
    GeometricExtrapolator,
    GrowthAwareLR,
    GrowthController,
    GrowthTrigger,
    LayerStateManager,
    TrajectoryTracker,
    initialise_block,
    load_growth_state,
    param_groups,
    save_growth_state,
)
from aiether.model import AIetherGPT
from aiether.stack import GrowableStack

STEPS = 30


def _cosine(t: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(t, STEPS) / STEPS))


def _probe(model: nn.Module) -> torch.Tensor:
    x, y = batch(seed=99)
    _, loss = model(x, y)
    return loss  # type: ignore[no-any-return]


def _setup(
    model: AIetherGPT, *, schedule: tuple[int, ...] = (5, 12), **controller_kwargs: Any
) -> tuple[torch.optim.AdamW, GrowthController, GrowthAwareLR]:
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3)
    kwargs: dict[str, Any] = {
        "operator": "geometric",
        "isolated_warmup_steps": 4,
        "isolated_lr_mult": 0.25,
        "rewarm_steps": 4,
        "rewarm_from": 0.5,
        "probe": _probe,
        **controller_kwargs,
    }
    tracker = TrajectoryTracker([("w", torch.zeros(1))], window=5, interval=1, dtype=torch.float32)
    controller = GrowthController(
        model, opt, tracker=tracker, trigger=GrowthTrigger("schedule", schedule=schedule), **kwargs
    )
    sched = GrowthAwareLR(opt, _cosine, controller)
    return opt, controller, sched


def _train(
    model: AIetherGPT, opt: Any, controller: GrowthController, sched: Any, steps: range
) -> list[float]:
    losses = []
    for step in steps:
        x, y = batch(seed=1000 + step)
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        controller.step(step)
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def test_scheduled_growth_preserves_the_probe_loss_and_records_events() -> None:
    model = tiny_gpt()
    opt, controller, sched = _setup(model)
    _train(model, opt, controller, sched, range(STEPS))
    assert [e.step for e in controller.events] == [5, 12]
    assert [e.slot for e in controller.events] == [2, 1]
    assert [e.source for e in controller.events] == [3, 2]
    for e in controller.events:
        assert e.operator == "geometric"
        assert e.probe_loss_before is not None
        assert e.probe_loss_after == pytest.approx(e.probe_loss_before, abs=1e-6)
        assert e.tau is not None
        assert e.parameters["beta0"] == 0.02
    assert model.h.active_slots == [1, 2, 3]  # type: ignore[union-attr]


def test_copy_growth_without_preservation_changes_the_probe_loss() -> None:
    model = tiny_gpt(preserve="none")
    opt, controller, sched = _setup(model, operator="copy")
    _train(model, opt, controller, sched, range(8))
    e = controller.events[0]
    assert abs(e.probe_loss_after - e.probe_loss_before) > 1e-4  # type: ignore[operator]


def test_growth_warns_when_the_zeroed_projections_miss_a_sublayer() -> None:
    model = tiny_gpt()
    model.h.out_proj_names = ("attn.c_proj",)  # type: ignore[union-attr]  # the MLP's is missing
    opt, controller, sched = _setup(model, operator="copy")
    with pytest.warns(RuntimeWarning, match=r"probe loss .* out_proj_names=\('attn.c_proj',\)"):
        _train(model, opt, controller, sched, range(8))
    e = controller.events[0]
    assert e.probe_loss_after != e.probe_loss_before


def test_isolated_warm_up_and_rewarm_learning_rates() -> None:
    model = tiny_gpt()
    opt, controller, sched = _setup(model, schedule=(5,))
    lrs: dict[int, dict[str, float]] = {}
    for step in range(12):
        x, y = batch(seed=step)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        controller.step(step)
        sched.step()
        lrs[step + 1] = {g["name"]: g["lr"] for g in opt.param_groups}
    base = 3e-3
    # the first step after the growth at 5 runs at rewarm_from; old blocks also at lr_mult 0.25
    assert lrs[6]["block.2"] == pytest.approx(base * _cosine(6) * 0.5)
    assert lrs[6]["block.3"] == pytest.approx(base * _cosine(6) * 0.5 * 0.25)
    assert lrs[6]["other"] == pytest.approx(base * _cosine(6) * 0.5)
    assert lrs[8]["block.2"] == pytest.approx(base * _cosine(8) * (0.5 + 0.5 * 2 / 4))
    # warm-up of 4 steps after step 5: steps 6..9 isolated, 10 back to 1; rewarm done at 10
    assert lrs[9]["block.3"] == pytest.approx(base * _cosine(9) * (0.5 + 0.5 * 3 / 4) * 0.25)
    assert lrs[10]["block.3"] == pytest.approx(base * _cosine(10))
    assert lrs[11]["block.0"] == pytest.approx(base * _cosine(11))


def test_final_lr_equals_a_run_without_growth() -> None:
    grown = tiny_gpt()
    opt_g, ctl_g, sched_g = _setup(grown)
    _train(grown, opt_g, ctl_g, sched_g, range(20))
    static = tiny_gpt()
    opt_s = torch.optim.AdamW(param_groups(static, 0.1), lr=3e-3)
    sched_s = GrowthAwareLR(opt_s, _cosine)
    for _ in range(20):
        opt_s.step()
        sched_s.step()
    assert [g["lr"] for g in opt_g.param_groups] == pytest.approx(
        [g["lr"] for g in opt_s.param_groups]
    )


@pytest.mark.parametrize("mode", ["none", "second_moment", "full"])
def test_state_transfer_modes(mode: str) -> None:
    model = tiny_gpt()
    opt, controller, sched = _setup(model, state_transfer=mode, schedule=(4,))
    _train(model, opt, controller, sched, range(5))  # grows after the optimiser step of step 4
    assert [e.step for e in controller.events] == [4]
    stack = model.h
    assert isinstance(stack, GrowableStack)
    src = dict(stack[3].named_parameters())
    for name, p_new in stack[2].named_parameters():
        state = opt.state.get(p_new)
        if mode == "none":
            assert not state, name
            continue
        src_state = opt.state[src[name]]
        torch.testing.assert_close(state["exp_avg_sq"], src_state["exp_avg_sq"], rtol=0, atol=0)
        assert float(state["step"]) == float(src_state["step"])
        if mode == "full":
            torch.testing.assert_close(state["exp_avg"], src_state["exp_avg"], rtol=0, atol=0)
        else:
            assert float(state["exp_avg"].abs().max()) == 0.0


def test_operators_copy_random_and_reference() -> None:
    model = tiny_gpt()
    stack = model.h
    assert isinstance(stack, GrowableStack)
    before = {k: v.clone() for k, v in stack[0].state_dict().items()}
    initialise_block("random", stack[0], stack[3])
    assert all(torch.equal(v, before[k]) for k, v in stack[0].state_dict().items())
    initialise_block("copy", stack[1], stack[3])
    assert all(torch.equal(v, stack[3].state_dict()[k]) for k, v in stack[1].state_dict().items())
    with pytest.raises(ValueError, match="storage='full'"):
        initialise_block("geometric", stack[2], stack[3])
    # reference: per tensor, what GeometricExtrapolator(mode="reference") gives on the history
    tracker = TrajectoryTracker(
        stack[3].named_parameters(), window=6, interval=1, dtype=torch.float32
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        with torch.no_grad():
            for p in stack[3].parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01 + 0.005)
        tracker.snapshot()
    initialise_block("reference", stack[2], stack[3], tracker=tracker)
    ex = GeometricExtrapolator(0.1, 0.15, 0.03, 10, 5, mode="reference")
    for name, p in stack[2].named_parameters():
        hist = tracker.history(name).double()
        hist = hist.reshape(hist.shape[0], -1) if hist.ndim == 2 else hist
        want, _ = ex.extrapolate(hist)
        torch.testing.assert_close(p.detach().double(), want.reshape(p.shape), rtol=1e-6, atol=1e-7)


def test_layer_states_are_saved_at_each_growth(tmp_path: Path) -> None:
    model = tiny_gpt()
    states = LayerStateManager(tmp_path)
    opt, controller, sched = _setup(model, layer_states=states, schedule=(5,))
    _train(model, opt, controller, sched, range(6))
    assert states.list_states() == [(2, "init"), (2, "source")]
    init = states.load_state(2, "init")
    stack = model.h
    assert isinstance(stack, GrowableStack)
    meta = states.load_metadata(2, "init")
    assert meta["strategy"] == "geometric"
    assert meta["strategy_parameters"]["beta0"] == 0.02
    assert meta["step"] == 5
    assert float(init["attn.c_proj.weight"].abs().max()) == 0.0  # zero_out after the operator
    assert states.load_metadata(2, "source")["slot"] == 3


def test_layer_state_manager_round_trips_bitwise(tmp_path: Path) -> None:
    states = LayerStateManager(tmp_path)
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64)}
    states.save_state(7, "init", tensors, {"strategy": "copy", "strategy_parameters": {"k": 1}})
    back = states.load_state(7, "init")
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert (tmp_path / "layers" / "layer_007" / "init.json").exists()
    assert not list((tmp_path / "layers" / "layer_007").glob("*.tmp"))
    with pytest.raises(ValueError, match="strategy"):
        states.save_state(1, "x", tensors, {})
    with pytest.raises(FileNotFoundError):
        states.load_state(1, "missing")


def test_param_groups_cover_every_parameter_once_by_block() -> None:
    model = tiny_gpt()
    groups = param_groups(model, 0.1)
    names = [g["name"] for g in groups]
    assert names == sorted(set(names), key=names.index)
    assert {"other", "other.no_decay", "block.0", "block.0.no_decay", "block.3"} <= set(names)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for g in groups:
        assert all((p.ndim >= 2) == (g["weight_decay"] > 0) for p in g["params"])
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(model, -1.0)


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    import copy

    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def test_resume_after_a_growth_continues_exactly(tmp_path: Path) -> None:
    full = tiny_gpt()
    opt, controller, sched = _setup(full)
    reference = _train(full, opt, controller, sched, range(40))

    first = tiny_gpt()
    opt1, ctl1, sched1 = _setup(first)
    _train(first, opt1, ctl1, sched1, range(20))  # growths at 5 and 12 happened
    model_state, opt_state = _state(first, opt1)
    save_growth_state(tmp_path, ctl1, sched1)

    resumed = tiny_gpt(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(model_state)
    opt2, ctl2, sched2 = _setup(resumed)
    opt2.load_state_dict(opt_state)
    load_growth_state(tmp_path, ctl2, sched2)
    assert resumed.h.active_slots == [1, 2, 3]  # type: ignore[union-attr]
    assert [e.step for e in ctl2.events] == [5, 12]
    after = _train(resumed, opt2, ctl2, sched2, range(20, 40))
    assert after == reference[20:]


def test_resume_with_a_mismatched_active_set_fails(tmp_path: Path) -> None:
    model = tiny_gpt()
    opt, controller, sched = _setup(model)
    _train(model, opt, controller, sched, range(8))
    save_growth_state(tmp_path, controller, sched)
    other = tiny_gpt()
    _, ctl, sched2 = _setup(other)
    with pytest.raises(ValueError, match="active layers"):
        load_growth_state(tmp_path, ctl, sched2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"operator": "magic"}, "operator"),
        ({"state_transfer": "some"}, "state_transfer"),
        ({"preserve": "rezero"}, "preserve"),
        ({"isolated_warmup_steps": -1}, "isolated_warmup_steps"),
        ({"isolated_lr_mult": 2.0}, "isolated_lr_mult"),
        ({"rewarm_from": -0.1}, "rewarm_from"),
    ],
)
def test_bad_controller_arguments(kwargs: dict[str, Any], match: str) -> None:
    model = tiny_gpt()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=match):
        GrowthController(model, opt, trigger=GrowthTrigger("schedule", schedule=(1,)), **kwargs)
    plain = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(TypeError):
        GrowthController(plain, opt, trigger=GrowthTrigger("schedule", schedule=(1,)))
    assert TINY.n_layer == 4
