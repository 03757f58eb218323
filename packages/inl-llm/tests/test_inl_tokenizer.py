"""The byte-level BPE tokenizer: round trips, special tokens, chat template, offline reload."""

import functools
import json
import os
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from inl_llm.corpus import embedded_splits
from inl_llm.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, train_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@functools.cache
def _text() -> str:
    return embedded_splits().train[:60_000]


@functools.cache
def _tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(_text(), vocab_size=1024)


def test_vocabulary_size_and_special_ids() -> None:
    tok = _tokenizer()
    assert len(tok) == 1024
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == tok.unk_token_id == 0
    assert tok.extra_special_tokens == ["<USER>", "<ASSISTANT>", "<SYSTEM>", "<ERROR>"]
    assert sorted(tok.all_special_ids) == [0, 1, 2, 3, 4]
    # The 256 byte symbols are all in the vocabulary, so nothing is ever unknown.
    vocab = tok.get_vocab()
    single = [t for t in vocab if len(t) == 1]
    assert len(single) == 256


def test_no_bos_and_no_token_type_ids() -> None:
    tok = _tokenizer()
    encoded = tok("The integrator")
    assert set(encoded) == {"input_ids", "attention_mask"}
    assert 0 not in encoded["input_ids"]
    # Encoding piecewise at a word boundary equals encoding at once (nothing added per call).
    a, b = "The integrator", " neuron layer"
    assert tok(a + b)["input_ids"] == tok(a)["input_ids"] + tok(b)["input_ids"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_round_trips(text: str) -> None:
    tok = _tokenizer()
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    ["", "\x00\x01\x7f", "héllo wörld 🙂\t\n  \r\n", "\ud7ff\ue000\U0010ffff", "a" * 5000, " " * 7],
)
def test_edge_texts_round_trip(text: str) -> None:
    tok = _tokenizer()
    assert tok.decode(tok(text)["input_ids"]) == text


def test_special_tokens_in_text_are_single_ids_and_skippable() -> None:
    tok = _tokenizer()
    ids = tok("<USER>hi<ASSISTANT>yo<|endoftext|>")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 0 and 2 in ids
    assert tok.decode(ids, skip_special_tokens=True) == "hiyo"


def test_merges_compress_the_training_text() -> None:
    tok = _tokenizer()
    text = _text()[:20_000]
    ids = tok(text, verbose=False)["input_ids"]
    # Byte-level BPE with 1k tokens on English prose: well over 2 bytes per token (≈ 3 measured).
    assert len(text.encode()) / len(ids) > 2.5


def test_chat_template_renders_every_role() -> None:
    tok = _tokenizer()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a closure?"},
        {"role": "assistant", "content": "A function with its scope."},
        {"role": "error", "content": "NameError"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<SYSTEM>Be brief.\n<USER>What is a closure?\n"
        "<ASSISTANT>A function with its scope.<|endoftext|><ERROR>NameError\n"
    )
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<SYSTEM>Be brief.\n<USER>What is a closure?\n<ASSISTANT>"
    encoded = tok.apply_chat_template(
        messages[1:2], add_generation_prompt=True, return_tensors="pt"
    )
    ids = encoded["input_ids"]
    assert ids.shape[0] == 1 and ids[0, 0].item() == 1 and ids[0, -1].item() == 2
    assert tok.decode(ids[0]) == "<USER>What is a closure?\n<ASSISTANT>"


def test_chat_template_rejects_unknown_role() -> None:
    tok = _tokenizer()
    with pytest.raises(jinja2.TemplateError, match="role must be"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_save_and_reload_with_auto_tokenizer_offline(tmp_path: Path) -> None:
    tok = _tokenizer()
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_input_names"] == ["input_ids", "attention_mask"]
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = "def f(x):\n    return x  # <USER> naïve"
    assert loaded(sample)["input_ids"] == tok(sample)["input_ids"]
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.chat_template == CHAT_TEMPLATE
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (0, 0, 0)
    assert loaded.extra_special_tokens == tok.extra_special_tokens
    assert loaded.padding_side == "left"


def test_training_is_deterministic_and_accepts_iterators() -> None:
    docs = _text()[:30_000].split("\n\n")
    a = train_tokenizer(docs, vocab_size=600)
    b = train_tokenizer(iter(docs), vocab_size=600)
    c = train_tokenizer((d for d in docs), vocab_size=600)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert a.backend_tokenizer.to_str() == c.backend_tokenizer.to_str()


def test_small_text_gives_a_smaller_vocabulary() -> None:
    tok = train_tokenizer("abab abab abab", vocab_size=4096)
    assert 261 <= len(tok) < 300
    assert tok.decode(tok("zzz ✓")["input_ids"]) == "zzz ✓"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 260}, "vocab_size"),
        ({"vocab_size": 1000.0}, "vocab_size"),
        ({"min_frequency": 0}, "min_frequency"),
        ({"model_max_length": 0}, "model_max_length"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_tokenizer("some text", **kwargs)  # type: ignore[arg-type]


def test_bad_texts_raise() -> None:
    with pytest.raises(ValueError, match="at least one character"):
        train_tokenizer(["", ""])
    with pytest.raises(TypeError, match="texts"):
        train_tokenizer(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str items"):
        train_tokenizer(["ok", 5])  # type: ignore[list-item]
