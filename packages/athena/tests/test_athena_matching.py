"""Target matching (PEFT's rules), `inspect_targets`, rank/alpha patterns, and config validation
and serialisation."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from _athena_tiny import MLP, tiny_bert
from torch import nn

from athena import (
    PolyAdapter,
    PolyAdapterConfig,
    get_athena_model,
    inject_polyadapter,
    inspect_targets,
)
from athena.matching import layer_index, pattern_value


def _names(model: nn.Module, **kw: object) -> tuple[str, ...]:
    return inspect_targets(model, PolyAdapterConfig(**kw)).matched  # type: ignore[arg-type]


def test_list_entries_match_exact_names_or_dotted_suffixes() -> None:
    assert _names(MLP(), target_modules=["up"]) == ("layers.0.up", "layers.1.up")
    assert _names(MLP(), target_modules=["layers.1.down"]) == ("layers.1.down",)
    # "p" is a suffix of "up" but not a dotted one
    with pytest.raises(ValueError, match="not found"):
        _names(MLP(), target_modules=["p"])


def test_string_target_is_a_full_regex_match() -> None:
    assert _names(MLP(), target_modules=r"layers\.\d\.(up|down)") == (
        "layers.0.up",
        "layers.0.down",
        "layers.1.up",
        "layers.1.down",
    )
    with pytest.raises(ValueError, match="not found"):
        _names(MLP(), target_modules=r"up")  # fullmatch: "layers.0.up" is not "up"


def test_exclude_modules_first_and_layers_to_transform() -> None:
    assert _names(MLP(), target_modules=["up", "down"], exclude_modules=["up"]) == (
        "layers.0.down",
        "layers.1.down",
    )
    assert _names(MLP(), target_modules=["up", "down"], layers_to_transform=[1]) == (
        "layers.1.up",
        "layers.1.down",
    )
    assert _names(MLP(), target_modules=["up"], layers_to_transform=0, layers_pattern="layers") == (
        "layers.0.up",
    )


def test_all_linear_excludes_the_output_head_and_saved_modules() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    names = _names(lm, target_modules="all-linear")
    assert "lm_head" not in names and len(names) == 7  # q k v o gate up down
    bert = tiny_bert()
    names = _names(bert, target_modules="all-linear", modules_to_save=("classifier",))
    assert "classifier" not in names and "bert.pooler.dense" in names


def test_unmatched_entries_are_reported_and_strict_raises() -> None:
    report = inspect_targets(MLP(), PolyAdapterConfig(target_modules=["up", "attention"]))
    assert report.unmatched == ("attention",)
    assert report.shapes["layers.0.up"] == (8, 12)
    with pytest.raises(ValueError, match="strict_targets"):
        inspect_targets(
            MLP(), PolyAdapterConfig(target_modules=["up", "attention"], strict_targets=True)
        )


def test_non_linear_targets_are_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(ValueError, match="LayerNorm"):
        inspect_targets(model, PolyAdapterConfig(target_modules=["1"]))


def test_no_default_targets_for_an_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="no default targets"):
        inject_polyadapter(MLP(), PolyAdapterConfig())


def test_bert_defaults_match_peft() -> None:
    lora = inspect_targets(tiny_bert(), PolyAdapterConfig().with_defaults_for("bert")).matched
    assert {n.rsplit(".", 1)[-1] for n in lora} == {"query", "value"}
    ia3 = PolyAdapterConfig(use_lora=False, use_ia3=True).with_defaults_for("bert")
    assert ia3.target_modules == ("key", "value", "output.dense")
    assert ia3.feedforward_modules == ("output.dense",)
    model = get_athena_model(tiny_bert(), PolyAdapterConfig(use_lora=False, use_ia3=True))
    modes = {
        n.split("encoder.layer.0.", 1)[-1]: m.specs["default"].ia3_mode
        for n, m in model.named_modules()
        if isinstance(m, PolyAdapter) and "layer.0." in n
    }
    # "output.dense" is a suffix of the attention output dense too: both scale their input
    assert modes == {
        "attention.self.key": "output",
        "attention.self.value": "output",
        "attention.output.dense": "input",
        "output.dense": "input",
    }


def test_rank_and_alpha_patterns() -> None:
    assert layer_index("bert.encoder.layer.3.attention.self.query") == 3
    assert layer_index("model.layers.11.mlp", "layers") == 11
    assert layer_index("classifier") is None
    pattern = {"layers.1.up": 4, "down": 0}
    assert pattern_value("layers.1.up", pattern) == 4
    assert pattern_value("x.layers.1.up", pattern) == 4
    assert pattern_value("layers.0.up", pattern) is None
    config = PolyAdapterConfig(
        r=2, target_modules=["up", "down"], rank_pattern=pattern, alpha_pattern={"up": 16}
    )
    model = get_athena_model(MLP(), config)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PolyAdapter)}
    names = sorted(n.replace("base_model.model.", "") for n in layers)
    assert names == ["layers.0.up", "layers.1.up"]  # rank 0: not adapted
    specs = {n.replace("base_model.model.", ""): m.specs["default"] for n, m in layers.items()}
    assert specs["layers.0.up"].rank == 2 and specs["layers.1.up"].rank == 4
    assert specs["layers.1.up"].alpha == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "rank 0 means"),
        ({"use_lora": False, "use_ia3": False, "use_moe": False}, "nothing to adapt"),
        ({"use_moe": True, "top_k": 5}, "top_k must be in"),
        ({"use_moe": True, "num_experts": 0, "top_k": 1}, "num_experts"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"bias": "all"}, "bias"),
        ({"feedforward_modules": ["x"]}, "feedforward_modules"),
        ({"rank_pattern": {"q": -1}}, "rank_pattern"),
        ({"moe_impl": "sparse"}, "moe_impl"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolyAdapterConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trip_and_peft_type(tmp_path: Path) -> None:
    folder = tmp_path
    for config, kind in [
        (PolyAdapterConfig(target_modules=["q"]), "LORA"),
        (PolyAdapterConfig(use_lora=False, use_ia3=True, target_modules=["q"]), "IA3"),
        (
            PolyAdapterConfig(use_moe=True, target_modules=["q"], rank_pattern={"q": 4}),
            "ATHENA_POLY",
        ),
    ]:
        assert config.peft_type == kind
        config.save_pretrained(folder / kind)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = PolyAdapterConfig.from_pretrained(folder / kind)
        assert loaded.replace(inference_mode=False) == config
    assert PolyAdapterConfig(target_modules=["a", "b"]).target_modules == ("a", "b")
