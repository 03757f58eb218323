"""Worker of the 2-process gloo test in ``test_athena_freezing_ddp.py`` (not collected by pytest).

Each rank trains the same small transformer-like stack under DDP on its own shard of a fixed global
batch, with a `ProgressiveFreezingScheduler` in each mode (``requires_grad`` with
``find_unused_parameters=True``, ``lr_zero`` with ``find_unused_parameters=False``). At step
``SPIKE_STEP`` rank 0 alone reports a ten times larger loss to the scheduler: only the all-reduce
makes rank 1 see the spike too. Each rank saves its events, losses, final parameters and whether the
long-frozen front block stayed bit-identical to ``{out_dir}/rank{rank}.pt``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from athena.freezing import FreezeMode, ProgressiveFreezingScheduler, freeze_param_groups

WORLD = 2
STEPS = 30
BATCH_PER_RANK = 16
SPIKE_STEP = 16
MODES: tuple[FreezeMode, ...] = ("requires_grad", "lr_zero")


class Stack(nn.Module):
    def __init__(self, depth: int = 4, width: int = 16, d_in: int = 4) -> None:
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


def data(seed: int = 0) -> tuple[Tensor, Tensor]:
    """(STEPS, WORLD · BATCH_PER_RANK, 4) inputs and their regression targets, same everywhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS, WORLD * BATCH_PER_RANK, 4, generator=g)
    y = torch.sin(x @ torch.randn(4, 1, generator=g))
    return x, y


def build() -> Stack:
    torch.manual_seed(0)
    return Stack()


def train(rank: int, mode: FreezeMode) -> dict[str, Any]:
    model = build().train()
    ddp = DistributedDataParallel(model, find_unused_parameters=mode == "requires_grad")
    if mode == "lr_zero":
        opt = torch.optim.AdamW(freeze_param_groups(ddp, lr=1e-2, weight_decay=0.1))
        sched_opt: torch.optim.Optimizer | None = opt
    else:
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.1)
        sched_opt = None
    # a lenient convergence test and a spike threshold above the batch-to-batch noise: the point
    # here is agreement across ranks, not when to freeze
    sched = ProgressiveFreezingScheduler(
        ddp,  # names start with "module.": the block segment is found anyway
        window_size=3,
        min_steps=6,
        rel_threshold=1.0,
        unfreeze_threshold=0.5,
        ema=0.5,
        cooldown=3,
        mode=mode,
        optimizer=sched_opt,
    )
    x, y = data()
    shard = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
    losses = []
    snapshot: Tensor | None = None
    for step in range(1, STEPS + 1):
        loss = nn.functional.mse_loss(ddp(x[step - 1, shard]), y[step - 1, shard])
        loss.backward()
        reported = loss.detach() * 10 if (step == SPIKE_STEP and rank == 0) else loss.detach()
        event = sched.step(reported)
        if event is not None and event.kind == "freeze" and event.group == 0:
            snapshot = model.layers[0].weight.detach().clone()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return {
        "events": [dataclasses.asdict(e) for e in sched.events],
        "depth": sched.frozen_prefix_depth,
        "losses": torch.stack(losses),
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "front_unchanged": snapshot is not None and torch.equal(snapshot, model.layers[0].weight),
        "finite": all(math.isfinite(v) for v in torch.stack(losses).tolist()),
    }


def run(rank: int, out_dir: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result = {mode: train(rank, mode) for mode in MODES}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
