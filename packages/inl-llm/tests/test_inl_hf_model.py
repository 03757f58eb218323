"""INLForCausalLM forward: loss, input validation, zero-update init, shared-controller gradients,
gradient checkpointing."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _inl_hf_common import VOCAB, left_padded_batch, perturb, tiny_config
from torch import Tensor

from inl_llm.data import causal_lm_collator
from inl_llm.modeling_inl import INLCausalLMOutputWithPast, INLForCausalLM


def _model(perturbed: bool = True, **overrides: Any) -> INLForCausalLM:
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config(**overrides))
    if perturbed:
        perturb(model)
    return model


# ---------------------------------------------------------------------------- loss


def test_loss_ignores_minus_100_and_equals_manual_cross_entropy() -> None:
    model = _model().eval()
    batch = causal_lm_collator(pad_token_id=0)(
        [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    )
    labels = batch["labels"].clone()
    labels[0, 2] = -100  # an ignored real token as well as the padding
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    logits = out.logits
    terms = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target != -100:
                terms.append(-logits[b, t].float().log_softmax(-1)[target])
    expected = torch.stack(terms).mean()
    assert out.loss is not None
    torch.testing.assert_close(out.loss, expected)
    # padding is out of the loss: changing the ids under −100 labels changes nothing
    ids2 = batch["input_ids"].clone()
    ids2[batch["attention_mask"] == 0] = 42
    out2 = model(ids2, attention_mask=batch["attention_mask"], labels=labels)
    torch.testing.assert_close(out2.loss, out.loss)
    # num_items_in_batch: the sum over counted tokens divided by the given count
    out3 = model(
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=labels,
        num_items_in_batch=4,
    )
    torch.testing.assert_close(out3.loss, expected * len(terms) / 4)


def test_loss_backward_and_return_dict_false() -> None:
    model = _model().train()
    ids, mask = left_padded_batch([6, 4], seed=31)
    labels = ids.masked_fill(mask == 0, -100)
    out = model(ids, attention_mask=mask, labels=labels)
    assert isinstance(out, INLCausalLMOutputWithPast)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    as_tuple = model.eval()(ids, attention_mask=mask, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert as_tuple[0].shape == () and as_tuple[1].shape == (2, 6, VOCAB)


def test_inl_iterations_and_hidden_states() -> None:
    model = _model(num_iterations_per_layer=3, use_adaptive_stopping=False).eval()
    ids, mask = left_padded_batch([5, 2], seed=32)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    assert out.inl_iterations.shape == (2,)
    torch.testing.assert_close(out.inl_iterations, torch.full((2,), 3.0))
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 5, 32)


# ---------------------------------------------------------------------------- bad input


def test_value_errors() -> None:
    model = _model(perturbed=False).eval()
    ids = torch.randint(3, VOCAB, (2, 5))
    embeds = model.model.embed_tokens(ids)
    with pytest.raises(ValueError, match=r"exactly one of input_ids and inputs_embeds.*both"):
        model(input_ids=ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"exactly one of input_ids and inputs_embeds.*neither"):
        model()
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(B, S, 32\)"):
        model(inputs_embeds=torch.randn(2, 5, 31))
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(B, S, 32\)"):
        model(inputs_embeds=torch.randn(5, 32))
    with pytest.raises(ValueError, match=r"input_ids must be \(B, S\)"):
        model(torch.randint(3, VOCAB, (5,)))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, position_ids=torch.arange(4)[None])
    with pytest.raises(ValueError, match="labels must be"):
        model(ids, labels=ids[:, :4])
    with pytest.raises(ValueError, match="labels need all logits"):
        model(ids, labels=ids, logits_to_keep=1)
    with pytest.raises(ValueError, match="output_attentions"):
        model(ids, output_attentions=True)


def test_inputs_embeds_equal_input_ids() -> None:
    model = _model().eval()
    ids, mask = left_padded_batch([6, 3], seed=33)
    with torch.no_grad():
        a = model(ids, attention_mask=mask).logits
        b = model(inputs_embeds=model.model.embed_tokens(ids), attention_mask=mask).logits
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------- zero-update init


def _logits_without_inl(model: INLForCausalLM, ids: Tensor) -> Tensor:
    """The same network with every INL sub-layer removed, recomputed from its submodules."""
    base = model.model
    h = base.embed_tokens(ids)
    rotary = base.rotary(torch.arange(ids.shape[1])[None], h.dtype) if base.rotary else None
    for layer in base.layers:
        h = h + layer.self_attn(
            layer.attn_norm(h), rotary=rotary, attn_mask=None, past_key_values=None
        )
        if layer.mlp is not None:
            h = h + layer.mlp(layer.ffn_norm(h))
    h = base.norm(h)
    return model.lm_head(h) if model.lm_head is not None else base.embed_tokens.tied_logits(h)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"inl_placement": "replace_ffn"},
        {"use_shared_controllers": False, "inl_variant": "full", "tie_word_embeddings": True},
        {"use_adaptive_stopping": False},
    ],
    ids=["between-shared", "replace-ffn", "per-layer-full-tied", "fixed-T"],
)
@torch.no_grad()
def test_zero_update_init_equals_model_without_inl(overrides: dict[str, Any]) -> None:
    model = _model(perturbed=False, **overrides).eval()
    ids = torch.randint(3, VOCAB, (2, 7))
    without = _logits_without_inl(model, ids)
    torch.testing.assert_close(model(ids).logits, without)
    # the oracle can fail: once the gates open, INL changes the logits
    for layer in model.model.layers:
        layer.inl.gate.fill_(0.5)
    assert not torch.allclose(model(ids).logits, without, atol=1e-3)


# ---------------------------------------------------------------------------- shared controller


def test_shared_controller_gets_gradients_from_every_layer() -> None:
    layers = 3
    model = _model(num_layers=layers, use_adaptive_stopping=False).train()
    shared = model.model.inl_controller
    assert shared is not None
    updates: list[Tensor] = []
    hooks = [
        layer.inl.register_forward_hook(lambda _m, _i, out: updates.append(out[0]))
        for layer in model.model.layers
    ]
    ids, mask = left_padded_batch([6, 4], seed=34)
    model(ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    assert len(updates) == layers
    params = list(shared.parameters())
    contributing = 0
    for update in updates:
        grads = torch.autograd.grad(update.square().sum(), params, retain_graph=True)
        if all(float(g.abs().sum()) > 0 for g in grads):
            contributing += 1
    assert contributing == layers
    # and through the loss, the accumulated gradient reaches every controller tensor
    model.zero_grad()
    model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)


def test_gradient_checkpointing_matches() -> None:
    ids, mask = left_padded_batch([6, 4], seed=35)
    labels = ids.masked_fill(mask == 0, -100)
    grads = []
    for flag in (False, True):
        model = _model(use_gradient_checkpointing=flag, use_adaptive_stopping=False).train()
        assert all(layer.gradient_checkpointing == flag for layer in model.model.layers)
        loss = model(ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_padding_gets_zero_inl_update() -> None:
    model = _model().eval()
    ids, mask = left_padded_batch([6, 2], seed=36)
    seen: list[Tensor] = []
    hook = model.model.layers[0].inl.register_forward_hook(lambda _m, _i, out: seen.append(out[0]))
    with torch.no_grad():
        model(ids, attention_mask=mask)
    hook.remove()
    update = seen[0]
    assert torch.equal(update[1, :4], torch.zeros_like(update[1, :4]))
    assert float(update[1, 4:].abs().sum()) > 0
    assert float(F.mse_loss(update[0], torch.zeros_like(update[0]))) > 0


def test_cache_by_default_in_eval_only() -> None:
    model = _model(perturbed=False)
    ids = torch.randint(3, VOCAB, (1, 4))
    assert model.train()(ids).past_key_values is None
    assert model.train()(ids, use_cache=True).past_key_values is not None
    with torch.no_grad():
        assert model.eval()(ids).past_key_values is not None
        assert model.eval()(ids, use_cache=False).past_key_values is None
