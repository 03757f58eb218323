"""ProgressiveFreezingScheduler: grouping, the freezing rules, the unfreeze on a loss spike, the
optimizer interplay in both modes, and the state round trip.

Most tests drive the scheduler with hand-set ``.grad`` values (each group's gradient norm is then
exactly what the test chose) and ``ema=0`` so every decision step can be asserted exactly; the
AdamW tests train a small transformer-like stack for real.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from athena.freezing import (
    FREEZE_GROUP_KEY,
    FREEZE_NAME_KEY,
    FreezeEvent,
    ProgressiveFreezingScheduler,
    freeze_param_groups,
)


class Stack(nn.Module):
    """An embedding, ``depth`` residual blocks in ``self.layers`` and a head, like a transformer."""

    def __init__(self, depth: int = 4, width: int = 8, d_in: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = h + torch.tanh(layer(h))
        out: Tensor = self.head(h)
        return out


def set_grads(model: Stack, norms: Sequence[float]) -> None:
    """Give block i's trainable parameters gradients of total norm ``norms[i]`` (frozen ones
    get none, as after a backward); the head gets a gradient too."""
    for layer, norm in zip(model.layers, norms, strict=True):
        params = [p for p in layer.parameters() if p.requires_grad]
        numel = sum(p.numel() for p in params)
        for p in params:
            p.grad = torch.full_like(p, norm / math.sqrt(numel))
    for p in model.head.parameters():
        p.grad = torch.ones_like(p)


def drive(
    sched: ProgressiveFreezingScheduler,
    model: Stack,
    script: Sequence[tuple[Sequence[float], float]],
) -> list[FreezeEvent]:
    """Run one scheduler step per (norms, loss) entry; return the events returned by step()."""
    returned = []
    for norms, loss in script:
        set_grads(model, norms)
        event = sched.step(torch.tensor(loss))
        if event is not None:
            returned.append(event)
    return returned


def exact(**kwargs: object) -> dict[str, object]:
    """Scheduler options for exact step assertions: no smoothing, window 3, no minimum."""
    base: dict[str, object] = {"window_size": 3, "min_steps": 0, "ema": 0.0}
    base.update(kwargs)
    return base


def summary(events: Sequence[FreezeEvent]) -> list[tuple[int, str, int, int]]:
    return [(e.step, e.kind, e.group, e.frozen_prefix_depth) for e in events]


CONST = ([1.0, 1.0, 1.0, 1.0], 1.0)


# -- groups ------------------------------------------------------------------------------------


def test_default_groups_are_the_trainable_blocks_front_to_back() -> None:
    model = Stack(depth=3)
    sched = ProgressiveFreezingScheduler(model)
    assert sched.group_names == ["layers.0", "layers.1", "layers.2"]
    groups = freeze_param_groups(model, lr=0.1)
    assert [g.get(FREEZE_GROUP_KEY) for g in groups] == [0, 1, 2, None]
    assert [g.get(FREEZE_NAME_KEY) for g in groups] == ["layers.0", "layers.1", "layers.2", None]
    assert all(g["lr"] == 0.1 for g in groups)
    for i, layer in enumerate(model.layers):
        assert groups[i]["params"] == list(layer.parameters())
    rest = {id(p) for p in groups[3]["params"]}
    assert rest == {id(p) for m in (model.embed, model.head) for p in m.parameters()}


class _Named(nn.Module):
    pass


def test_block_detection_across_naming_schemes() -> None:
    model = _Named()
    model.bert = _Named()
    model.bert.encoder = _Named()
    # keys out of numeric order and past 9: groups are sorted by block index, not by name
    model.bert.encoder.layer = nn.ModuleDict({str(i): nn.Linear(2, 2) for i in (10, 2, 0, 1)})
    model.dec = _Named()
    model.dec.block = nn.ModuleList(_Named() for _ in range(2))
    for blk in model.dec.block:  # T5-style: block.<i>.layer.<j>; the block is the first match
        blk.layer = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))
    model.transformer = _Named()
    model.transformer.h = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))
    model.transformer.h[1].bias.requires_grad_(False)  # frozen: in no group
    model.classifier = nn.Linear(2, 1)  # no block index: in no group
    model.vec = nn.ParameterList([nn.Parameter(torch.ones(2))])  # "vec.0": not a container name

    sched = ProgressiveFreezingScheduler(model)
    assert sched.group_names == [
        "bert.encoder.layer.0",
        "bert.encoder.layer.1",
        "bert.encoder.layer.2",
        "bert.encoder.layer.10",
        "dec.block.0",
        "dec.block.1",
        "transformer.h.0",
        "transformer.h.1",
    ]
    groups = freeze_param_groups(model)
    assert {id(p) for p in groups[5]["params"]} == {id(p) for p in model.dec.block[1].parameters()}
    assert [id(p) for p in groups[7]["params"]] == [id(model.transformer.h[1].weight)]
    rest = {id(p) for p in groups[-1]["params"]}
    assert rest == {id(p) for p in [*model.classifier.parameters(), model.vec[0]]}


def test_user_groups_with_and_without_names() -> None:
    model = Stack(depth=2)
    sched = ProgressiveFreezingScheduler(
        model,
        groups=[("front", [*model.embed.parameters(), *model.layers[0].parameters()]),
                model.layers[1].parameters(), model.head.weight],
    )  # fmt: skip
    assert sched.group_names == ["front", "group1", "group2"]
    groups = freeze_param_groups(
        model, groups=[list(model.layers[0].parameters()), model.layers[1].parameters()]
    )
    assert len(groups) == 3  # two tagged groups, then embed + head
    assert len(groups[2]["params"]) == 4


# -- the freezing rules ------------------------------------------------------------------------


def test_freezes_a_front_prefix_in_order_at_most_one_per_window() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact())
    returned = drive(sched, model, [CONST] * 40)
    # the history needs window + 1 = 4 entries; then one freeze per window; group 3 never
    assert summary(returned) == [
        (4, "freeze", 0, 1),
        (7, "freeze", 1, 2),
        (10, "freeze", 2, 3),
    ]
    assert returned == sched.events
    assert [e.name for e in returned] == ["layers.0", "layers.1", "layers.2"]
    assert sched.frozen_prefix_depth == 3
    assert sched.num_steps == 40
    for i, layer in enumerate(model.layers):
        assert all(p.requires_grad == (i == 3) for p in layer.parameters())
        assert all((p.grad is None) == (i < 3) for p in layer.parameters())


def test_a_converged_later_group_waits_for_the_front_group() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact())
    growing = [([2.0 * 1.2**t, 1.0, 1.0, 1.0], 1.0) for t in range(30)]
    assert drive(sched, model, growing) == []  # groups 1-3 converged, group 0 did not
    assert sched.frozen_prefix_depth == 0
    events = drive(sched, model, [CONST] * 10)
    assert summary(events) == [(34, "freeze", 0, 1), (37, "freeze", 1, 2), (40, "freeze", 2, 3)]


def test_nothing_freezes_before_min_steps() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact(min_steps=20))
    events = drive(sched, model, [CONST] * 25)
    assert summary(events) == [(20, "freeze", 0, 1), (23, "freeze", 1, 2)]


def test_the_last_group_is_never_frozen() -> None:
    model = Stack(depth=2)
    sched = ProgressiveFreezingScheduler(model, **exact())
    events = drive(sched, model, [([1.0, 1.0], 1.0)] * 100)
    assert summary(events) == [(4, "freeze", 0, 1)]


def test_relative_criterion_threshold() -> None:
    # the norm changes by 4% over a window (< 5%): freeze; by 6%: never
    for rate, expected in ((0.04, [(4, "freeze", 0, 1)]), (0.06, [])):
        model = Stack(depth=2)
        sched = ProgressiveFreezingScheduler(model, **exact(rel_threshold=0.05))
        step_factor = (1 - rate) ** (1 / 3)
        script = [([step_factor**t, 1.0], 1.0) for t in range(4)]
        assert summary(drive(sched, model, script)) == expected


def test_norms_are_smoothed_by_the_ema() -> None:
    model = Stack(depth=2)
    sched = ProgressiveFreezingScheduler(model, ema=0.5)
    drive(sched, model, [([4.0, 1.0], 5.0), ([2.0, 3.0], 3.0), ([1.0, 1.0], 4.6)])
    state = sched.state_dict()
    torch.testing.assert_close(state["history"][0], [4.0, 3.0, 2.0])
    torch.testing.assert_close(state["history"][1], [1.0, 2.0, 1.5])
    torch.testing.assert_close(state["loss_ema"], 4.3)
    torch.testing.assert_close(state["best_loss"], 4.0)  # 4.3 < 4.0 · 1.1: no spike, no re-base


def test_group_norm_over_mixed_precision_gradients() -> None:
    model = Stack(depth=2)
    model.layers[0].to(torch.bfloat16)  # one bf16 group, one fp32 group, one mixed
    model.layers[1].bias.data = model.layers[1].bias.data.half()
    sched = ProgressiveFreezingScheduler(model)
    grads = [torch.randn_like(p) * 1e3 for layer in model.layers for p in layer.parameters()]
    for p, g in zip((p for layer in model.layers for p in layer.parameters()), grads, strict=True):
        p.grad = g
    sched.step(1.0)
    want = [
        torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads[:2]])).item(),
        torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads[2:]])).item(),
    ]
    # float32 accumulation of the (exactly representable) 16-bit gradients
    assert sched.state_dict()["history"] == [[pytest.approx(w, rel=1e-5)] for w in want]


def test_absolute_criterion_depends_on_scale_relative_does_not() -> None:
    def run(scale: float, **kwargs: object) -> list[tuple[int, str, int, int]]:
        model = Stack(depth=2)
        sched = ProgressiveFreezingScheduler(model, **exact(**kwargs))
        return summary(drive(sched, model, [([scale, scale], 1.0)] * 10))

    # absolute: mean of the last window (3) norms below threshold, so 3 entries suffice
    assert run(1e-3, criterion="absolute", threshold=1e-2) == [(3, "freeze", 0, 1)]
    assert run(1e3, criterion="absolute", threshold=1e-2) == []
    assert run(0.99, criterion="absolute", threshold=1.0) == [(3, "freeze", 0, 1)]
    assert run(1.01, criterion="absolute", threshold=1.0) == []
    assert run(1e-3) == run(1e3) == [(4, "freeze", 0, 1)]


# -- unfreezing --------------------------------------------------------------------------------


def test_spike_unfreezes_the_most_recent_group_then_waits_the_cooldown() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact(cooldown=5, unfreeze_threshold=0.1))
    events = drive(sched, model, [CONST] * 8)
    assert summary(events) == [(4, "freeze", 0, 1), (7, "freeze", 1, 2)]
    spike = drive(sched, model, [([1.0] * 4, 2.0)])
    assert summary(spike) == [(9, "unfreeze", 1, 1)]
    assert spike[0].name == "layers.1"
    assert spike[0].loss == spike[0].loss_ema == 2.0
    assert all(p.requires_grad for p in model.layers[1].parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    # the loss stays at the new level (the best is re-based: no further unfreeze); group 1's
    # history restarts at step 10 and is full at step 13, but the cooldown lasts to step 14
    later = drive(sched, model, [([1.0] * 4, 2.0)] * 8)
    assert summary(later) == [(15, "freeze", 1, 2)]


def test_an_unfrozen_group_needs_a_fresh_window_of_evidence() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact(cooldown=0))
    drive(sched, model, [CONST] * 8 + [([1.0] * 4, 2.0)])  # unfreeze group 1 at step 9
    # its statistics restart: window + 1 = 4 new norms (steps 10-13) before it can refreeze
    events = drive(sched, model, [([1.0] * 4, 2.0)] * 6)
    assert summary(events) == [(13, "freeze", 1, 2)]


def test_a_spike_during_the_cooldown_waits_for_its_end() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact(cooldown=5))
    drive(sched, model, [CONST] * 8 + [([1.0] * 4, 2.0)])  # unfreeze group 1 at step 9
    events = drive(sched, model, [([1.0] * 4, 3.0)] * 12)  # spiking again from step 10
    assert summary(events) == [(15, "unfreeze", 0, 0), (21, "freeze", 0, 1)]
    assert summary(sched.events)[3:] == summary(events)


def test_a_spike_with_nothing_frozen_rebases_and_delays_freezing() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact())
    events = drive(sched, model, [CONST] * 3 + [([1.0] * 4, 5.0)] * 3)
    assert summary(events) == [(5, "freeze", 0, 1)]  # step 4 was a spike: no freeze there


def test_infinite_unfreeze_threshold_never_unfreezes() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact(unfreeze_threshold=math.inf))
    events = drive(sched, model, [CONST] * 5 + [([1.0] * 4, 1e30)] * 5)
    assert summary(events) == [(4, "freeze", 0, 1), (7, "freeze", 1, 2), (10, "freeze", 2, 3)]


# -- non-finite input, bad input ---------------------------------------------------------------


def test_a_non_finite_step_is_counted_but_changes_nothing() -> None:
    model = Stack(depth=4)
    sched = ProgressiveFreezingScheduler(model, **exact())
    drive(sched, model, [CONST] * 2)
    before = sched.state_dict()
    assert drive(sched, model, [([1.0] * 4, math.nan), ([1.0] * 4, math.inf)]) == []
    after = sched.state_dict()
    assert after.pop("num_steps") == before.pop("num_steps") + 2
    assert after == before
    # a non-finite gradient norm skips that group's update only
    drive(sched, model, [([math.nan, 2.0, 2.0, 2.0], 1.0)])
    state = sched.state_dict()
    assert state["history"][0] == pytest.approx([1.0, 1.0])
    assert state["history"][1] == pytest.approx([1.0, 1.0, 2.0])


def test_step_accepts_numbers_and_rejects_bad_losses_before_counting() -> None:
    model = Stack(depth=2)
    sched = ProgressiveFreezingScheduler(model)
    set_grads(model, [1.0, 1.0])
    assert sched.step(1.5) is None
    assert sched.step(torch.tensor([2.0])) is None
    with pytest.raises(ValueError, match="one element"):
        sched.step(torch.ones(2))
    with pytest.raises(TypeError, match="loss"):
        sched.step("1.0")  # type: ignore[arg-type]
    assert sched.num_steps == 2
    assert sched.loss_ema == pytest.approx(0.9 * 1.5 + 0.1 * 2.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_size": 0}, "window_size must be >= 1, got 0"),
        ({"ema": 1.0}, r"ema must be in \[0, 1\), got 1.0"),
        ({"ema": -0.1}, r"ema must be in \[0, 1\), got -0.1"),
        ({"threshold": 0.0}, "threshold must be finite and > 0, got 0.0"),
        ({"rel_threshold": -1.0}, "rel_threshold must be finite and > 0, got -1.0"),
        ({"unfreeze_threshold": -0.5}, "unfreeze_threshold must be >= 0, got -0.5"),
        ({"min_steps": -1}, "min_steps must be >= 0, got -1"),
        ({"cooldown": -2}, "cooldown must be >= 0, got -2"),
        ({"criterion": "ratio"}, "criterion must be 'relative' or 'absolute', got 'ratio'"),
        ({"mode": "detach"}, "mode must be 'requires_grad' or 'lr_zero', got 'detach'"),
        ({"mode": "lr_zero"}, "mode='lr_zero' needs optimizer="),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProgressiveFreezingScheduler(Stack(), **kwargs)  # type: ignore[arg-type]


def test_bad_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="window_size must be an int"):
        ProgressiveFreezingScheduler(Stack(), window_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="min_steps must be an int"):
        ProgressiveFreezingScheduler(Stack(), min_steps=True)
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        ProgressiveFreezingScheduler([])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"groups\[0\]\[0\] must be an nn.Parameter"):
        ProgressiveFreezingScheduler(Stack(), groups=[[torch.ones(2)], [torch.ones(2)]])  # type: ignore[list-item]


def test_bad_groups_raise_value_error() -> None:
    model = Stack(depth=2)
    l0, l1 = (list(layer.parameters()) for layer in model.layers)
    with pytest.raises(ValueError, match=r"at least 2 groups .* got 1 trainable transformer"):
        ProgressiveFreezingScheduler(Stack(depth=1))
    with pytest.raises(ValueError, match=r"at least 2 groups .* got 1 groups given"):
        ProgressiveFreezingScheduler(model, groups=[l0])
    with pytest.raises(ValueError, match="at least 2 groups"):
        freeze_param_groups(Stack(depth=1))
    with pytest.raises(ValueError, match=r"groups\[1\] \('group1'\) is empty"):
        ProgressiveFreezingScheduler(model, groups=[l0, []])
    with pytest.raises(ValueError, match=r"groups\[1\]\[0\] .* is already in groups\[0\]"):
        ProgressiveFreezingScheduler(model, groups=[l0, [l0[0], *l1]])
    with pytest.raises(ValueError, match="is not a parameter of the model"):
        ProgressiveFreezingScheduler(model, groups=[l0, [nn.Parameter(torch.ones(1))]])
    model.layers[1].bias.requires_grad_(False)
    with pytest.raises(ValueError, match=r"groups\[1\] .* requires_grad=False"):
        ProgressiveFreezingScheduler(model, groups=[l0, l1])


def test_optimizer_mismatch_raises_value_error() -> None:
    model = Stack(depth=3)
    plain = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="only used with mode='lr_zero'"):
        ProgressiveFreezingScheduler(model, optimizer=plain)
    with pytest.raises(ValueError, match=f"no param group tagged {FREEZE_GROUP_KEY}=0"):
        ProgressiveFreezingScheduler(model, mode="lr_zero", optimizer=plain)
    two = freeze_param_groups(
        model, groups=[model.layers[0].parameters(), model.layers[1].parameters()]
    )
    with pytest.raises(ValueError, match=f"no param group tagged {FREEZE_GROUP_KEY}=2"):
        ProgressiveFreezingScheduler(model, mode="lr_zero", optimizer=torch.optim.SGD(two))
    swapped = freeze_param_groups(model)
    swapped[0]["params"], swapped[1]["params"] = swapped[1]["params"], swapped[0]["params"]
    with pytest.raises(ValueError, match="holds other parameters than freezing group 0"):
        ProgressiveFreezingScheduler(model, mode="lr_zero", optimizer=torch.optim.SGD(swapped))
    with pytest.raises(ValueError, match="must not contain 'params'"):
        freeze_param_groups(model, params=[])


# -- optimizer interplay -----------------------------------------------------------------------


def _regression(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = torch.sin(x @ torch.randn(4, 1, generator=g))
    return x, y


def _train(
    model: Stack,
    sched: ProgressiveFreezingScheduler,
    opt: torch.optim.Optimizer,
    steps: int,
    on_event: dict[int, dict[str, Tensor]],
) -> None:
    """AdamW steps on a synthetic regression; snapshot the model right after each freeze."""
    x, y = _regression()
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        event = sched.step(loss)
        if event is not None:  # the freeze applies to this very update, so snapshot before it
            on_event[event.step] = {k: v.clone() for k, v in model.state_dict().items()}
        opt.step()
        opt.zero_grad(set_to_none=True)


def _frozen_keys(depth: int) -> list[str]:
    return [f"layers.{i}.{n}" for i in range(depth) for n in ("weight", "bias")]


def test_frozen_params_unchanged_under_adamw_requires_grad_and_backward_stops() -> None:
    model = Stack(depth=3)
    model.embed.requires_grad_(False)  # a frozen embedding, as in adapter fine-tuning
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    assert opt.param_groups[0]["weight_decay"] > 0
    needs_grad: list[bool] = []
    model.layers[1].register_forward_hook(lambda m, i, o: needs_grad.append(o.requires_grad))
    # a lenient criterion: this test is about what freezing does, not when it happens
    sched = ProgressiveFreezingScheduler(
        model, window_size=5, min_steps=10, rel_threshold=10.0, unfreeze_threshold=math.inf
    )
    start = {k: v.clone() for k, v in model.state_dict().items()}
    snapshots: dict[int, dict[str, Tensor]] = {}
    _train(model, sched, opt, 30, snapshots)
    assert summary(sched.events) == [(10, "freeze", 0, 1), (15, "freeze", 1, 2)]
    final = model.state_dict()
    for key in _frozen_keys(1):
        assert torch.equal(final[key], snapshots[10][key]), key
    for key in _frozen_keys(2)[2:]:
        assert torch.equal(final[key], snapshots[15][key]), key
        assert not torch.equal(snapshots[15][key], start[key]), key  # it trained before
    for key in ("layers.2.weight", "head.weight"):
        assert not torch.equal(final[key], snapshots[15][key]), key
    assert all(p.grad is None for layer in model.layers[:2] for p in layer.parameters())
    # with the embedding and blocks 0-1 frozen, block 1's output needs no grad: backward stops
    # at block 2 instead of running through the frozen prefix
    assert needs_grad[:15] == [True] * 15
    assert needs_grad[15:] == [False] * 15


def test_frozen_params_unchanged_under_adamw_lr_zero_with_weight_decay() -> None:
    model = Stack(depth=3)
    opt = torch.optim.AdamW(freeze_param_groups(model, lr=1e-2, weight_decay=0.1))
    sched = ProgressiveFreezingScheduler(
        model,
        window_size=5,
        min_steps=10,
        rel_threshold=10.0,
        unfreeze_threshold=math.inf,
        mode="lr_zero",
        optimizer=opt,
    )
    snapshots: dict[int, dict[str, Tensor]] = {}
    _train(model, sched, opt, 12, snapshots)
    assert summary(sched.events) == [(10, "freeze", 0, 1)]
    assert opt.param_groups[0]["lr"] == 0.0
    assert opt.param_groups[0]["weight_decay"] == 0.1
    assert [g["lr"] for g in opt.param_groups[1:]] == [1e-2] * 3
    moment = opt.state[model.layers[0].weight]["exp_avg"].clone()
    _train(model, sched, opt, 18, snapshots)
    assert summary(sched.events) == [(10, "freeze", 0, 1), (15, "freeze", 1, 2)]
    final = model.state_dict()
    for key in _frozen_keys(1):
        assert torch.equal(final[key], snapshots[10][key]), key
    for key in _frozen_keys(2)[2:]:
        assert torch.equal(final[key], snapshots[15][key]), key
    assert not torch.equal(final["layers.2.weight"], snapshots[15]["layers.2.weight"])
    # documented: the graph is unchanged, so the frozen groups still get gradients and AdamW
    # keeps updating their moments (only the step is scaled to zero)
    assert not torch.equal(opt.state[model.layers[0].weight]["exp_avg"], moment)


def test_lr_zero_unfreeze_restores_the_lr_an_lr_scheduler_set() -> None:
    model = Stack(depth=3)
    opt = torch.optim.SGD(freeze_param_groups(model, lr=0.1))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    sched = ProgressiveFreezingScheduler(model, **exact(mode="lr_zero", optimizer=opt))
    losses = [1.0] * 6 + [3.0]
    for step, loss in enumerate(losses, start=1):
        set_grads(model, [1.0, 1.0, 1.0])
        event = sched.step(loss)
        if step >= 4:  # group 0 is frozen from step 4 on, for the update of that step too
            assert opt.param_groups[0]["lr"] == (0.0 if step < 7 else opt.param_groups[2]["lr"])
        if step == 7:
            assert event is not None
            assert (event.kind, event.group) == ("unfreeze", 0)
        opt.step()
        lr_sched.step()
    # the restored lr followed LambdaLR while frozen: 0.1 · 0.5^6 at step 7
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**7)
    assert opt.param_groups[0]["lr"] == opt.param_groups[2]["lr"]


# -- state round trip --------------------------------------------------------------------------

# freezes at 4 and 7, a spike at 9 unfreezes group 1, cooldown 5, refreeze at 15 and 18;
# split at 12 (mid-cooldown, histories partly filled)
SCRIPT = [CONST] * 8 + [([1.0] * 4, 2.0)] + [([1.0, 1.0, 1.5, 1.0], 2.0)] * 12


@pytest.mark.parametrize("mode", ["requires_grad", "lr_zero"])
def test_state_dict_round_trip_continues_identically(mode: str) -> None:
    def build() -> tuple[Stack, ProgressiveFreezingScheduler, torch.optim.Optimizer | None]:
        model = Stack(depth=4)
        opt = torch.optim.SGD(freeze_param_groups(model, lr=0.1)) if mode == "lr_zero" else None
        sched = ProgressiveFreezingScheduler(model, **exact(cooldown=5, mode=mode, optimizer=opt))
        return model, sched, opt

    model_a, sched_a, opt_a = build()
    drive(sched_a, model_a, SCRIPT)
    assert summary(sched_a.events) == [
        (4, "freeze", 0, 1),
        (7, "freeze", 1, 2),
        (9, "unfreeze", 1, 1),
        (15, "freeze", 1, 2),
        (18, "freeze", 2, 3),
    ]

    model_b, sched_b, _ = build()
    drive(sched_b, model_b, SCRIPT[:12])
    buffer = io.BytesIO()
    torch.save(sched_b.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    model_c, sched_c, opt_c = build()
    sched_c.load_state_dict(state)
    assert sched_c.frozen_prefix_depth == 1
    assert sched_c.state_dict() == sched_b.state_dict()
    for layer_b, layer_c in zip(model_b.layers, model_c.layers, strict=True):
        assert [p.requires_grad for p in layer_b.parameters()] == [
            p.requires_grad for p in layer_c.parameters()
        ]
    if opt_c is not None:
        assert [g["lr"] for g in opt_c.param_groups] == [0.0, 0.1, 0.1, 0.1, 0.1]
    else:
        assert not model_c.layers[0].weight.requires_grad
        assert model_c.layers[1].weight.requires_grad

    drive(sched_c, model_c, SCRIPT[12:])
    assert sched_c.events == sched_a.events
    assert sched_c.state_dict() == sched_a.state_dict()
    if opt_a is not None and opt_c is not None:
        assert [g["lr"] for g in opt_c.param_groups] == [g["lr"] for g in opt_a.param_groups]
        assert [g["lr"] for g in opt_c.param_groups] == [0.0, 0.0, 0.0, 0.1, 0.1]
    else:
        for layer_a, layer_c in zip(model_a.layers, model_c.layers, strict=True):
            assert [p.requires_grad for p in layer_a.parameters()] == [
                p.requires_grad for p in layer_c.parameters()
            ]

    # loading a state with fewer frozen groups thaws what the scheduler had frozen
    sched_c.load_state_dict(state)
    assert sched_c.frozen_prefix_depth == 1
    if opt_c is not None:
        assert [g["lr"] for g in opt_c.param_groups] == [0.0, 0.1, 0.1, 0.1, 0.1]
    else:
        assert [layer.weight.requires_grad for layer in model_c.layers] == [
            False,
            True,
            True,
            True,
        ]


def test_load_state_dict_rejects_a_different_scheduler() -> None:
    state = ProgressiveFreezingScheduler(Stack(depth=4)).state_dict()
    with pytest.raises(ValueError, match="state_dict has 4 groups, this scheduler has 3"):
        ProgressiveFreezingScheduler(Stack(depth=3)).load_state_dict(state)
    model = Stack(depth=4)
    opt = torch.optim.SGD(freeze_param_groups(model, lr=0.1))
    with pytest.raises(ValueError, match="saved with mode='requires_grad'"):
        ProgressiveFreezingScheduler(model, mode="lr_zero", optimizer=opt).load_state_dict(state)
    del state["history"]
    with pytest.raises(ValueError, match=r"missing keys \['history'\]"):
        ProgressiveFreezingScheduler(Stack(depth=4)).load_state_dict(state)
