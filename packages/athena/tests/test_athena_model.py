"""AthenaModel: what trains, merging, several adapters, saving and loading, parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _athena_tiny import MLP, batch, tiny_bert, twin
from torch import nn

from athena import AthenaModel, PolyAdapter, PolyAdapterConfig, get_athena_model

pytest.importorskip("transformers")

SWITCH_CONFIGS = [
    {"use_lora": True},
    {"use_lora": False, "use_ia3": True},
    {"use_lora": True, "use_ia3": True},
    {"use_lora": True, "use_moe": True},
    {"use_lora": True, "use_ia3": True, "use_moe": True, "top_k": 2},
]


def _trained(config: PolyAdapterConfig, steps: int = 3, lr: float = 0.05) -> AthenaModel:
    model = get_athena_model(tiny_bert(), config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        loss = model(**batch(seed=step)).loss + model.athena_aux_loss()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.mark.parametrize("switches", SWITCH_CONFIGS)
def test_identity_at_init_on_bert(switches: dict[str, object]) -> None:
    base = tiny_bert()
    data = batch()
    expected = base(**data).logits
    model = get_athena_model(twin(base), PolyAdapterConfig(task_type="SEQ_CLS", **switches))  # type: ignore[arg-type]
    assert torch.equal(model(**data).logits, expected)


@pytest.mark.parametrize("switches", SWITCH_CONFIGS)
def test_large_lr_sgd_moves_only_adapters_and_saved_modules(switches: dict[str, object]) -> None:
    model = get_athena_model(tiny_bert(), PolyAdapterConfig(task_type="SEQ_CLS", **switches))  # type: ignore[arg-type]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=10.0)  # every parameter, trainable or not
    out = model(**batch())
    (out.loss + model.athena_aux_loss()).backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    adapter_parts = ("lora_", "ia3_l", "moe_", "router", "modules_to_save")
    assert moved, "nothing moved"
    assert all(any(part in n for part in adapter_parts) for n in moved), sorted(moved)[:5]
    assert any("modules_to_save.default" in n for n in moved)


@pytest.mark.parametrize("switches", [s for s in SWITCH_CONFIGS if "use_moe" not in s])
def test_merge_unmerge_and_merge_and_unload_keep_the_logits(switches: dict[str, object]) -> None:
    model = _trained(PolyAdapterConfig(task_type="SEQ_CLS", **switches))  # type: ignore[arg-type]
    data = batch(seed=7)
    before = model(**data).logits
    with model.disable_adapter():
        base_logits = model(**data).logits
    assert not torch.allclose(before, base_logits, atol=1e-4)  # the adapter changed something
    model.merge_adapter()
    torch.testing.assert_close(model(**data).logits, before, atol=1e-4, rtol=1e-4)
    model.merge_adapter()  # idempotent
    torch.testing.assert_close(model(**data).logits, before, atol=1e-4, rtol=1e-4)
    model.unmerge_adapter()
    torch.testing.assert_close(model(**data).logits, before, atol=1e-4, rtol=1e-4)
    plain = model.merge_and_unload()
    assert not any(isinstance(m, PolyAdapter) for m in plain.modules())
    torch.testing.assert_close(plain(**data).logits, before, atol=1e-4, rtol=1e-4)


def test_safe_merge_equals_unsafe_merge_and_raises_on_nan() -> None:
    config = PolyAdapterConfig(task_type="SEQ_CLS", use_ia3=True)
    a, b = _trained(config), _trained(config)
    plain_a = a.merge_and_unload(safe_merge=True)
    plain_b = b.merge_and_unload(safe_merge=False)
    for (na, pa), (nb, pb) in zip(
        plain_a.named_parameters(), plain_b.named_parameters(), strict=True
    ):
        assert na == nb and torch.equal(pa, pb), na
    bad = _trained(config)
    with torch.no_grad():
        next(p for n, p in bad.named_parameters() if "lora_B" in n).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        bad.merge_and_unload(safe_merge=True)


def test_moe_merge_raises_unless_kept() -> None:
    model = _trained(PolyAdapterConfig(task_type="SEQ_CLS", use_moe=True))
    data = batch(seed=3)
    before = model(**data).logits
    with pytest.raises(ValueError, match="mixture of experts"):
        model.merge_and_unload()
    kept = model.merge_and_unload(merge_moe="keep")
    layers = [m for m in kept.modules() if isinstance(m, PolyAdapter)]
    assert layers and all(m.merged_adapters == ["default"] for m in layers)
    torch.testing.assert_close(kept(**data).logits, before, atol=1e-4, rtol=1e-4)


def test_unload_returns_the_base_model() -> None:
    base = tiny_bert()
    data = batch()
    expected = base(**data).logits
    config = PolyAdapterConfig(task_type="SEQ_CLS", use_ia3=True, init_lora_weights=False)
    model = get_athena_model(twin(base), config)
    assert not torch.allclose(model(**data).logits, expected)
    plain = model.unload()
    assert type(plain) is type(base)
    assert not any(isinstance(m, PolyAdapter) for m in plain.modules())
    torch.testing.assert_close(plain(**data).logits, expected)


def test_several_adapters_set_delete_and_trainability() -> None:
    model = get_athena_model(tiny_bert(), PolyAdapterConfig(r=2, init_lora_weights=False))
    model.add_adapter("other", PolyAdapterConfig(r=4, use_ia3=True, init_lora_weights=False))
    assert model.active_adapters == ["default"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default" in n for n in trainable)
    data = batch()
    out_default = model(**data).logits
    model.set_adapter("other")
    assert all(".other" in n for n, p in model.named_parameters() if p.requires_grad)
    out_other = model(**data).logits
    assert not torch.allclose(out_default, out_other)
    model.set_adapter(["default", "other"])  # outputs add up
    both = model(**data).logits
    assert not torch.allclose(both, out_default) and not torch.allclose(both, out_other)
    model.delete_adapter("other")
    assert list(model.peft_config) == ["default"] and model.active_adapters == ["default"]
    torch.testing.assert_close(model(**data).logits, out_default)
    assert not any(".other" in n for n in model.state_dict())
    with pytest.raises(ValueError, match="unknown adapters"):
        model.set_adapter("missing")
    with pytest.raises(ValueError, match="only adapter"):
        model.delete_adapter("default")


def test_save_load_round_trip_with_subfolders(tmp_path: Path) -> None:
    base = tiny_bert()
    config = PolyAdapterConfig(task_type="SEQ_CLS", use_moe=True, use_ia3=True, top_k=2)
    model = get_athena_model(twin(base), config)
    model.add_adapter("extra", PolyAdapterConfig(r=3, task_type="SEQ_CLS", init_lora_weights=False))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists()
    assert (tmp_path / "extra" / "adapter_config.json").exists()
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "ATHENA_POLY" and saved["athena_version"]
    assert (
        json.loads((tmp_path / "extra" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    )
    text = (tmp_path / "adapter_config.json").read_text()
    assert text == json.dumps(saved, indent=2, sort_keys=True) + "\n"
    data = batch()
    model.eval()
    expected = model(**data).logits
    loaded = AthenaModel.from_pretrained(twin(base), tmp_path)
    torch.testing.assert_close(loaded(**data).logits, expected)
    loaded.load_adapter(tmp_path / "extra", "extra")
    model.set_adapter("extra")
    loaded.set_adapter("extra")
    torch.testing.assert_close(loaded(**data).logits, model(**data).logits)
    trainable = AthenaModel.from_pretrained(twin(base), tmp_path, is_trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())


def test_load_refuses_a_file_for_another_model(tmp_path: Path) -> None:
    model = get_athena_model(tiny_bert(), PolyAdapterConfig(target_modules=["query"]))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["target_modules"] = ["query", "value"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing keys"):
        AthenaModel.from_pretrained(tiny_bert(), tmp_path)


def test_unknown_config_keys_are_dropped_with_a_warning(tmp_path: Path) -> None:
    model = get_athena_model(tiny_bert(), PolyAdapterConfig())
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["some_future_option"] = 3
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="some_future_option"):
        AthenaModel.from_pretrained(tiny_bert(), tmp_path)
    cfg["use_dora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_dora"):
        AthenaModel.from_pretrained(tiny_bert(), tmp_path)


def test_zero_element_tensors_are_refused_on_save(tmp_path: Path) -> None:
    model = get_athena_model(tiny_bert(), PolyAdapterConfig())
    layer = next(m for m in model.modules() if isinstance(m, PolyAdapter))
    layer.lora_A["default"].weight = nn.Parameter(torch.empty(0))  # an unsharded ZeRO-3 placeholder
    with pytest.raises(ValueError, match="gather parameters before saving"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_compiled_model_keys_have_no_orig_mod_prefix() -> None:
    model = get_athena_model(tiny_bert(), PolyAdapterConfig())
    compiled = torch.compile(model, backend="eager")
    keys = {k.replace("_orig_mod.", "") for k in compiled.state_dict()}
    from athena.peft_format import adapter_key_to_file

    files = {adapter_key_to_file(k, "default") for k in compiled.state_dict()} - {None}
    assert files == set(model.adapter_state_dict("default"))
    assert keys == set(model.state_dict())


def test_print_trainable_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    model = get_athena_model(MLP(), PolyAdapterConfig(r=2, target_modules=["up"]))
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 2 * (2 * 8 + 12 * 2)
    assert capsys.readouterr().out.strip() == (
        f"trainable params: {trainable:,d} || all params: {total:,d} "
        f"|| trainable%: {100 * trainable / total:.4f}"
    )


def _minilm_like() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=1000,  # small vocabulary: the counts concern the encoder's linear layers
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
    )
    return BertModel(config)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (PolyAdapterConfig(r=8), 73_728),
        (PolyAdapterConfig(use_lora=False, use_ia3=True), 16_128),
        (PolyAdapterConfig(use_lora=False, use_moe=True, num_experts=4, r=8), 313_344),
    ],
    ids=["lora-q-v", "ia3-defaults", "moe-4x8-q-v"],
)
def test_minilm_shaped_parameter_counts(config: PolyAdapterConfig, expected: int) -> None:
    model = get_athena_model(_minilm_like(), config)
    assert model.get_nb_trainable_parameters()[0] == expected


def test_optimizer_must_be_built_after_set_adapter() -> None:
    """The documented order: set_adapter decides `requires_grad`, then build the optimiser."""
    model = get_athena_model(tiny_bert(), PolyAdapterConfig())
    model.add_adapter("b", PolyAdapterConfig(r=2))
    model.set_adapter("b")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".b." in n for n in names)


class _CheckpointedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.proj, self.embed(ids), use_reentrant=True).sum()


def test_enable_input_require_grads_lets_checkpointed_adapters_learn() -> None:
    """Reentrant checkpointing over a frozen embedding gives the adapters no gradient until the
    embedding output requires grad. (Hugging Face models do this inside
    `gradient_checkpointing_enable`; a plain module does not.)"""
    from athena.checkpointing import enable_input_require_grads

    model = get_athena_model(
        _CheckpointedNet(), PolyAdapterConfig(target_modules=["proj"], init_lora_weights=False)
    )
    ids = torch.randint(0, 20, (2, 5))

    def lora_grad() -> torch.Tensor | None:
        model.zero_grad(set_to_none=True)
        loss = model(ids)
        if loss.requires_grad:
            loss.backward()
        return next(p for n, p in model.named_parameters() if "lora_A" in n).grad

    with pytest.warns(UserWarning, match="requires_grad"):
        assert lora_grad() is None
    handle = enable_input_require_grads(model)
    grad = lora_grad()
    assert grad is not None and grad.abs().sum() > 0
    handle.remove()
