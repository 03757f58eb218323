"""Helpers shared by the cross-package tests: a learnable byte stream and the exact-resume check.

Each test in this folder puts two libraries together the way user code would, through their
public APIs only, and checks that a run resumed from a checkpoint continues exactly as an
uninterrupted one (:func:`assert_resumes_exactly`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch


def counting_batches(n: int, batch: int, seq_len: int, seed: int = 1) -> list[torch.Tensor]:
    """``n`` batches of ``(batch, seq_len + 1)`` byte sequences that count up by a random stride
    (mod 256): a stream a tiny model learns in a few dozen steps."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        start = torch.randint(0, 256, (batch, 1), generator=gen)
        stride = torch.randint(1, 4, (batch, 1), generator=gen)
        out.append((start + stride * torch.arange(seq_len + 1)) % 256)
    return out


class Run(Protocol):
    """One training run: steps, and a checkpoint written to and read from a folder."""

    def step(self, i: int) -> float: ...

    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path) -> None: ...

    def state(self) -> dict[str, torch.Tensor]: ...


def assert_resumes_exactly(build: Callable[[], Run], steps: int, split: int, tmp: Path) -> None:
    """Train ``steps`` steps straight through; train ``split`` steps, checkpoint, build a fresh run,
    load and train the rest. Losses and final states must be bit-identical."""
    straight = build()
    reference = [straight.step(i) for i in range(steps)]
    first = build()
    head = [first.step(i) for i in range(split)]
    first.save(tmp)
    resumed = build()
    resumed.load(tmp)
    tail = [resumed.step(i) for i in range(split, steps)]
    assert head + tail == reference
    want, got = straight.state(), resumed.state()
    assert want.keys() == got.keys()
    for name, tensor in want.items():
        assert torch.equal(tensor, got[name]), name
