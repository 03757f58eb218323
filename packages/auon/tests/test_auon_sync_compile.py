"""No host sync or host-to-device copy in step (CPU, meta, CUDA); the functional step compiles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
import torch

from auon import AuON, AuONWithAuxAdam, HybridAuON, Muon, auon_step


@contextmanager
def _no_host_sync(host_counters: Callable[[], list[torch.Tensor]] = list) -> Iterator[None]:
    """``.item()``, ``bool()`` and ``.tolist()`` raise, except ``.item()`` on ``host_counters()``.

    The exception is torch's AdamW step counter, which ``torch.optim.AdamW`` (and so the AdamW
    groups of ``AuONWithAuxAdam``) keeps on the host by design and reads there: no device sync.
    """
    saved = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "tolist")}

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync in step")

    def item(self: torch.Tensor) -> Any:
        if any(self is c for c in host_counters()):
            return saved["item"](self)
        raise AssertionError("host sync in step")

    try:
        for name in saved:
            setattr(torch.Tensor, name, item if name == "item" else boom)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


_FACTORIES = ("tensor", "as_tensor", "asarray")


def _off_host(device: object) -> bool:
    return device is not None and torch.device(device).type != "cpu"  # type: ignore[arg-type]


@contextmanager
def _no_host_to_device_copy() -> Iterator[None]:
    """Raise on every host-to-device transfer: the ones that synchronise on CUDA.

    ``torch.tensor(list, device=d)`` / ``torch.as_tensor(float, device=d)`` (and ``asarray``) with a
    non-CPU ``d`` build the data on the host and copy it over, as does ``cpu_tensor.to(d)`` or
    ``d_tensor.copy_(cpu_tensor)``; on CUDA that copy waits for the device. Reading a value that
    already lives on the host (a CPU step counter, a 0-D CPU scalar operand) is not a transfer.
    """
    saved_factories = {name: getattr(torch, name) for name in _FACTORIES}
    saved_to, saved_copy = torch.Tensor.to, torch.Tensor.copy_

    def factory(name: str) -> Any:
        real = saved_factories[name]

        def checked(data: Any, *args: Any, **kwargs: Any) -> Any:
            if _off_host(kwargs.get("device")):
                raise AssertionError(f"torch.{name}(..., device={kwargs['device']}) in step")
            return real(data, *args, **kwargs)

        return checked

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = saved_to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type != "cpu":
            raise AssertionError(f"host-to-device copy to {out.device} in step")
        return out

    def copy_(self: torch.Tensor, src: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.device.type != "cpu" and src.device.type == "cpu":
            raise AssertionError(f"host-to-device copy_ to {self.device} in step")
        return saved_copy(self, src, *args, **kwargs)

    try:
        for name in _FACTORIES:
            setattr(torch, name, factory(name))
        torch.Tensor.to = to  # type: ignore[method-assign,assignment]
        torch.Tensor.copy_ = copy_  # type: ignore[method-assign,assignment]
        yield
    finally:
        for name, fn in saved_factories.items():
            setattr(torch, name, fn)
        torch.Tensor.to = saved_to  # type: ignore[method-assign]
        torch.Tensor.copy_ = saved_copy  # type: ignore[method-assign]


def _params(device: str = "cpu") -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, device=device)) for s in [(8, 4), (4, 2, 3), (6, 6)]]


_MAKERS = {
    "auon-paper-foreach-tensor-lr": lambda ps: AuON(
        ps, lr=torch.tensor(0.1), weight_decay=0.1, foreach=True
    ),
    "auon-paper-loop": lambda ps: AuON(ps, lr=0.1, weight_decay=0.1, foreach=False),
    "auon-paper-foreach-brake": lambda ps: AuON(
        ps, lr=0.1, weight_decay=0.1, foreach=True, brake="rms"
    ),
    "auon-paper-loop-brake": lambda ps: AuON(
        ps, lr=0.1, weight_decay=0.1, foreach=False, brake="rms"
    ),
    "auon-repo-foreach": lambda ps: AuON(
        ps, lr=0.1, weight_decay=0.1, variant="repo", foreach=True
    ),
    "auon-repo-loop": lambda ps: AuON(ps, lr=0.1, weight_decay=0.1, variant="repo", foreach=False),
    "hybrid-paper": lambda ps: HybridAuON(ps, lr=0.1, weight_decay=0.1),
    "hybrid-paper-tensor-lr": lambda ps: HybridAuON(ps, lr=torch.tensor(0.1), weight_decay=0.1),
    "hybrid-paper-loop": lambda ps: HybridAuON(ps, lr=0.1, weight_decay=0.1, foreach=False),
    "hybrid-repo": lambda ps: HybridAuON(ps, lr=0.1, weight_decay=0.1, variant="repo"),
    "muon-foreach": lambda ps: Muon(ps, lr=0.1, foreach=True),
    "muon-loop-tensor-lr": lambda ps: Muon(ps, lr=torch.tensor(0.1), foreach=False),
    "aux-adam": lambda ps: AuONWithAuxAdam(
        [
            {"params": ps[:2], "use_auon": True, "weight_decay": 0.1},
            {"params": ps[2:], "use_auon": False, "weight_decay": 0.1},
        ]
    ),
    "aux-adam-loop": lambda ps: AuONWithAuxAdam(
        [
            {"params": ps[:2], "use_auon": True, "foreach": False},
            {"params": ps[2:], "use_auon": False, "weight_decay": 0.1, "foreach": False},
        ]
    ),
}


def _run_steps(opt: torch.optim.Optimizer, ps: list[torch.nn.Parameter], guard: Any) -> None:
    for _ in range(2):
        for p in ps:
            p.grad = torch.randn_like(p)
        with guard():
            opt.step()
    # and with a NaN gradient (the skip path is sync-free too)
    ps[0].grad = torch.full_like(ps[0], float("nan"))
    with guard():
        opt.step()


@pytest.mark.parametrize("name", sorted(_MAKERS))
def test_no_host_to_device_copy_on_meta(name: str) -> None:
    """Every step on ``meta`` parameters (a stand-in for an accelerator) with no host transfer.

    A ``meta`` tensor has no data, so ``.item()``, ``bool()`` and ``tolist()`` on it raise by
    themselves; the guard adds the host-to-device copies that ``torch.tensor(list, device=...)``
    and friends make.
    """
    ps = _params("meta")
    _run_steps(_MAKERS[name](ps), ps, _no_host_to_device_copy)


@pytest.mark.parametrize("name", sorted(_MAKERS))
def test_no_host_sync(name: str) -> None:
    ps = _params()
    opt = _MAKERS[name](ps)

    def adamw_steps() -> list[torch.Tensor]:
        return [st["step"] for st in opt.state.values() if "exp_avg" in st]

    _run_steps(opt, ps, partial(_no_host_sync, adamw_steps))


@pytest.mark.gpu
@pytest.mark.parametrize("lr_on", ["float", "cuda", "cpu"])
@pytest.mark.parametrize("name", sorted(_MAKERS))
def test_no_sync_on_cuda(name: str, lr_on: str) -> None:
    """Every step on CUDA under ``torch.cuda.set_sync_debug_mode("error")``.

    ``lr_on`` replaces a float ``lr`` by a 1-element tensor on the GPU or on the host (the AdamW
    groups of ``AuONWithAuxAdam`` keep a float ``lr``: torch's AdamW reads a tensor ``lr`` with
    ``.item()`` unless ``capturable``).
    """
    ps = _params("cuda")
    opt = _MAKERS[name](ps)
    if lr_on != "float":
        for group in opt.param_groups:
            if group.get("use_auon", True):
                group["lr"] = torch.tensor([0.05], device=lr_on)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()  # state creation (zeros, fills) happens once, outside the checked steps
    torch.cuda.synchronize()
    _run_steps(opt, ps, _cuda_sync_error)
    torch.cuda.synchronize()
    assert all(bool(torch.isfinite(p).all()) for p in ps[1:])


@contextmanager
def _cuda_sync_error() -> Iterator[None]:
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


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
