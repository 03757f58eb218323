"""Adapters: growing tiny random Hugging Face GPT-2 and Llama models (local configs, no hub)
preserves their logits, refuses a cache while slots are inactive, and exports a compact model
that generates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aiether.adapters import StackAdapter, export_compact, for_model, make_growable
from aiether.stack import GrowableStack

transformers = pytest.importorskip("transformers")


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50,
        n_positions=32,
        n_embd=16,
        n_layer=4,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _llama() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    return transformers.LlamaForCausalLM(config).eval()


MODELS = {"gpt2": _gpt2, "llama": _llama}
IDS = torch.tensor([[1, 5, 7, 2, 9, 3, 4, 8]])


def _copy_init(new: nn.Module, src: nn.Module) -> None:
    new.load_state_dict(src.state_dict())


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, use_cache=False).logits  # type: ignore[no-any-return]


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("preserve", ["zero_out", "gate_ramp"])
def test_growth_preserves_hf_logits(family: str, preserve: str) -> None:
    model = MODELS[family]()
    stack = make_growable(model, initial_active=2, preserve=preserve)  # type: ignore[arg-type]
    assert stack.active_slots == [2, 3]
    assert model.config.aiether_active_layers == [2, 3]
    before = _logits(model)
    stack.grow(_copy_init)
    torch.testing.assert_close(_logits(model), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_copy_growth_without_preservation_changes_hf_logits(family: str) -> None:
    model = MODELS[family]()
    stack = make_growable(model, initial_active=2, preserve="none")
    before = _logits(model)
    stack.grow(_copy_init)
    assert (_logits(model) - before).abs().max() > 1e-4


@pytest.mark.parametrize("family", sorted(MODELS))
def test_inactive_layers_are_skipped_and_keys_unchanged(family: str) -> None:
    model = MODELS[family]()
    keys = set(model.state_dict())
    adapter = for_model(model)
    stack = make_growable(model, initial_active=2)
    assert set(model.state_dict()) - keys == {f"{adapter.path}.active"}
    # two active layers of four: the same logits as a 2-layer model built from those layers
    compact = export_compact(model)
    assert len(adapter.blocks(compact)) == 2
    torch.testing.assert_close(_logits(compact), _logits(model), atol=0, rtol=0)
    assert isinstance(stack, GrowableStack)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_cache_is_refused_with_inactive_slots_and_generate_works_after_export(family: str) -> None:
    model = MODELS[family]()
    stack = make_growable(model, initial_active=2)
    assert model.config.use_cache is False
    with pytest.raises(ValueError, match="use_cache=True"):
        model(IDS, use_cache=True)
    stack.grow()
    compact = export_compact(model)
    assert compact.config.use_cache is True
    assert compact.config.num_hidden_layers == 3
    assert not hasattr(compact.config, "aiether_active_layers")
    layer_idx = [
        m.layer_idx for m in compact.modules() if isinstance(getattr(m, "layer_idx", None), int)
    ]
    assert sorted(set(layer_idx)) == [0, 1, 2]
    out = compact.generate(IDS, max_new_tokens=4, do_sample=False, pad_token_id=0)
    out_nocache = compact.generate(
        IDS, max_new_tokens=4, do_sample=False, pad_token_id=0, use_cache=False
    )
    assert torch.equal(out, out_nocache)


def test_custom_adapter_and_unknown_models() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.ModuleList(nn.Sequential(nn.Linear(4, 4)) for _ in range(3))

    with pytest.raises(TypeError, match="StackAdapter"):
        for_model(Net())
    net = Net()
    stack = make_growable(net, StackAdapter(path="body", out_proj_names=("0",)), initial_active=1)
    assert net.body is stack
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        StackAdapter(path="nope", out_proj_names=()).blocks(net)
