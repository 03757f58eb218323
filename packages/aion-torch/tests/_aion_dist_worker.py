"""Worker of the 2-process gloo tests in ``test_aion_distributed.py`` (not collected by pytest).

Each rank runs the scenarios below and saves its tensors to ``{out_dir}/rank{rank}.pt``; the test
process compares them with single-process computations.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from aion_torch import AionBlock, AionResidual, sync_stats
from aion_torch.residuals import ReZeroResidual

WORLD = 2
# gradient accumulation: token counts T of the (1, T, 8) micro-batches, per rank, every step
MICRO_TOKENS = ((3, 5, 2), (7, 4, 6))
ACC_STEPS = 2


def data(seed: int) -> dict[str, Tensor]:
    """The global data of every scenario, identical on all ranks and in the test process."""
    g = torch.Generator().manual_seed(seed)
    return {
        "x0": torch.randn(1, 4, 8, generator=g),  # rank 0: 4 tokens
        "y0": 0.5 * torch.randn(1, 4, 8, generator=g),
        "x1": 3.0 * torch.randn(1, 12, 8, generator=g),  # rank 1: 12 tokens
        "y1": torch.randn(1, 12, 8, generator=g),
        "train_x": torch.randn(3, 8, 4, 8, generator=g),  # 3 steps, global batch 8
        "train_t": torch.randn(3, 8, 4, 8, generator=g),
    }


def micro_batches(seed: int) -> dict[str, Tensor]:
    """``acc{step}.{rank}.{micro}.x``/``.t``: the micro-batches of the accumulation scenario."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for step in range(ACC_STEPS):
        for rank, counts in enumerate(MICRO_TOKENS):
            for micro, n in enumerate(counts):
                key = f"acc{step}.{rank}.{micro}"
                out[f"{key}.x"] = (1.0 + rank + micro) * torch.randn(1, n, 8, generator=g)
                out[f"{key}.t"] = torch.randn(1, n, 8, generator=g)
    return out


def make_model(sync: str, *, rezero: bool = False) -> nn.Sequential:
    """Small model for the DDP/FSDP2 scenarios; the same seed gives the same weights everywhere.

    ``rezero`` appends a ReZero block (another (1,)-shaped scalar parameter for FSDP2).
    """
    torch.manual_seed(0)
    blocks: list[nn.Module] = [
        AionBlock(nn.Linear(8, 8), 8, sync_stats=sync, ema_gamma=0.9),
        AionBlock(nn.Linear(8, 8), 8, sync_stats=sync, ema_gamma=0.9),
    ]
    if rezero:
        blocks.append(AionBlock(nn.Linear(8, 8), 8, residual=ReZeroResidual()))
    return nn.Sequential(*blocks, nn.Linear(8, 8))


def train(model: nn.Module, opt: torch.optim.Optimizer, shard: int | None) -> None:
    """3 MSE steps on ``train_x``/``train_t``: this rank's half (``shard``) or the whole batch."""
    d = data(0)
    for step in range(3):
        xb, tb = d["train_x"][step], d["train_t"][step]
        if shard is not None:
            xb, tb = xb.chunk(WORLD)[shard], tb.chunk(WORLD)[shard]
        loss = (model(xb) - tb).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


def _ddp_accumulation(rank: int, use_no_sync: bool, out: dict[str, Tensor]) -> None:
    """Deferred statistics under DDP (broadcast_buffers=True) with 3 forwards per reduction."""
    d = micro_batches(1)
    model = make_model("deferred")
    ddp = DistributedDataParallel(model)  # default broadcast_buffers=True
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    tag = "nosync" if use_no_sync else "sync"
    n_micro = len(MICRO_TOKENS[rank])
    for step in range(ACC_STEPS):
        for micro in range(n_micro):
            last = micro == n_micro - 1
            with ddp.no_sync() if use_no_sync and not last else nullcontext():
                key = f"acc{step}.{rank}.{micro}"
                loss = (ddp(d[f"{key}.x"]) - d[f"{key}.t"]).pow(2).mean()
                loss.backward()
        sync_stats(model)
        opt.step()
        opt.zero_grad()
        for i in range(2):
            out[f"{tag}{step}.ratio_ema{i}"] = model[i].aion.ratio_ema.clone()
    for k, v in model.named_parameters():
        out[f"{tag}.{k}"] = v.detach().clone()


