"""Shared helpers of the ``test_inl_hf_*`` tests: tiny configs and a parameter perturbation.

At initialisation every INL sub-layer is a zero update, so a test that should exercise INL first
perturbs the model (:func:`perturb`): all weights get noise and the INL output gates become O(1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inl_llm.configuration_inl import INLLLMConfig

VOCAB = 97
PAD, BOS, EOS = 0, 1, 2


def tiny_config(**overrides: Any) -> INLLLMConfig:
    """d 32, 2 layers, 4 heads (2 KV heads), T 3, ff 64, vocab 97, no dropout."""
    fields: dict[str, Any] = {
        "vocab_size": VOCAB,
        "d_model": 32,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "num_iterations_per_layer": 3,
        "feedforward_dim": 64,
        "max_seq_len": 64,
        "dropout": 0.0,
        "hierarchical_group_size": 8,
        "pad_token_id": PAD,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
    }
    fields.update(overrides)
    return INLLLMConfig(**fields)


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 1, scale: float = 0.05) -> None:
    """Add N(0, scale²) noise to every parameter and set the INL output gates to N(0.5, 0.2²)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if name.endswith("inl.gate"):
            p.copy_(0.5 + 0.2 * noise)
        else:
            p.add_(scale * noise)


def left_padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (≥ 3, so no special tokens) left-padded with PAD; returns (ids, attention_mask)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, VOCAB, (n,), generator=gen)
        mask[row, width - n :] = 1
    return ids, mask
