"""Distributed helpers: single-process no-ops here, and a 2-process gloo world on loopback."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch

from adaptnn_core import dist as core  # the public module; its names are also top-level


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_not_initialised_is_a_no_op() -> None:
    assert not core.is_initialized()
    assert core.world_size() == 1
    assert core.rank() == 0
    t = torch.tensor([1.0, 2.0])
    for op in ("sum", "avg", "max", "min"):
        assert core.all_reduce_(t, op=op) is t
    torch.testing.assert_close(t, torch.tensor([1.0, 2.0]))
    ts = [torch.ones(2), torch.zeros((), dtype=torch.int64)]
    out = core.all_reduce_coalesced_(ts)
    assert out == ts
    assert out[0] is ts[0]
    assert core.broadcast_(t, src=0) is t


def test_argument_validation_without_a_world() -> None:
    with pytest.raises(ValueError, match="t requires grad"):
        core.all_reduce_(torch.ones(2, requires_grad=True))
    with pytest.raises(ValueError, match=r"tensors\[1\] requires grad"):
        core.all_reduce_coalesced_([torch.ones(1), torch.ones(1, requires_grad=True)])
    with pytest.raises(ValueError, match="t requires grad"):
        core.broadcast_(torch.ones(2, requires_grad=True))
    with pytest.raises(ValueError, match="op must be one of"):
        core.all_reduce_(torch.ones(2), op="prod")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='op="avg" needs a floating'):
        core.all_reduce_(torch.ones(2, dtype=torch.int64), op="avg")
    with pytest.raises(TypeError, match=r"t must be a torch\.Tensor"):
        core.all_reduce_([1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tensors must be a sequence"):
        core.all_reduce_coalesced_(torch.ones(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="src must be >= 0"):
        core.broadcast_(torch.ones(2), src=-1)


@pytest.mark.distributed
def test_gloo_world_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    # The children import the worker by module name (spawn hands them our sys.path).
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    sys.modules.pop("_adaptnn_core_dist_worker", None)
    import _adaptnn_core_dist_worker as worker

    # spawn, not fork: a forked child cannot run autograd once the parent has used autograd's
    # worker threads, which depends on which tests ran before this one.
    torch.multiprocessing.start_processes(
        worker.run, args=(2, _free_port()), nprocs=2, join=True, start_method="spawn"
    )
