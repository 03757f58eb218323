"""Parameter counts: the closed form equals the built model, and the component split is exact."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from _inl_hf_common import tiny_config
from torch import nn

from inl_llm.inl_layer import INLLayer
from inl_llm.modeling_inl import INLForCausalLM, INLModel

GRID = list(
    itertools.product(
        [False, True],  # tie_word_embeddings
        [False, True],  # use_lowrank_embeddings
        [False, True],  # use_shared_controllers
        [1, 2, 4],  # num_kv_heads (GQA 4:1, 2:1, MHA)
    )
)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() deduplicates shared tensors


@pytest.mark.parametrize(("tied", "lowrank", "shared", "kv"), GRID)
def test_closed_form_equals_built_model(tied: bool, lowrank: bool, shared: bool, kv: int) -> None:
    config = tiny_config(
        tie_word_embeddings=tied,
        use_lowrank_embeddings=lowrank,
        use_shared_controllers=shared,
        num_kv_heads=kv,
    )
    model = INLForCausalLM(config)
    assert config.expected_num_parameters() == _count(model)
    counts = model.num_parameters_by_component()
    assert sum(counts.values()) == _count(model)
    assert (counts["lm_head"] == 0) == tied
    assert counts["inl_controller"] > 0 and counts["inl_other"] > 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"inl_placement": "replace_ffn"},
        {"norm": "layernorm", "mlp": "gelu", "position": "sinusoidal"},
        {"inl_variant": "full", "excitation_sparsity": 0.25},
        {"inl_variant": "full", "use_shared_controllers": False, "inl_mu_mode": "per_dim"},
        {"inl_compat": "reference", "use_adaptive_stopping": False},
        {"d_model": 64, "num_heads": 8, "inl_controller_hidden": 16, "lowrank_ratio": 2.0},
    ],
)
def test_closed_form_other_architectures(overrides: dict[str, Any]) -> None:
    config = tiny_config(**overrides)
    model = INLForCausalLM(config)
    assert config.expected_num_parameters() == _count(model)
    assert sum(model.num_parameters_by_component().values()) == _count(model)


def test_components_by_hand() -> None:
    """d 32, 2 layers, 4 heads / 2 KV heads (hd 8), ff 64, V 97, r = max(64, 4) = 64 ≥ D."""
    config = tiny_config()
    counts = INLForCausalLM(config).num_parameters_by_component()
    d, v, r, f, layers = 32, 97, 64, 64, 2
    assert counts["embedding"] == v * r + r * d
    assert counts["attention"] == layers * (d * 32 * 2 + d * 16 * 2)
    assert counts["ffn"] == layers * 3 * d * f
    assert counts["norms"] == (3 * layers + 1) * d
    assert counts["lm_head"] == v * d
    inl_cfg = config.inl_config()
    per_layer = INLLayer.expected_num_parameters(inl_cfg)
    assert counts["inl_controller"] + counts["inl_other"] == layers * per_layer + sum(
        p.numel() for p in INLForCausalLM(config).model.inl_controller.parameters()
    )


def test_shared_controller_is_one_instance_stored_once() -> None:
    model = INLModel(tiny_config(num_layers=3))
    shared = model.inl_controller
    assert shared is not None
    assert all(layer.inl.shared_controller is shared for layer in model.layers)
    names = [n for n, _ in model.named_parameters() if "controller" in n]
    assert names and all(n.startswith("inl_controller.") for n in names)
    assert not any(k.startswith("layers.") and "controller" in k for k in model.state_dict())
    per_layer = INLModel(tiny_config(num_layers=3, use_shared_controllers=False))
    assert per_layer.inl_controller is None
    assert all(layer.inl.shared_controller is None for layer in per_layer.layers)


@torch.no_grad()
def test_fresh_init() -> None:
    """transformers' normal init for the dense weights, the INL layer's own init elsewhere."""
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config(d_model=64, num_heads=4, vocab_size=2000))
    std = model.config.initializer_range
    for w in (model.model.embed_tokens.token.weight, model.lm_head.weight):
        assert abs(float(w.std()) - std) < 0.1 * std
    layer = model.model.layers[0]
    assert abs(float(layer.self_attn.q_proj.weight.std()) - std) < 0.15 * std
    assert torch.equal(layer.attn_norm.weight, torch.ones(64))
    assert torch.equal(layer.inl.gate, torch.zeros(64))
    assert torch.equal(layer.inl.film_scale, torch.ones_like(layer.inl.film_scale))
    shared = model.model.inl_controller
    assert shared is not None
    fresh = type(shared)(model.config.inl_config())
    torch.testing.assert_close(shared.out.bias, fresh.out.bias)  # α₀, p₀, g₀ (not zeros)
    assert 0.008 < float(shared.out.weight.std()) < 0.012  # N(0, 0.01), not transformers' 0.02
