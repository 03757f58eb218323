"""Distributed AuON on CPU/gloo with 2 ranks: FSDP2 (fully_shard) and DDP."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard

from auon import AuON, Muon

# fork keeps the multi-process tests fast (no re-import of torch); spawn where fork is missing
_START = "fork" if "fork" in mp.get_all_start_methods() else "spawn"

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 12, bias=False), nn.Tanh(), nn.Linear(12, 7, bias=False))


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 10, generator=g) for _ in range(3)]


def _reference(kind: str) -> list[torch.Tensor]:
    m = _model()
    opt: torch.optim.Optimizer
    if kind == "muon":
        opt = Muon(m.parameters(), lr=0.05)
    else:
        opt = AuON(
            m.parameters(), lr=0.05, weight_decay=0.1, brake="rms" if kind == "brake" else "none"
        )
    for x in _batches():
        m(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in m.parameters()]


def _worker(rank: int, port: int, out: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        m = _model()
        if kind == "ddp":
            model: nn.Module = nn.parallel.DistributedDataParallel(m)
        else:
            for layer in m:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer)
            fully_shard(m)
            model = m
        opt: torch.optim.Optimizer
        if kind == "muon":
            opt = Muon(m.parameters(), lr=0.05)
        else:
            opt = AuON(
                m.parameters(),
                lr=0.05,
                weight_decay=0.1,
                brake="rms" if kind == "brake" else "none",
            )
        counts: list[int] = []
        real = dist.all_reduce

        def counting(*args: Any, **kwargs: Any) -> Any:
            counts[-1] += 1
            return real(*args, **kwargs)

        for x in _batches():
            # every rank sees the full batch, so the mean gradient equals the single-process one
            model(x).square().mean().backward()
            counts.append(0)
            dist.all_reduce = counting  # type: ignore[assignment]
            try:
                opt.step()
            finally:
                dist.all_reduce = real
            opt.zero_grad()
        params = [
            (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for p in m.parameters()
        ]
        if rank == 0:
            torch.save({"params": params, "counts": counts}, out)
    finally:
        dist.destroy_process_group()


def _spawn(kind: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.pt")
        mp.start_processes(
            _worker, args=(_free_port(), out, kind), nprocs=2, join=True, start_method=_START
        )
        result: dict[str, Any] = torch.load(out, weights_only=True)
    return result


@pytest.mark.parametrize("kind", ["fsdp", "brake"])
def test_fsdp2_auon_equals_single_process_with_batched_reductions(kind: str) -> None:
    res = _spawn(kind)
    for a, b in zip(res["params"], _reference(kind), strict=True):
        torch.testing.assert_close(a, b)
    # one coalesced all-reduce per phase: ΣG², Σcosh² (+ MAX and SUM for the brake)
    assert res["counts"] == [4 if kind == "brake" else 2] * 3


def test_ddp_auon_equals_single_process() -> None:
    res = _spawn("ddp")
    for a, b in zip(res["params"], _reference("ddp"), strict=True):
        torch.testing.assert_close(a, b)
    assert res["counts"] == [0, 0, 0]  # AuON itself makes no collective under DDP


def test_fsdp2_muon_gathers_and_matches() -> None:
    res = _spawn("muon")
    for a, b in zip(res["params"], _reference("muon"), strict=True):
        torch.testing.assert_close(a, b, rtol=0.016, atol=1e-3)
