"""No host sync on the hot paths (block stack forward, snapshots, statistics); the model compiles
with fullgraph=True and recompiles once per depth (slow: inductor compiles C++ on CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from _aiether_tiny import batch, tiny_gpt

from aiether import TrajectoryTracker
from aiether.stack import GrowableStack


@contextmanager
def _no_host_sync() -> Iterator[None]:
    saved = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "tolist")}

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync")

    try:
        for name in saved:
            setattr(torch.Tensor, name, boom)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("preserve", ["zero_out", "gate_ramp", "rezero"])
def test_forward_snapshots_and_statistics_do_not_sync(preserve: str) -> None:
    model = tiny_gpt(preserve=preserve)  # type: ignore[arg-type]
    stack = model.h
    assert isinstance(stack, GrowableStack)
    stack.grow()
    tracker = TrajectoryTracker(stack[3].named_parameters(), window=4)
    sketch = TrajectoryTracker(
        stack[3].named_parameters(), window=4, storage="sketch", sketch_dim=64
    )
    x, y = batch()
    with _no_host_sync():
        for _ in range(4):
            _, loss = model(x, y)
            tracker.snapshot()
            sketch.snapshot()
            stack.advance()
        tracker.aggregate()
        sketch.aggregate()
    assert loss is not None


@pytest.mark.slow
def test_compiled_forward_recompiles_once_per_depth() -> None:
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    model = tiny_gpt().eval()
    stack = model.h
    assert isinstance(stack, GrowableStack)
    compiled = torch.compile(model, fullgraph=True)
    x, y = batch()
    with torch.no_grad():
        for depth in range(2):
            for _ in range(2):
                logits, _ = compiled(x, y)
                torch.testing.assert_close(logits, model(x, y)[0])
            if depth == 0:
                stack.grow()
    assert counters["stats"]["unique_graphs"] == 2
