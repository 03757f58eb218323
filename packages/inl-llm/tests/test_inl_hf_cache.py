"""KV cache: prefill plus 10 decode steps equal the uncached forward, with left padding (fp32)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _inl_hf_common import VOCAB, left_padded_batch, perturb, tiny_config
from transformers import DynamicCache

from inl_llm.modeling_inl import INLForCausalLM

DECODE_STEPS = 10
ATOL = 1e-5  # the tolerance for cached vs uncached fp32 logits


def _model(**overrides: Any) -> INLForCausalLM:
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config(**overrides)).eval()
    perturb(model)
    return model


CONFIGS = {
    "gqa-rope-halting": {},
    "mha-no-halting": {"num_kv_heads": 4, "use_adaptive_stopping": False},
    "halting-fires": {"adaptive_convergence_threshold": 0.1, "num_iterations_per_layer": 4},
    "sinusoidal-layernorm-gelu": {"position": "sinusoidal", "norm": "layernorm", "mlp": "gelu"},
    "replace-ffn-per-layer-tied": {
        "inl_placement": "replace_ffn",
        "use_shared_controllers": False,
        "tie_word_embeddings": True,
    },
    "full-variant-reference-free": {"inl_variant": "full", "use_lowrank_embeddings": False},
}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_cached_equals_uncached_left_padded(name: str) -> None:
    model = _model(**CONFIGS[name])
    prompt, prompt_mask = left_padded_batch([7, 4, 1], seed=3)
    gen = torch.Generator().manual_seed(4)
    new = torch.randint(3, VOCAB, (3, DECODE_STEPS), generator=gen)
    ids = torch.cat([prompt, new], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(new)], dim=1)
    real = mask.bool()

    full = model(ids, attention_mask=mask, use_cache=False)
    assert full.past_key_values is None
    p = prompt.shape[1]

    out = model(prompt, attention_mask=prompt_mask, use_cache=True)
    cache = out.past_key_values
    assert isinstance(cache, DynamicCache)
    torch.testing.assert_close(
        out.logits[real[:, :p]], full.logits[:, :p][real[:, :p]], atol=ATOL, rtol=0.0
    )
    for t in range(DECODE_STEPS):
        step = model(
            ids[:, p + t : p + t + 1],
            attention_mask=mask[:, : p + t + 1],
            past_key_values=cache,
            use_cache=True,
        )
        assert step.past_key_values is cache
        torch.testing.assert_close(step.logits[:, 0], full.logits[:, p + t], atol=ATOL, rtol=0.0)
    assert cache.get_seq_length() == p + DECODE_STEPS
    if name == "halting-fires":  # the compacting path really ran: some tokens halted early
        assert bool((full.inl_iterations < 4).any())


@torch.no_grad()
def test_explicit_positions_match_default_positions() -> None:
    """generate passes position_ids = cumsum(mask) − 1; the default computes the same."""
    model = _model()
    ids, mask = left_padded_batch([6, 3], seed=5)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    a = model(ids, attention_mask=mask).logits
    b = model(ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()])


@torch.no_grad()
def test_left_padding_does_not_change_a_row() -> None:
    """A left-padded row gives the logits of the same tokens alone (padding is invisible)."""
    model = _model()
    ids, mask = left_padded_batch([8, 5], seed=6)
    batched = model(ids, attention_mask=mask).logits
    alone = model(ids[1:, 3:]).logits
    torch.testing.assert_close(batched[1, 3:], alone[0], atol=ATOL, rtol=0.0)


@torch.no_grad()
def test_no_mask_cache_equals_uncached() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, VOCAB, (2, 9), generator=gen)
    full = model(ids, use_cache=False).logits
    out = model(ids[:, :5], use_cache=True)
    torch.testing.assert_close(out.logits, full[:, :5], atol=ATOL, rtol=0.0)
    # a multi-token continuation over the cache (chunked prefill)
    rest = model(ids[:, 5:], past_key_values=out.past_key_values, use_cache=True)
    torch.testing.assert_close(rest.logits, full[:, 5:], atol=ATOL, rtol=0.0)
