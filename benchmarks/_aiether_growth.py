"""One training run of the aiether growth benchmark (``bench_aiether_growth``): an arm, its FLOP
accounting, the growth controller, the validation curve against FLOPs and the loss spike after
each growth.

Training FLOPs per step follow the spec: ``6·N·tokens + 12·L·d·T·tokens`` with ``N`` the
non-embedding parameters of the active blocks plus the final norm (the tied head is not counted)
and ``L`` the active depth. Every arm but ``static_upper`` stops when its cumulative FLOPs reach
the budget ``budget_steps × flops(L_max)``; the learning-rate schedule (linear warm-up over 10%,
cosine to 10%) runs over the FLOP fraction, so growth arms and static arms share one horizon.
Snapshot and metric costs are not in the FLOPs (they are timed apart by the benchmark).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from aiether import (
    AIetherGPT,
    GeometricParams,
    GPTConfig,
    GrowableStack,
    GrowthAwareLR,
    GrowthController,
    GrowthTrigger,
    TrajectoryTracker,
    param_groups,
)
from benchmarks.harness import bits_per_byte, cosine_schedule, get_batch

SPIKE_WINDOW = 50


@dataclass(frozen=True, kw_only=True)
class Size:
    """Model, data and budget of one benchmark size."""

    d: int
    heads: int
    l_max: int
    seq: int
    batch: int
    budget_steps: int  # the budget is static-L_max × this many steps
    schedule_fracs: tuple[float, ...]  # growths at these fractions of the budget
    eval_points: int = 10
    curve_iters: int = 8
    final_iters: int = 40
    trigger_every: int = 25  # steps between the calibrated trigger's evaluations
    trigger_iters: int = 4
    tracker_interval: int = 10
    tracker_window: int = 15
    warmup_steps: int = 50  # isolated warm-up and re-warm after each growth


@dataclass(frozen=True, kw_only=True)
class Arm:
    """What varies between arms."""

    name: str
    growth: bool
    operator: Literal["geometric", "copy", "random", "reference"] = "geometric"
    preserve: Literal["zero_out", "none"] = "zero_out"
    trigger: Literal["schedule", "calibrated"] = "schedule"
    upper: bool = False  # static L_max for the growth arms' step count (more compute)
    isolates: str = ""


def gpt_config(size: Size) -> GPTConfig:
    return GPTConfig(
        block_size=size.seq, vocab_size=256, n_layer=size.l_max, n_head=size.heads, n_embd=size.d
    )


def step_flops(model: AIetherGPT, size: Size) -> dict[int, int]:
    """Training FLOPs per step at each active depth 1…L_max."""
    stack = model.h
    assert isinstance(stack, GrowableStack)
    block = sum(p.numel() for p in stack[0].parameters())
    final_norm = sum(p.numel() for p in model.ln_f.parameters())
    tokens = size.batch * size.seq
    return {
        depth: 6 * (depth * block + final_norm) * tokens + 12 * depth * size.d * size.seq * tokens
        for depth in range(1, size.l_max + 1)
    }


def growth_schedule(flops: dict[int, int], size: Size) -> tuple[list[int], int]:
    """The steps after which the scheduled arms grow, and their total step count."""
    budget = size.budget_steps * flops[size.l_max]
    depth, done, step = 1, 0, 0
    steps: list[int] = []
    while done < budget:
        done += flops[depth]
        if (
            depth < size.l_max
            and len(steps) < len(size.schedule_fracs)
            and done >= size.schedule_fracs[len(steps)] * budget
        ):
            steps.append(step)
            depth += 1
        step += 1
    return steps, step


@torch.no_grad()
def val_bpb(model: AIetherGPT, data: Tensor, size: Size, iters: int, device: torch.device) -> float:
    """Bits per byte over ``iters`` fixed validation windows (the same windows for every arm)."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    total = 0.0
    for _ in range(iters):
        x, y = get_batch(data, size.batch, size.seq, gen, device)
        _, loss = model(x, y)
        assert loss is not None
        total += float(loss)
    model.train(was)
    return bits_per_byte(total / iters)


def run_arm(
    arm: Arm,
    *,
    size: Size,
    lr: float,
    seed: int,
    train: Tensor,
    val: Tensor,
    device: torch.device,
    params: GeometricParams | None = None,
) -> dict[str, Any]:
    """Train one arm on one seed; returns its record (final bits/byte, curve, events, timing)."""
    torch.manual_seed(seed)
    model = AIetherGPT(
        gpt_config(size), initial_active=1 if arm.growth else size.l_max, preserve=arm.preserve
    )
    model.to(device)
    stack = model.h
    assert isinstance(stack, GrowableStack)
    flops = step_flops(model, size)
    budget = size.budget_steps * flops[size.l_max]
    schedule, growth_steps = growth_schedule(flops, size)
    max_steps = growth_steps if arm.upper else None
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
    progress = {"done": 0.0}

    def base_lambda(_: int) -> float:
        return cosine_schedule(int(1000 * progress["done"]), 1000)

    probe_gen = torch.Generator().manual_seed(99)
    px, py = get_batch(val, size.batch, size.seq, probe_gen, device)

    def probe(m: torch.nn.Module) -> Tensor:
        return m(px, py)[1]  # type: ignore[no-any-return]

    controller = None
    if arm.growth:
        needs = arm.operator in ("geometric", "reference") or arm.trigger == "calibrated"
        tracker = (
            TrajectoryTracker(
                stack[size.l_max - 1].named_parameters(),
                window=size.tracker_window,
                interval=size.tracker_interval,
            )
            if needs
            else None
        )
        trigger = (
            GrowthTrigger("schedule", schedule=schedule)
            if arm.trigger == "schedule"
            else GrowthTrigger(
                "geometric+plateau", patience=3, plateau_threshold=0.01, plateau_window=3
            )
        )
        controller = GrowthController(
            model,
            opt,
            tracker=tracker,
            trigger=trigger,
            operator=arm.operator,
            isolated_warmup_steps=size.warmup_steps,
            rewarm_steps=size.warmup_steps,
            params=params,
            probe=probe,
        )
    sched = GrowthAwareLR(opt, base_lambda, controller)
    gen = torch.Generator().manual_seed(seed)
    curve: list[dict[str, float]] = []
    next_point = 1
    spikes: list[dict[str, Any]] = []
    watching: list[dict[str, Any]] = []
    train_s = 0.0
    losses: list[float] = []
    step = 0
    total_flops = 0
    model.train()
    while (total_flops < budget) if max_steps is None else (step < max_steps):
        t0 = time.perf_counter()
        x, y = get_batch(train, size.batch, size.seq, gen, device)
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        total_flops += flops[stack.num_active]
        progress["done"] = (
            min(total_flops / budget, 1.0) if max_steps is None else (step + 1) / max_steps
        )
        val_loss = None
        if (
            controller is not None
            and arm.trigger == "calibrated"
            and (step + 1) % size.trigger_every == 0
        ):
            val_loss = val_bpb(model, val, size, size.trigger_iters, device)
        event = controller.step(step, val_loss=val_loss) if controller is not None else None
        sched.step()
        train_s += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if event is not None:
            watching.append(
                {
                    "step": event.step,
                    "before": event.probe_loss_before,
                    "after": event.probe_loss_after,
                    "max": -math.inf,
                    "left": SPIKE_WINDOW,
                }
            )
        for w in watching:
            if w["left"] > 0 and w["step"] != step:
                with torch.no_grad():
                    model.eval()
                    w["max"] = max(w["max"], float(probe(model)))
                    model.train()
                w["left"] -= 1
        frac = total_flops / budget
        while next_point <= size.eval_points and frac >= next_point / size.eval_points:
            curve.append(
                {
                    "flops_frac": frac,
                    "step": step + 1,
                    "depth": stack.num_active,
                    "val_bpb": val_bpb(model, val, size, size.curve_iters, device),
                }
            )
            next_point += 1
        step += 1
    for w in watching:
        spikes.append(
            {
                "step": w["step"],
                "probe_before": w["before"],
                "probe_after": w["after"],
                "max_rise_50": w["max"] - w["before"],
            }
        )
    final = val_bpb(model, val, size, size.final_iters, device)
    tokens = step * size.batch * size.seq
    events = [e.to_dict() for e in controller.events] if controller is not None else []
    return {
        "arm": arm.name,
        "seed": seed,
        "lr": lr,
        "val_bpb": final,
        "val_loss": final,
        "crashed": not math.isfinite(final),
        "steps": step,
        "train_flops": total_flops,
        "budget_flops": budget,
        "final_depth": stack.num_active,
        "train_s": train_s,
        "tokens_per_s": tokens / train_s,
        "curve": curve,
        "spikes": spikes,
        "growth_steps": [e["step"] for e in events],
        "events": [
            {
                k: e[k]
                for k in (
                    "step",
                    "slot",
                    "tau_norm",
                    "kappa_norm",
                    "val_loss",
                    "probe_loss_before",
                    "probe_loss_after",
                )
            }
            for e in events
        ],
        "train_loss_last50": sum(losses[-50:]) / max(len(losses[-50:]), 1),
    }


def flops_to_reach(curve: list[dict[str, float]], target: float) -> float | None:
    """The budget fraction at which the validation curve first reaches ``target`` bits/byte
    (linear interpolation between evaluation points), or ``None`` if it never does."""
    prev_frac, prev_val = 0.0, math.inf
    for point in curve:
        if point["val_bpb"] <= target:
            if not math.isfinite(prev_val):
                return point["flops_frac"]
            share = (prev_val - target) / max(prev_val - point["val_bpb"], 1e-12)
            return prev_frac + share * (point["flops_frac"] - prev_frac)
        prev_frac, prev_val = point["flops_frac"], point["val_bpb"]
    return None
