"""Two-process gloo DDP with ProgressiveFreezingScheduler in both modes: every rank takes the same
decisions from all-reduced statistics although each rank sees other data (and, at one step, a loss
spike that only rank 0 reports), and the frozen front block stays bit-identical under AdamW."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    import _athena_freeze_ddp_worker as worker  # tests/ is on sys.path (conftest.py)

    out_dir = tmp_path_factory.mktemp("athena_freeze_ddp")
    # raises if a rank fails, e.g. DDP's unused-parameter error once a group is frozen
    mp.spawn(worker.run, args=(str(out_dir), _free_port()), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("mode", ["requires_grad", "lr_zero"])
def test_ranks_take_identical_decisions(ranks: list[dict[str, Any]], mode: str) -> None:
    import _athena_freeze_ddp_worker as worker

    r0, r1 = ranks[0][mode], ranks[1][mode]
    assert r0["finite"] and r1["finite"]
    # each rank trains on its own shard: the local losses differ, so decisions taken from them
    # would not have to agree
    assert not torch.allclose(r0["losses"], r1["losses"])
    assert r0["events"] == r1["events"]
    assert r0["depth"] == r1["depth"]
    kinds = [(e["kind"], e["group"]) for e in r0["events"]]
    assert kinds[:3] == [("freeze", 0), ("freeze", 1), ("freeze", 2)]
    # only rank 0 reported the spike; the all-reduced loss made rank 1 unfreeze too
    spike = [e for e in r0["events"] if e["kind"] == "unfreeze"]
    assert [(e["step"], e["group"]) for e in spike] == [(worker.SPIKE_STEP, 2)]
    for key, value in r0["params"].items():
        assert torch.equal(value, r1["params"][key]), key
    assert r0["front_unchanged"] and r1["front_unchanged"]
