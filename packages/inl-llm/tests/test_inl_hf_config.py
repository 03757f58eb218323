"""INLLLMConfig: original names and defaults, HF aliases, legacy keys, presets, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _inl_hf_common import tiny_config

from inl_llm.configuration_inl import INLLLMConfig

# The shipped checkpoint's config.json (Web3-League/llm-dynamics), with the width shrunk.
LEGACY_CONFIG: dict[str, Any] = {
    "architectures": ["INLLLMForCausalLM"],
    "model_type": "inl-llm",
    "transformers_version": "4.57.0",
    "vocab_size": 50261,
    "d_model": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_iterations_per_layer": 5,
    "feedforward_dim": 256,
    "max_seq_len": 2048,
    "dropout": 0.1,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "pad_token_id": 50256,
    "use_lowrank_embeddings": True,
    "lowrank_ratio": 0.125,
    "use_gradient_checkpointing": True,
    "use_shared_controllers": True,
    "use_adaptive_stopping": True,
    "adaptive_convergence_threshold": 0.001,
    "hierarchical_group_size": 64,
    "excitation_sparsity": 0.1,
    "dtype": "bfloat16",
    "use_cache": False,
    "initializer_range": 0.02,
    "integrator_type": "ultra_optimized",
    "controller_type": "shared",
    "equilibrium_type": "hierarchical",
    "excitation_type": "sparse_harmonic",
    "torch_dtype": "bfloat16",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_original_defaults() -> None:
    c = INLLLMConfig()
    expected = {
        "vocab_size": 50261,
        "d_model": 1728,
        "num_layers": 25,
        "num_heads": 32,
        "num_iterations_per_layer": 5,
        "feedforward_dim": 6912,
        "max_seq_len": 2048,
        "dropout": 0.1,
        "use_lowrank_embeddings": True,
        "lowrank_ratio": 0.125,
        "use_gradient_checkpointing": False,  # changed: the original default was ignored
        "use_shared_controllers": True,
        "use_adaptive_stopping": True,
        "adaptive_convergence_threshold": 1e-3,
        "hierarchical_group_size": 64,
        "excitation_sparsity": 0.1,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "pad_token_id": 50256,
        "num_kv_heads": 32,
        "inl_variant": "hierarchical",
        "inl_placement": "between",
        "norm": "rmsnorm",
        "position": "rope",
        "rope_theta": 10000.0,
        "mlp": "swiglu",
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }
    assert {k: getattr(c, k) for k in expected} == expected
    assert c.model_type == "inl-llm"
    assert c.embedding_rank == 216  # max(64, int(0.125 · 1728))


def test_hf_aliases_read_and_write() -> None:
    c = INLLLMConfig(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
    )
    assert (c.d_model, c.num_layers, c.num_heads, c.num_kv_heads) == (64, 3, 8, 2)
    assert (c.feedforward_dim, c.max_seq_len) == (128, 256)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (64, 3, 8)
    assert (c.intermediate_size, c.max_position_embeddings, c.num_key_value_heads) == (128, 256, 2)
    c.hidden_size = 32
    assert c.d_model == 32
    assert "hidden_size" not in c.to_dict()  # serialised under the original names


def test_legacy_keys_load_and_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LEGACY_CONFIG))
    c = INLLLMConfig.from_pretrained(tmp_path)
    assert (c.vocab_size, c.d_model, c.num_layers, c.num_iterations_per_layer) == (50261, 64, 2, 5)
    assert c.use_gradient_checkpointing is True and c.use_cache is False
    for key in ("integrator_type", "controller_type", "equilibrium_type", "excitation_type"):
        assert not hasattr(c, key), key
        assert key not in c.to_dict()
    inl = c.inl_config()
    assert inl.controller_scope == "shared" and inl.halting == "threshold"
    # the same dict through the plain constructor
    c2 = INLLLMConfig(**{k: v for k, v in LEGACY_CONFIG.items() if k != "model_type"})
    assert c2.to_diff_dict() == c.to_diff_dict()


def test_save_load_round_trip(tmp_path: Path) -> None:
    c = tiny_config(
        inl_placement="replace_ffn", norm="layernorm", position="sinusoidal", mlp="gelu"
    )
    c.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoConfig"] == "configuration_inl.INLLLMConfig"
    assert (tmp_path / "configuration_inl.py").exists() and (tmp_path / "inl_config.py").exists()
    back = INLLLMConfig.from_pretrained(tmp_path)
    assert back.to_diff_dict() == c.to_diff_dict()


def test_inl_config_mapping() -> None:
    c = tiny_config(
        use_shared_controllers=False,
        use_adaptive_stopping=True,
        adaptive_convergence_threshold=0.02,
        hierarchical_group_size=16,
        num_iterations_per_layer=4,
        inl_min_iterations=2,
        inl_alpha_max=0.9,
        inl_p_margin=0.8,
        inl_random_depth_training=True,
    )
    inl = c.inl_config()
    assert inl.d_model == 32 and inl.controller_scope == "layer"
    assert inl.halting == "threshold" and inl.halt_eps == 0.02
    assert (inl.group_size, inl.num_iterations, inl.min_iterations) == (16, 4, 2)
    assert (inl.alpha_max, inl.p_margin, inl.random_depth_training) == (0.9, 0.8, True)
    assert inl.excitation == "none" and inl.variant == "hierarchical"
    full = tiny_config(inl_variant="full", use_adaptive_stopping=False, excitation_sparsity=0.25)
    inl = full.inl_config()
    assert inl.controller_scope == "shared" and inl.halting == "none"
    assert inl.variant == "full" and inl.excitation == "sparse" and inl.excitation_sparsity == 0.25
    assert tiny_config(inl_compat="reference").inl_config().compat == "reference"


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("tiny", (128, 4, 4, 3, 512)),
        ("small", (512, 6, 8, 5, 2048)),
        ("medium", (768, 12, 12, 7, 3072)),
        ("large", (1024, 24, 16, 10, 4096)),
    ],
)
def test_presets(name: str, dims: tuple[int, ...]) -> None:
    c = INLLLMConfig.from_preset(name, vocab_size=4096)
    assert (
        c.d_model,
        c.num_layers,
        c.num_heads,
        c.num_iterations_per_layer,
        c.feedforward_dim,
    ) == dims
    assert c.vocab_size == 4096


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="from_preset"):
        INLLLMConfig.from_preset("huge")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": 30}, "d_model"),  # not divisible by 4 heads
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"num_layers": 0}, "num_layers"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"num_iterations_per_layer": 0}, "num_iterations_per_layer"),
        ({"dropout": 1.0}, "dropout"),
        ({"lowrank_ratio": 0.0}, "lowrank_ratio"),
        ({"norm": "batchnorm"}, "norm"),
        ({"position": "alibi"}, "position"),
        ({"mlp": "relu"}, "mlp"),
        ({"inl_variant": "deep"}, "inl_variant"),
        ({"inl_placement": "after"}, "inl_placement"),
        ({"inl_compat": "v1"}, "inl_compat"),
        ({"use_cache": "yes"}, "use_cache"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"adaptive_convergence_threshold": -1e-3}, "adaptive_convergence_threshold"),
        ({"inl_alpha_max": 1.5}, "inl_alpha_max"),
        ({"inl_p_margin": 0.0}, "inl_p_margin"),
        ({"inl_min_iterations": 5}, "inl_min_iterations"),  # > T = 3
        ({"excitation_sparsity": 2.0, "inl_variant": "full"}, "excitation_sparsity"),
        (
            {"d_model": 36, "num_heads": 12, "num_kv_heads": 12},
            "head_dim",
        ),  # odd head_dim with RoPE
    ],
)
def test_invalid_values_raise(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)
