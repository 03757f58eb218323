"""A plain language-model training loop and evaluation shared by the benchmarks and the demo."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
from torch import nn

from .data import get_batch
from .progress import progress

OnStep = Callable[[int, torch.Tensor, torch.Tensor, nn.Module], None]
_Self = TypeVar("_Self")


class LossModel(Protocol):
    """What training and evaluation need of a model: an ``nn.Module`` with ``loss(x, y)``.

    The harness :class:`~benchmarks.harness.GPT` is one; any module with a ``loss`` method taking
    (B, T) int64 inputs and targets and returning the mean cross-entropy in nats is another.
    """

    training: bool

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self: _Self, mode: bool = True) -> _Self: ...

    def eval(self: _Self) -> _Self: ...


_Model = TypeVar("_Model", bound=LossModel)


@dataclass
class TrainLog:
    """What a training run recorded, one entry per step."""

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    crashed: bool = False
    seconds: float = 0.0


def cosine_schedule(
    step: int, total: int, *, warmup_frac: float = 0.1, min_ratio: float = 0.1
) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup_frac`` of steps, then cosine to ``min_ratio``."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress_))


@torch.no_grad()
def estimate_loss(
    model: LossModel,
    data: torch.Tensor,
    *,
    batch_size: int,
    seq_len: int,
    iters: int,
    seed: int = 1234,
    device: torch.device | str = "cpu",
) -> float:
    """Mean cross-entropy (nats per byte) over ``iters`` fixed random windows of ``data``."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=device)
    for _ in range(iters):
        x, y = get_batch(data, batch_size, seq_len, gen, device)
        total += model.loss(x, y)
    model.train(was_training)
    return float(total) / iters


def train_lm(
    model: _Model,
    optimizer: torch.optim.Optimizer,
    data: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    seed: int,
    device: torch.device | str = "cpu",
    clip: float | None = 1.0,
    schedule: Callable[[int], float] | None = None,
    on_step: Callable[[int, torch.Tensor, torch.Tensor, _Model], None] | None = None,
    progress_bar: bool = True,
    desc: str = "train",
) -> TrainLog:
    """Train ``model`` for ``steps`` steps on random windows of ``data``.

    The data order depends only on ``seed``, so arms with the same seed see the same batches.
    ``schedule(step)`` multiplies every group's ``initial_lr``. Training stops at the first
    non-finite loss (``log.crashed``).
    """
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    gen = torch.Generator().manual_seed(seed)
    log = TrainLog()
    model.train()
    start = time.perf_counter()
    bar = progress(range(steps), desc=desc, disable=not progress_bar)
    for step in bar:
        if schedule is not None:
            mult = schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * mult
        x, y = get_batch(data, batch_size, seq_len, gen, device)
        loss = model.loss(x, y)
        torch.autograd.backward(loss)
        if clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        else:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        if on_step is not None:
            on_step(step, loss.detach(), grad_norm.detach(), model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        log.losses.append(loss_value)
        log.grad_norms.append(float(grad_norm))
        if progress_bar and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")  # type: ignore[attr-defined]
        if not math.isfinite(loss_value):
            log.crashed = True
            break
    log.seconds = time.perf_counter() - start
    return log
