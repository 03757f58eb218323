"""Rank entry point of the 2-process gloo tests in ``test_auon_distributed.py``.

Kept in its own importable module (not the test file) because ``torch.multiprocessing.spawn``
children import the function they run by module name. One spawn runs every scenario: FSDP2
AuON, FSDP2 AuON with the brake, DDP AuON and FSDP2 Muon, on the same tiny model and batches.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from auon import AuON, Muon, _orth_step

KINDS = ("fsdp", "brake", "ddp", "muon", "muon_split")


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 12, bias=False), nn.Tanh(), nn.Linear(12, 7, bias=False))


def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 10, generator=g) for _ in range(3)]


def optimizer(kind: str, params: Any, *, split: bool = False) -> torch.optim.Optimizer:
    if kind in ("muon", "muon_split"):
        return Muon(params, lr=0.05, split_across_ranks=split)
    return AuON(params, lr=0.05, weight_decay=0.1, brake="rms" if kind == "brake" else "none")


def _scenario(kind: str) -> dict[str, Any]:
    m = model()
    if kind in ("ddp", "muon_split"):
        wrapped: nn.Module = nn.parallel.DistributedDataParallel(m)
    else:
        for layer in m:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(m)
        wrapped = m
    opt = optimizer(kind, m.parameters(), split=kind == "muon_split")
    counts: list[int] = []
    ns_calls = [0]
    real_orthogonalize = _orth_step.orthogonalize

    def counting_orthogonalize(*args: Any, **kwargs: Any) -> torch.Tensor:
        ns_calls[0] += 1
        return real_orthogonalize(*args, **kwargs)

    _orth_step.orthogonalize = counting_orthogonalize  # type: ignore[assignment]
    real = dist.all_reduce

    def counting(*args: Any, **kwargs: Any) -> Any:
        counts[-1] += 1
        return real(*args, **kwargs)

    for x in batches():
        # every rank sees the full batch, so the mean gradient equals the single-process one
        wrapped(x).square().mean().backward()
        counts.append(0)
        dist.all_reduce = counting  # type: ignore[assignment]
        try:
            opt.step()
        finally:
            dist.all_reduce = real
        opt.zero_grad()
    _orth_step.orthogonalize = real_orthogonalize  # type: ignore[assignment]
    params = [
        (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for p in m.parameters()
    ]
    return {"params": params, "counts": counts, "ns_calls": ns_calls[0]}


def run(rank: int, port: int, out: str) -> None:
    """Entry point of one rank (``torch.multiprocessing.spawn`` passes ``rank`` first)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        results = {kind: _scenario(kind) for kind in KINDS}
        torch.save(results, f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()
