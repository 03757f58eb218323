"""Two-process gloo DDP: a growth decided on rank 0 happens at the same step on both ranks,
replicas stay identical through growth and training, and DDP raises no reducer error; a
DTensor sharded over the ranks gets the statistics of the whole tensor."""

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
    import _aiether_ddp_worker as worker  # tests/ is on sys.path (conftest.py)

    out_dir = tmp_path_factory.mktemp("aiether_ddp")
    mp.spawn(worker.run, args=(str(out_dir), _free_port()), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_both_ranks_grow_at_the_same_steps(ranks: list[dict[str, Any]]) -> None:
    import _aiether_ddp_worker as worker

    r0, r1 = ranks
    # rank 1's own losses never plateaued at PLATEAU_STEP: it grew there on rank 0's word
    assert r0["grown"].tolist() == r1["grown"].tolist() == [worker.PLATEAU_STEP, 10]
    assert r0["active"].tolist() == r1["active"].tolist() == [0, 1, 2]


def test_replicas_stay_identical(ranks: list[dict[str, Any]]) -> None:
    r0, r1 = ranks
    assert not torch.equal(r0["losses"], r1["losses"])  # different data per rank
    for key, value in r0["params"].items():
        assert torch.equal(value, r1["params"][key]), key


def test_sharded_statistics_equal_the_whole_tensor(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        torch.testing.assert_close(r["sharded"], r["unsharded"])
        assert float(r["unsharded"][0]) > 1.0  # a random walk: not a degenerate straight line
