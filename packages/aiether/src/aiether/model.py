"""``AIetherGPT``: the original project's GPT, in plain PyTorch, with its blocks in a
:class:`~aiether.stack.GrowableStack`.

Architecture (as the original): tied token embedding and output head, learned positions,
pre-norm RMSNorm (eps 1e-6), causal scaled-dot-product attention, SwiGLU MLP (``c_fc`` d → 8d
split into ``(a, gate)``, ``silu(a)·gate``, ``c_proj`` 4d → d); weights N(0, 0.02), the two
output projections ``c_proj`` at std 0.02/√(2·n_layer). ``n_layer`` is the final depth; how many
blocks run at the start is the stack's ``initial_active``. The Hugging Face wrapper lives in
:mod:`aiether.hf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aiether.stack import GrowableStack, Preserve, SlotOrder

OUT_PROJ_NAMES: tuple[str, ...] = ("attn.c_proj", "mlp.c_proj")


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """The original ``GPTConfig`` fields and defaults (``n_layer`` = the final depth)."""

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        object.__setattr__(self.c_proj, "residual_projection", True)  # scaled init
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, D) -> (B, T, D)``."""
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        out: Tensor = self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, d)))
        return out


class SwiGLU(nn.Module):
    """``c_proj(silu(a)·gate)`` with ``(a, gate) = c_fc(x)`` split in halves (d → 8d → 4d → d)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 8 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        object.__setattr__(self.c_proj, "residual_projection", True)  # scaled init
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.c_fc(x).chunk(2, dim=-1)
        out: Tensor = self.dropout(self.c_proj(F.silu(a) * gate))
        return out


class Block(nn.Module):
    """Pre-norm residual block ``x + attn(ln_1 x)``, then ``+ mlp(ln_2 ·)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.RMSNorm(config.n_embd, eps=1e-6)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.RMSNorm(config.n_embd, eps=1e-6)
        self.mlp = SwiGLU(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out


def init_gpt_module(module: nn.Module, n_layer: int, std: float = 0.02) -> None:
    """The original initialisation of one module (not recursive): N(0, std) linear and embedding
    weights, zero biases, RMSNorm weights 1; a linear marked ``residual_projection`` (the two
    ``c_proj``) gets std/√(2·n_layer)."""
    if isinstance(module, nn.Linear):
        scale = (
            1.0 / math.sqrt(2 * n_layer) if getattr(module, "residual_projection", False) else 1.0
        )
        nn.init.normal_(module.weight, mean=0.0, std=std * scale)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.RMSNorm) and module.weight is not None:
        nn.init.ones_(module.weight)


def init_gpt_weights(model: nn.Module, n_layer: int) -> None:
    """:func:`init_gpt_module` on every submodule of ``model``."""
    for module in model.modules():
        init_gpt_module(module, n_layer)


class AIetherGPT(nn.Module):
    """The original AIether GPT over a growable stack of ``config.n_layer`` blocks.

    Args:
        config: model sizes (:class:`GPTConfig`).
        initial_active: active blocks at the start (default 1), passed to :class:`GrowableStack`.
        slot_order: where new blocks go (default ``"top_down"``), passed to the stack.
        preserve: the function-preservation rule (default ``"zero_out"``), passed to the stack.
        ramp_steps: length of a ``"gate_ramp"``, passed to the stack.

    ``forward(idx, targets=None)`` takes ``(B, T)`` token ids and returns ``(logits, loss)``:
    logits ``(B, T, vocab)``, the mean cross-entropy against ``targets`` (or ``None``).
    """

    def __init__(
        self,
        config: GPTConfig,
        *,
        initial_active: int = 1,
        slot_order: SlotOrder | tuple[int, ...] = "top_down",
        preserve: Preserve = "zero_out",
        ramp_steps: int = 200,
    ) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h: GrowableStack | nn.ModuleList = GrowableStack(
            (Block(config) for _ in range(config.n_layer)),
            initial_active=initial_active,
            slot_order=slot_order,
            preserve=preserve,
            out_proj_names=OUT_PROJ_NAMES,
            ramp_steps=ramp_steps,
        )
        self.ln_f = nn.RMSNorm(config.n_embd, eps=1e-6)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_gpt_weights(self, config.n_layer)
        self.lm_head.weight = self.wte.weight  # tied after init: one N(0, 0.02) draw

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(B, T)`` ids → ``(logits (B, T, V), loss or None)``."""
        t = idx.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.config.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:  # a GrowableStack yields its active blocks only
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def num_parameters(self, *, non_embedding: bool = True, active_only: bool = False) -> int:
        """Parameter count; ``non_embedding`` drops the (tied) token and position tables;
        ``active_only`` counts only the blocks that run."""
        stack = self.h
        if isinstance(stack, GrowableStack):
            slots = stack.active_slots if active_only else range(len(stack))
            n: int = sum(p.numel() for i in slots for p in stack._block(i).parameters())
            if isinstance(stack.gate, nn.Parameter):
                n += stack.gate.numel()
        else:  # after export_compact()
            n = sum(p.numel() for p in stack.parameters())
        n += sum(p.numel() for p in self.ln_f.parameters())
        if not non_embedding:
            n += self.wte.weight.numel() + self.wpe.weight.numel()
        return n
