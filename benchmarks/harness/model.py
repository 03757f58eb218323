"""The reference GPT shared by every benchmark: a small pre-LayerNorm decoder-only transformer.

Causal attention goes through ``scaled_dot_product_attention``; positions are learned or rotary;
the output head is tied to the embedding by default. The residual connection, the feed-forward
block, the attention block and the depth are pluggable by factory functions, so that residual
schemes (AION and its peers), optimisers (AuON, Muon, AdamW), mixers (INL) and depth growth
(AIether) are all compared on the same model.

Residual contract: ``residual_factory(index, config)`` returns a module called as
``res(x, y, x_norm=n)`` in a pre-norm block (``n = norm(x)``, ``y = sublayer(n)``). A residual
whose class has ``post_norm = True`` is called as ``res(x, sublayer(x))`` and applies its own
norm (DeepNorm, Admin). Indices run over the 2·L residual sublayers: attention of block ``i`` is
``2i``, the MLP is ``2i + 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """Shape of the reference GPT."""

    vocab_size: int = 256
    seq_len: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    positions: Literal["learned", "rotary"] = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    tie_embeddings: bool = True
    bias: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary positions need an even head dimension")
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"positions must be 'learned' or 'rotary', got {self.positions!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


ResidualFactory = Callable[[int, GPTConfig], nn.Module]
ModuleFactory = Callable[[int, GPTConfig], nn.Module]


def make_norm(config: GPTConfig) -> nn.Module:
    """The configured normalisation layer over ``d_model``."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.d_model)
    return nn.LayerNorm(config.d_model, bias=config.bias)


class PlainResidual(nn.Module):
    """``x + y``: the default residual of the reference GPT."""

    post_norm = False

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_norm: torch.Tensor | None = None
    ) -> torch.Tensor:
        return x + y


def _rotary_tables(seq_len: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1, x2) of the head dimension of x (B, H, T, hd) by position-dependent angles."""
    x1, x2 = x[..., ::2], x[..., 1::2]
    t = x.shape[-2]
    c, s = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (B, T, D) -> (B, T, D) through SDPA."""

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.q_proj = nn.Linear(d, d, bias=config.bias)
        self.k_proj = nn.Linear(d, d, bias=config.bias)
        self.v_proj = nn.Linear(d, d, bias=config.bias)
        self.out_proj = nn.Linear(d, d, bias=config.bias)
        self.rotary = config.positions == "rotary"
        if self.rotary:
            cos, sin = _rotary_tables(config.seq_len, d // config.n_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q = self.q_proj(x).view(b, t, h, d // h).transpose(1, 2)
        k = self.k_proj(x).view(b, t, h, d // h).transpose(1, 2)
        v = self.v_proj(x).view(b, t, h, d // h).transpose(1, 2)
        if self.rotary:
            q = _apply_rotary(q, self.rope_cos, self.rope_sin)
            k = _apply_rotary(k, self.rope_cos, self.rope_sin)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        projected: torch.Tensor = self.out_proj(out.transpose(1, 2).reshape(b, t, d))
        return projected


class MLP(nn.Module):
    """Feed-forward block ``fc2(GELU(fc1(x)))`` with hidden width ``mlp_ratio · d_model``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.fc1 = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.fc2 = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop(self.fc2(F.gelu(self.fc1(x))))
        return out


class Block(nn.Module):
    """One transformer block: attention and MLP sublayers, each behind a pluggable residual."""

    def __init__(
        self,
        index: int,
        config: GPTConfig,
        *,
        residual_factory: ResidualFactory | None = None,
        mlp_factory: ModuleFactory | None = None,
        attention_factory: ModuleFactory | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = (
            attention_factory(index, config) if attention_factory else CausalSelfAttention(config)
        )
        self.norm2 = make_norm(config)
        self.mlp = mlp_factory(index, config) if mlp_factory else MLP(config)
        self.res1 = residual_factory(2 * index, config) if residual_factory else PlainResidual()
        self.res2 = residual_factory(2 * index + 1, config) if residual_factory else PlainResidual()

    @staticmethod
    def _sublayer(
        res: nn.Module, norm: nn.Module, layer: nn.Module, x: torch.Tensor
    ) -> torch.Tensor:
        if getattr(res, "post_norm", False):
            out: torch.Tensor = res(x, layer(x))
            return out
        n = norm(x)
        out = res(x, layer(n), x_norm=n)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._sublayer(self.res1, self.norm1, self.attn, x)
        return self._sublayer(self.res2, self.norm2, self.mlp, x)


class GPT(nn.Module):
    """Decoder-only byte-level language model (B, T) int64 -> logits (B, T, V).

    Args:
        config: the model shape.
        residual_factory: builds the residual of each sublayer, see the module docstring.
        mlp_factory: builds the feed-forward block of block ``i``; default :class:`MLP`.
        attention_factory: builds the attention block of block ``i``; default causal SDPA.

    Weights use the GPT-2 initialisation (normal, std 0.02; output projections scaled by
    ``1/√(2L)``), applied before any residual-specific init done by the caller.
    """

    def __init__(
        self,
        config: GPTConfig,
        *,
        residual_factory: ResidualFactory | None = None,
        mlp_factory: ModuleFactory | None = None,
        attention_factory: ModuleFactory | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = (
            nn.Embedding(config.seq_len, config.d_model) if config.positions == "learned" else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                i,
                config,
                residual_factory=residual_factory,
                mlp_factory=mlp_factory,
                attention_factory=attention_factory,
            )
            for i in range(config.n_layers)
        )
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        scale = (2 * config.n_layers) ** -0.5
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(("out_proj.weight", "fc2.weight")):
                    p.mul_(scale)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for token ids ``idx`` (B, T), T ≤ ``config.seq_len``."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        t = idx.shape[1]
        if t > self.config.seq_len:
            raise ValueError(f"sequence length {t} exceeds config.seq_len={self.config.seq_len}")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[:t]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.lm_head(self.norm_f(x))
        return logits

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-byte cross-entropy in nats (a 0-dim tensor)."""
        logits = self(idx)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` bytes after the prompt ``idx`` (B, T0); returns (B, T0 + n)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.seq_len :]
            logits = self(context)[:, -1, :].float() / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx
