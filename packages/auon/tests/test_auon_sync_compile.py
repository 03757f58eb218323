"""No host synchronisation inside step; the functional step compiles with fullgraph=True."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from auon import AuON, AuONWithAuxAdam, HybridAuON, Muon, auon_step


@contextmanager
def _no_host_sync() -> Iterator[None]:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync in step")

    saved = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "tolist")}
    try:
        for name in saved:
            setattr(torch.Tensor, name, boom)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s)) for s in [(8, 4), (4, 2, 3), (6, 6)]]


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: AuON(ps, lr=torch.tensor(0.1), weight_decay=0.1, foreach=True),
        lambda ps: AuON(ps, lr=0.1, weight_decay=0.1, foreach=False, brake="rms"),
        lambda ps: AuON(ps, lr=0.1, weight_decay=0.1, variant="repo"),
        lambda ps: HybridAuON(ps, lr=0.1, weight_decay=0.1),
        lambda ps: HybridAuON(ps, lr=0.1, weight_decay=0.1, variant="repo"),
        lambda ps: Muon(ps, lr=0.1),
        lambda ps: AuONWithAuxAdam(
            [{"params": ps[:2], "use_auon": True}, {"params": ps[2:], "use_auon": False}]
        ),
    ],
)
def test_no_host_sync(make: Any) -> None:
    ps = _params()
    opt = make(ps)
    for _ in range(2):
        for p in ps:
            p.grad = torch.randn_like(p)
        with _no_host_sync():
            opt.step()
    # and with a NaN gradient (the skip path is sync-free too)
    ps[0].grad = torch.full_like(ps[0], float("nan"))
    with _no_host_sync():
        opt.step()


def test_compiled_functional_step_equals_eager() -> None:
    torch.manual_seed(1)
    shapes = [(8, 4), (4, 2, 3), (6, 6)]
    pa = [torch.randn(s) for s in shapes]
    pb = [p.clone() for p in pa]
    ma = [torch.zeros(s) for s in shapes]
    mb = [torch.zeros(s) for s in shapes]
    ca = [torch.zeros((), dtype=torch.int64) for _ in shapes]
    cb = [torch.zeros((), dtype=torch.int64) for _ in shapes]

    def step(
        p: list[torch.Tensor], g: list[torch.Tensor], m: list[torch.Tensor], c: list[torch.Tensor]
    ) -> None:
        auon_step(p, g, m, c, lr=0.1, weight_decay=0.1, foreach=True)

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    for _ in range(3):
        gs = [torch.randn(s) for s in shapes]
        step(pa, gs, ma, ca)
        compiled(pb, gs, mb, cb)
    for a, b in zip(pa, pb, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_compiled_inductor_step_equals_eager() -> None:
    torch.manual_seed(2)
    shapes = [(16, 8), (8, 8)]
    pa = [torch.randn(s) for s in shapes]
    pb = [p.clone() for p in pa]
    ma = [torch.zeros(s) for s in shapes]
    mb = [torch.zeros(s) for s in shapes]

    def step(p: list[torch.Tensor], g: list[torch.Tensor], m: list[torch.Tensor]) -> None:
        auon_step(p, g, m, lr=0.1, foreach=True)

    compiled = torch.compile(step, fullgraph=True)
    for _ in range(3):
        gs = [torch.randn(s) for s in shapes]
        step(pa, gs, ma)
        compiled(pb, gs, mb)
    for a, b in zip(pa, pb, strict=True):
        torch.testing.assert_close(a, b)
