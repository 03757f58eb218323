"""GenerationMixin: greedy equals a manual uncached loop, beam scores equal recomputed
log-probabilities, sampling is seeded and degenerates to greedy at top_p → 0."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _inl_hf_common import left_padded_batch, perturb, tiny_config

from inl_llm.modeling_inl import INLForCausalLM

NEW = 8


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _model(**overrides: Any) -> INLForCausalLM:
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config(**overrides)).eval()
    perturb(model)
    return model


def _generate(model: INLForCausalLM, ids: torch.Tensor, mask: torch.Tensor, **kw: Any) -> Any:
    # eos_token_id=None: run exactly NEW steps, as the manual loop does
    return model.generate(
        ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None, pad_token_id=0, **kw
    )


@torch.no_grad()
def _manual_greedy(model: INLForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    for _ in range(NEW):
        logits = model(ids, attention_mask=mask, use_cache=False).logits[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return ids


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "tie_word_embeddings": True,
            "inl_placement": "replace_ffn",
            "use_adaptive_stopping": False,
        },
    ],
    ids=["default", "tied-replace-ffn"],
)
def test_greedy_generate_equals_manual_uncached_loop(overrides: dict[str, Any]) -> None:
    model = _model(**overrides)
    ids, mask = left_padded_batch([6, 3, 5], seed=11)
    out = _generate(model, ids, mask, do_sample=False)
    expected = _manual_greedy(model, ids, mask)
    assert torch.equal(out, expected)
    # the generated tokens are not all the same (the test would be weak otherwise)
    assert len(set(out[:, ids.shape[1] :].flatten().tolist())) > 2


@torch.no_grad()
def test_beam_search_scores_equal_recomputed_log_probs() -> None:
    model = _model()
    ids, mask = left_padded_batch([5, 3], seed=12)
    out = _generate(
        model,
        ids,
        mask,
        do_sample=False,
        num_beams=3,
        num_return_sequences=3,
        length_penalty=0.0,  # score = sum of the token log-probabilities
        output_scores=True,
        return_dict_in_generate=True,
    )
    seqs = out.sequences
    assert seqs.shape == (6, ids.shape[1] + NEW)
    assert torch.equal(seqs[:, : ids.shape[1]], ids.repeat_interleave(3, dim=0))
    full_mask = torch.cat(
        [mask.repeat_interleave(3, dim=0), torch.ones(6, NEW, dtype=mask.dtype)], 1
    )
    logp = model(seqs, attention_mask=full_mask, use_cache=False).logits.float().log_softmax(-1)
    p = ids.shape[1]
    picked = logp[:, p - 1 : -1].gather(-1, seqs[:, p:, None]).squeeze(-1)
    torch.testing.assert_close(out.sequences_scores, picked.sum(-1), atol=1e-4, rtol=1e-5)
    # beams of one prompt are distinct and sorted by score
    for b in range(2):
        rows = seqs[3 * b : 3 * b + 3].tolist()
        assert len({tuple(r) for r in rows}) == 3
        scores = out.sequences_scores[3 * b : 3 * b + 3]
        assert bool((scores[:-1] >= scores[1:]).all())
    # the best beam scores at least as well as greedy decoding
    greedy = _generate(model, ids, mask, do_sample=False)
    g_logp = model(greedy, attention_mask=full_mask[::3], use_cache=False).logits.log_softmax(-1)
    g_score = g_logp[:, p - 1 : -1].gather(-1, greedy[:, p:, None]).squeeze(-1).sum(-1)
    assert bool((out.sequences_scores[::3] >= g_score - 1e-4).all())


def test_sampling_runs_seeded_and_degenerates_to_greedy() -> None:
    model = _model()
    ids, mask = left_padded_batch([6, 2], seed=13)
    torch.manual_seed(5)
    a = _generate(model, ids, mask, do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
    torch.manual_seed(5)
    b = _generate(model, ids, mask, do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
    assert torch.equal(a, b)
    assert a.shape == (2, ids.shape[1] + NEW)
    assert bool(((a >= 0) & (a < model.config.vocab_size)).all())
    # top_p → 0 keeps only the most likely token: sampling becomes greedy
    torch.manual_seed(6)
    tiny_p = _generate(model, ids, mask, do_sample=True, temperature=1.3, top_p=1e-6, top_k=0)
    assert torch.equal(tiny_p, _generate(model, ids, mask, do_sample=False))
    # a high temperature really samples (differs from greedy somewhere)
    torch.manual_seed(7)
    hot = _generate(model, ids, mask, do_sample=True, temperature=5.0, top_k=0)
    assert not torch.equal(hot, tiny_p)


@torch.no_grad()
def test_logits_to_keep() -> None:
    model = _model()
    ids, mask = left_padded_batch([6, 4], seed=14)
    full = model(ids, attention_mask=mask).logits
    last = model(ids, attention_mask=mask, logits_to_keep=1).logits
    assert last.shape == (2, 1, model.config.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    picked = model(ids, attention_mask=mask, logits_to_keep=torch.tensor([1, 4])).logits
    torch.testing.assert_close(picked, full[:, [1, 4]])
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, logits_to_keep=-1)
