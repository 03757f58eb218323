"""Worker of the 2-process gloo test in ``test_aiether_ddp.py`` (not collected by pytest).

Each rank trains the same tiny AIetherGPT under DDP (``find_unused_parameters=True``: inactive
blocks get no gradient) on its own data, with a plateau trigger fed a rank-dependent validation
loss: at ``PLATEAU_STEP`` only rank 0's losses have plateaued, so rank 1 grows at that step only
because rank 0's decision is broadcast. A scheduled growth follows (geometric operator). Each rank
saves its growth steps, losses and final parameters to ``{out_dir}/rank{rank}.pt``. Then a
tensor sharded over the two ranks (a DTensor, as FSDP2 holds parameters) is tracked next to the
same tensor unsharded: only the T×T Grams are all-reduced, and the statistics must agree.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from aiether import GrowthAwareLR, GrowthController, GrowthTrigger, TrajectoryTracker, param_groups
from aiether.model import AIetherGPT, GPTConfig

STEPS = 16
PLATEAU_STEP = 5
CONFIG = GPTConfig(block_size=16, vocab_size=32, n_layer=3, n_head=2, n_embd=16)


def _sharded_statistics(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    history = torch.randn(6, 10, 4, generator=torch.Generator().manual_seed(7)).cumsum(0)
    full = torch.zeros(10, 4)
    sharded = distribute_tensor(torch.zeros(10, 4), mesh, [Shard(0)])
    trackers = [
        TrajectoryTracker([("w", t)], window=6, dtype=torch.float32) for t in (sharded, full)
    ]
    for row in history:
        full.copy_(row)
        sharded.to_local().copy_(row[5 * rank : 5 * rank + 5])
        for tracker in trackers:
            tracker.snapshot()
    stats = []
    for tracker in trackers:
        m = tracker.metrics()["w"]
        stats.append(torch.stack([m.tau, m.kappa]))
    return stats[0], stats[1]


def run(rank: int, out_dir: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = AIetherGPT(CONFIG)
        ddp = DistributedDataParallel(model, find_unused_parameters=True)
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3)
        trigger = GrowthTrigger("plateau", patience=1, plateau_window=1, plateau_threshold=0.01)
        tracker = TrajectoryTracker(
            [("w", torch.zeros(1))], window=4, interval=1, dtype=torch.float32
        )
        controller = GrowthController(
            model,
            opt,
            tracker=tracker,
            trigger=trigger,
            operator="geometric",
            isolated_warmup_steps=2,
            rewarm_steps=2,
        )
        sched = GrowthAwareLR(opt, lambda t: 1.0, controller)
        g = torch.Generator().manual_seed(100 + rank)
        losses = []
        grown = []
        for step in range(STEPS):
            ids = torch.randint(0, CONFIG.vocab_size, (4, 13), generator=g)
            _, loss = ddp(ids[:, :-1], ids[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            val = None
            if step in (PLATEAU_STEP - 1, PLATEAU_STEP):
                # rank 0: flat (a plateau at PLATEAU_STEP); rank 1: still improving fast
                val = 1.0 if rank == 0 else (2.0 if step == PLATEAU_STEP - 1 else 1.0)
            if step == 10:  # a second growth by hand, on every rank
                controller.grow(step)
                grown.append(step)
            event = controller.step(step, val_loss=val)
            sched.step()
            if event is not None:
                grown.append(event.step)
            losses.append(float(loss.detach()))
        result: dict[str, Any] = {
            "grown": torch.tensor(grown),
            "losses": torch.tensor(losses),
            "active": torch.tensor(model.h.active_slots),  # type: ignore[union-attr]
            "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        }
        result["sharded"], result["unsharded"] = _sharded_statistics(rank)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
