"""Helpers shared by the cross-package tests: a learnable byte stream and the exact-resume check.

Each test in this folder puts two libraries together the way user code would, through their
public APIs only, and checks that a run resumed from a checkpoint continues exactly as an
uninterrupted one (:func:`assert_resumes_exactly`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from aiether import (
    GrowthAwareLR,
    GrowthController,
    GrowthTrigger,
    StackAdapter,
    load_growth_state,
    make_growable,
    param_groups,
    save_growth_state,
)
from athena import AthenaModel, PolyAdapterConfig, get_athena_model


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


class ByteNet(nn.Module):
    """A tiny byte model of pre-norm MLP blocks ``x ← join(x, mlp(norm(x)))``; ``join`` is a plain
    sum, or the residual module ``residual()`` builds (called with ``(x, y, norm(x))``)."""

    def __init__(
        self, d: int = 16, n_blocks: int = 3, residual: Callable[[], nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, d)
        self.blocks = nn.ModuleList(_Block(d, residual) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits


class _Block(nn.Module):
    def __init__(self, d: int, residual: Callable[[], nn.Module] | None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.res = residual() if residual is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        y = self.mlp(n)
        out: torch.Tensor = x + y if self.res is None else self.res(x, y, n)
        return out


def lm_loss(model: nn.Module, chunk: torch.Tensor) -> torch.Tensor:
    """Next-byte cross-entropy of ``model`` on ``(B, S + 1)`` bytes."""
    logits = model(chunk[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1))


def train_step(model: nn.Module, opt: torch.optim.Optimizer, chunk: torch.Tensor) -> float:
    loss = lm_loss(model, chunk)
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return float(loss.detach())


STACK = StackAdapter(path="blocks", out_proj_names=("mlp.2",))  # ByteNet's blocks for aiether


class GrowthRun:
    """A ByteNet grown by aiether on a fixed schedule, with a given optimiser (a :class:`Run`).

    ``save`` writes the model and optimiser state and ``growth_state.json``; ``load`` restores
    them into a freshly built run, as a user resuming a job would.
    """

    def __init__(
        self,
        residual: Callable[[], nn.Module] | None,
        optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
        schedule: tuple[int, ...] = (4, 9),
        batches: list[torch.Tensor] | None = None,
        state_transfer: str = "second_moment",
    ) -> None:
        torch.manual_seed(0)
        self.model = ByteNet(residual=residual)
        make_growable(self.model, STACK, initial_active=1)
        self.opt = optimizer(param_groups(self.model, weight_decay=0.01, adapter=STACK))
        self.batches = batches or counting_batches(16, 4, 12)
        probe = self.batches[0]
        self.controller = GrowthController(
            self.model,
            self.opt,
            trigger=GrowthTrigger("schedule", schedule=schedule),
            operator="copy",
            adapter=STACK,
            isolated_warmup_steps=2,
            rewarm_steps=2,
            state_transfer=state_transfer,  # type: ignore[arg-type]
            probe=lambda m: lm_loss(m, probe),
        )
        self.sched = GrowthAwareLR(self.opt, lambda t: 1.0 - t / 40, self.controller)

    def step(self, i: int) -> float:
        loss = train_step(self.model, self.opt, self.batches[i])
        self.controller.step(i)
        self.sched.step()
        return loss

    def save(self, folder: Path) -> None:
        torch.save(
            {"model": self.model.state_dict(), "opt": self.opt.state_dict()}, folder / "ckpt.pt"
        )
        save_growth_state(folder, self.controller, self.sched)

    def load(self, folder: Path) -> None:
        ckpt = torch.load(folder / "ckpt.pt", weights_only=True)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["opt"])
        load_growth_state(folder, self.controller, self.sched)

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())


class AdapterRun:
    """athena LoRA adapters trained on a frozen base (a :class:`Run`).

    ``base()`` must build the same base model every time (it is not in the adapter file);
    modules of the types in ``frozen_stats`` run in eval mode while training, so running
    statistics of the base (AION's EMA) stay as they were, with its weights. ``save`` writes the
    adapter in PEFT's layout and the optimiser state; ``load`` puts the adapter on a new base.
    """

    def __init__(
        self,
        base: Callable[[], nn.Module],
        config: PolyAdapterConfig,
        frozen_stats: tuple[type[nn.Module], ...] = (),
    ) -> None:
        self.base, self.frozen_stats = base, frozen_stats
        self.model = get_athena_model(base(), config)
        self.batches = counting_batches(12, 4, 12, seed=2)
        self._optimizer()

    def _optimizer(self) -> None:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=1e-2)

    def train_mode(self) -> None:
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, self.frozen_stats):
                m.eval()

    def step(self, i: int) -> float:
        self.train_mode()
        return train_step(self.model, self.opt, self.batches[i])

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder / "adapter")
        torch.save(self.opt.state_dict(), folder / "opt.pt")

    def load(self, folder: Path) -> None:
        self.model = AthenaModel.from_pretrained(self.base(), folder / "adapter", is_trainable=True)
        self._optimizer()
        self.opt.load_state_dict(torch.load(folder / "opt.pt", weights_only=True))

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())