def _fsdp2_training(rank: int, out: dict[str, Tensor]) -> None:
    """FSDP2 (fully_shard per block and at the root) with allreduce statistics and AdamW."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (WORLD,))
    model = make_model("allreduce", rezero=True)
    for block in model[:3]:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    train(model, torch.optim.AdamW(model.parameters(), lr=1e-2), rank)
    for k, v in model.named_parameters():
        assert isinstance(v, DTensor), k
        out[f"fsdp.{k}"] = v.full_tensor().detach().clone()
    for k, b in model.named_buffers():
        out[f"fsdp.{k}"] = b.clone()
    sd = model.state_dict()
    out["fsdp_state_alpha0_shape"] = torch.tensor(sd["0.aion.alpha0"].shape)
    out["fsdp_state_alpha0_is_dtensor"] = torch.tensor(isinstance(sd["0.aion.alpha0"], DTensor))

    # a full plain checkpoint with 0-dim scalars (the 1.0.x format) loads strictly into the
    # sharded model the FSDP2 way (a plain load_state_dict refuses plain tensors for DTensors)
    plain = make_model("allreduce", rezero=True).state_dict()
    plain["0.aion.alpha0"] = torch.tensor(0.2)
    plain["2.aion.alpha"] = torch.tensor(0.3)
    sharded = make_model("allreduce", rezero=True)
    for block in sharded[:3]:
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    set_model_state_dict(
        sharded, plain, options=StateDictOptions(full_state_dict=True, strict=True)
    )
    out["fsdp_loaded.alpha0"] = sharded[0].aion.alpha0.full_tensor().detach().clone()
    out["fsdp_loaded.rezero"] = sharded[2].aion.alpha.full_tensor().detach().clone()


def _count_collectives() -> tuple[dict[str, int], Any]:
    counts = {"n": 0}
    saved = {}
    for name in ("all_reduce", "all_reduce_coalesced", "broadcast", "all_gather", "reduce"):
        fn = getattr(dist, name, None)
        if fn is None:
            continue
        saved[name] = fn

        def wrapped(*a: Any, _fn: Any = fn, **k: Any) -> Any:
            counts["n"] += 1
            return _fn(*a, **k)

        setattr(dist, name, wrapped)

    def restore() -> None:
        for name, fn in saved.items():
            setattr(dist, name, fn)

    return counts, restore


def run(rank: int, out_dir: str, port: int) -> None:
    """Entry point of one rank (``torch.multiprocessing.spawn`` passes ``rank`` first)."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out: dict[str, Tensor] = {}
        d = data(0)
        x, y = d[f"x{rank}"], d[f"y{rank}"]

        # allreduce: token-weighted global statistic
        m = AionResidual(sync_stats="allreduce", ema_gamma=0.0)
        _, stats = m(x, y, return_stats=True)
        out["allreduce_ratio"] = stats["ratio"]
        for k, v in m.state_dict().items():
            out[f"allreduce.{k}"] = v

        # reference: equal-weight AVG over WORLD
        r = AionResidual(mode="reference", ema_gamma=0.0)
        r(x, y)
        out["reference_ratio_ema"] = r.ratio_ema.clone()
        out["reference_alpha"] = r.alpha_cached.clone()

        # deferred: α fixed within a step, one collective for all layers
        layers = nn.ModuleList(AionResidual(sync_stats="deferred", ema_gamma=0.5) for _ in range(3))
        alphas = []
        for micro in range(2):
            for layer in layers:
                _, s = layer(x * (1 + micro), y, return_stats=True)
                alphas.append(s["alpha"])
        out["deferred_alpha_spread"] = (torch.stack(alphas) - alphas[0]).abs().max()
        counts, restore = _count_collectives()
        try:
            sync_stats(layers)
        finally:
            restore()
        out["deferred_collectives"] = torch.tensor(counts["n"])
        for i, layer in enumerate(layers):
            out[f"deferred{i}.ratio_ema"] = layer.ratio_ema.clone()

        # DDP training with allreduce statistics vs the concatenated batch (checked by the test)
        model = make_model("allreduce")
        ddp = DistributedDataParallel(model)
        train(ddp, torch.optim.SGD(ddp.parameters(), lr=0.1), rank)
        for k, v in model.state_dict().items():
            out[f"ddp.{k}"] = v.clone()

        _ddp_accumulation(rank, False, out)
        _ddp_accumulation(rank, True, out)
        _fsdp2_training(rank, out)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
