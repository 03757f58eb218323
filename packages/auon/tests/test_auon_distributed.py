"""Distributed AuON on CPU/gloo with 2 ranks: FSDP2 (fully_shard) and DDP.

One spawn (2 ranks on loopback) runs every scenario of ``_auon_dist_worker.py``; the tests compare
each with a single-process run on the same batches. Spawn, not fork: a forked child cannot run
autograd once the parent process has used autograd's worker threads (earlier tests may have).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.distributed

_HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_module() -> Any:
    if str(_HERE) not in sys.path:
        sys.path.insert(0, str(_HERE))  # spawned children inherit sys.path
    import _auon_dist_worker

    return _auon_dist_worker


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    worker = _worker_module()
    out = tmp_path_factory.mktemp("auon_dist") / "out.pt"
    mp.spawn(worker.run, args=(_free_port(), str(out)), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2)]
    # rank 0's results, with every rank's Newton–Schulz call count
    loaded: dict[str, dict[str, Any]] = ranks[0]
    for kind, res in loaded.items():
        res["ns_calls_per_rank"] = [r[kind]["ns_calls"] for r in ranks]
        res["params_per_rank"] = [r[kind]["params"] for r in ranks]
    return loaded


def _reference(kind: str) -> list[torch.Tensor]:
    worker = _worker_module()
    m = worker.model()
    opt = worker.optimizer(kind, m.parameters())
    for x in worker.batches():
        m(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("kind", ["fsdp", "brake"])
def test_fsdp2_auon_equals_single_process_with_batched_reductions(
    results: dict[str, dict[str, Any]], kind: str
) -> None:
    res = results[kind]
    for a, b in zip(res["params"], _reference(kind), strict=True):
        torch.testing.assert_close(a, b)
    # one coalesced all-reduce per phase: ΣG², Σcosh² (+ MAX and SUM for the brake)
    assert res["counts"] == [4 if kind == "brake" else 2] * 3


def test_ddp_auon_equals_single_process(results: dict[str, dict[str, Any]]) -> None:
    res = results["ddp"]
    for a, b in zip(res["params"], _reference("ddp"), strict=True):
        torch.testing.assert_close(a, b)
    assert res["counts"] == [0, 0, 0]  # AuON itself makes no collective under DDP


def test_fsdp2_muon_gathers_and_matches(results: dict[str, dict[str, Any]]) -> None:
    res = results["muon"]
    for a, b in zip(res["params"], _reference("muon"), strict=True):
        # gathered (full_tensor) matrices see the same ops as a single process: the same bits
        assert torch.equal(a, b)


def test_ddp_muon_splits_the_orthogonalisation_and_matches(
    results: dict[str, dict[str, Any]],
) -> None:
    res = results["muon_split"]
    reference = _reference("muon")
    for rank_params in res["params_per_rank"]:  # every rank holds the same, unsplit update
        for a, b in zip(rank_params, reference, strict=True):
            assert torch.equal(a, b)
    # 2 matrices x 3 steps: each rank orthogonalises one matrix per step instead of both
    assert res["ns_calls_per_rank"] == [3, 3]
    assert results["muon"]["ns_calls_per_rank"] == [6, 6]  # FSDP2 Muon: every rank, every matrix
