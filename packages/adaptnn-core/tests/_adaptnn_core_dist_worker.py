"""Worker for test_core_distributed.py: runs inside each process of a 2-rank gloo world.

Kept in its own importable module (not the test file) because torch.multiprocessing's spawn
start method pickles the target by module name, and pytest's importlib mode gives test files
names that a child process cannot import.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from adaptnn_core import dist as core  # the public module; its names are also top-level


def run(local_rank: int, world: int, port: int) -> None:
    """Entry point for ``torch.multiprocessing.spawn``; raises on any failed check."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=local_rank, world_size=world)
    try:
        _checks(local_rank, world)
    finally:
        dist.destroy_process_group()


def _checks(r: int, world: int) -> None:
    assert core.is_initialized()
    assert (core.rank(), core.world_size()) == (r, world)
    group = dist.new_group(list(range(world)))
    assert isinstance(group, dist.ProcessGroup)
    assert (core.rank(group), core.world_size(group)) == (r, world)
    v = float(r + 1)  # 1 on rank 0, 2 on rank 1

    t = torch.tensor([v, 10 * v])
    assert core.all_reduce_(t) is t
    torch.testing.assert_close(t, torch.tensor([3.0, 30.0]))

    t = torch.tensor([v, 10 * v])
    core.all_reduce_(t, op="avg", group=group)
    torch.testing.assert_close(t, torch.tensor([1.5, 15.0]))

    t = torch.tensor([v, -v])
    core.all_reduce_(t, op="max")
    torch.testing.assert_close(t, torch.tensor([2.0, -1.0]))
    core.all_reduce_(t, op="min")
    torch.testing.assert_close(t, torch.tensor([2.0, -1.0]))

    # A non-contiguous view is reduced in place through its storage.
    base = torch.full((3, 2), v)
    view = base.T
    core.all_reduce_(view)
    torch.testing.assert_close(base, torch.full((3, 2), 3.0))

    # Coalesced: mixed shapes and dtypes, one collective per dtype, results copied back.
    ts = [
        torch.full((2, 3), v),
        torch.tensor(v),
        torch.full((4,), v, dtype=torch.float64),
        torch.tensor([r, 5], dtype=torch.int64),
        torch.full((3, 2), v).T,
    ]
    out = core.all_reduce_coalesced_(ts)
    assert all(a is b for a, b in zip(out, ts, strict=True))
    torch.testing.assert_close(ts[0], torch.full((2, 3), 3.0))
    torch.testing.assert_close(ts[1], torch.tensor(3.0))
    torch.testing.assert_close(ts[2], torch.full((4,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(ts[3], torch.tensor([1, 10]))
    torch.testing.assert_close(ts[4], torch.full((2, 3), 3.0))

    fs = [torch.full((2,), v), torch.full((1, 1), 4 * v, dtype=torch.float64)]
    core.all_reduce_coalesced_(fs, op="avg", group=group)
    torch.testing.assert_close(fs[0], torch.full((2,), 1.5))
    torch.testing.assert_close(fs[1], torch.full((1, 1), 6.0, dtype=torch.float64))

    # Statistics are reduced detached: a tensor that requires grad is refused on every rank.
    leaf = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="t requires grad"):
        core.all_reduce_(leaf)
    with pytest.raises(ValueError, match=r"tensors\[1\] requires grad"):
        core.all_reduce_coalesced_([torch.ones(1), leaf * 2])
    # ...but its detached alias shares storage, which is how parameters are synchronised.
    p = torch.nn.Parameter(torch.full((2,), v))
    core.all_reduce_(p.detach(), op="avg")
    torch.testing.assert_close(p.detach(), torch.full((2,), 1.5))

    b = torch.full((2, 2), v)
    core.broadcast_(b, src=1)
    torch.testing.assert_close(b, torch.full((2, 2), 2.0))
    b = torch.full((3, 2), v).T
    core.broadcast_(b, src=0, group=group)
    torch.testing.assert_close(b, torch.full((2, 3), 1.0))
