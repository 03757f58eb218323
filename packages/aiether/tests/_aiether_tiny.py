"""Tiny models and a few training steps shared by the aiether tests."""

from __future__ import annotations

import torch
from torch import nn

from aiether.model import AIetherGPT, GPTConfig

TINY = GPTConfig(block_size=16, vocab_size=64, n_layer=4, n_head=2, n_embd=16)


def tiny_gpt(seed: int = 0, **stack_kwargs: object) -> AIetherGPT:
    torch.manual_seed(seed)
    return AIetherGPT(TINY, **stack_kwargs)  # type: ignore[arg-type]


def batch(seed: int = 1, b: int = 3, t: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, TINY.vocab_size, (b, t + 1), generator=g)
    return idx[:, :-1], idx[:, 1:]


def train_steps(
    model: nn.Module, steps: int = 3, lr: float = 1e-2, weight_decay: float = 0.1
) -> None:
    """A few AdamW steps on random tokens (so the blocks are not at their init)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for s in range(steps):
        x, y = batch(seed=100 + s)
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
