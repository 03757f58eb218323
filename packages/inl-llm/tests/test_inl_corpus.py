"""Corpus splits (embedded and file), tokenising, random batches and validation windows."""

from pathlib import Path

import pytest
import torch

from inl_llm.corpus import (
    embedded_splits,
    encode,
    load_splits,
    random_batch,
    text_file_splits,
    validation_windows,
)
from inl_llm.tokenizer import train_tokenizer


def test_embedded_split_is_every_tenth_topic_at_offset_8() -> None:
    from pydoc_data.topics import topics

    splits = embedded_splits()
    names = sorted(topics)
    val_names = names[8::10]
    assert splits.val == "\n\n".join(topics[n] for n in val_names)
    assert splits.train == "\n\n".join(topics[n] for n in names if n not in set(val_names))
    assert splits.meta["val_topics"] == len(val_names)
    assert embedded_splits() == splits  # deterministic
    assert load_splits(None) == splits
    assert len(splits.val) > 10_000 and len(splits.train) > 5 * len(splits.val)


def test_text_file_split_cuts_at_a_line_start(tmp_path: Path) -> None:
    lines = [f"line {i}: {'é' * (i % 7)}\n" for i in range(200)]
    text = "".join(lines)
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    splits = text_file_splits(path)
    assert splits.train + splits.val == text
    assert splits.train.endswith("\n") and splits.val in text
    cut = len(splits.train)
    assert int(0.9 * len(text)) <= cut < int(0.9 * len(text)) + max(len(x) for x in lines) + 1
    assert splits.name == "t.txt" and load_splits(path) == splits
    other = text_file_splits(path, val_fraction=0.5)
    assert len(other.val) > len(splits.val)


def test_text_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text_file"):
        text_file_splits(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa" * 100)
    with pytest.raises(ValueError, match="UTF-8"):
        text_file_splits(bad)
    short = tmp_path / "short.txt"
    short.write_text("x")
    with pytest.raises(ValueError, match="too short"):
        text_file_splits(short)
    with pytest.raises(ValueError, match="val_fraction"):
        text_file_splits(short, val_fraction=1.0)


def test_encode_equals_the_tokenizer_without_special_tokens() -> None:
    text = embedded_splits().val[:5000]
    tok = train_tokenizer(text, vocab_size=400)
    ids = encode(text, tok)
    assert ids.dtype == torch.long and ids.dim() == 1
    assert ids.tolist() == tok(text)["input_ids"]
    assert tok.decode(ids.tolist()) == text


def test_random_batch_draws_seeded_contiguous_windows() -> None:
    ids = torch.arange(100, 120)  # 20 tokens, distinct values
    seq_len = 5
    g = torch.Generator().manual_seed(3)
    starts_seen = set()
    for _ in range(200):
        batch = random_batch(ids, 4, seq_len, g)
        assert batch.shape == (4, seq_len) and batch.dtype == torch.long
        for row in batch:
            start = int(row[0]) - 100
            assert torch.equal(row, ids[start : start + seq_len])
            starts_seen.add(start)
    assert starts_seen == set(range(20 - seq_len + 1))  # every window, the last one included
    a = random_batch(ids, 8, seq_len, torch.Generator().manual_seed(7))
    b = random_batch(ids, 8, seq_len, torch.Generator().manual_seed(7))
    c = random_batch(ids, 8, seq_len, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_batch_errors() -> None:
    g = torch.Generator()
    with pytest.raises(ValueError, match="seq_len"):
        random_batch(torch.arange(5), 2, 5, g)
    with pytest.raises(ValueError, match="batch_size"):
        random_batch(torch.arange(50), 0, 5, g)
    with pytest.raises(ValueError, match="1-D"):
        random_batch(torch.zeros(2, 50, dtype=torch.long), 2, 5, g)


def test_validation_windows_predict_every_token_once() -> None:
    ids = torch.arange(1000, 1103)  # 103 tokens
    windows = validation_windows(ids, 8)
    assert windows.shape == (102 // 7, 8)
    # The model predicts positions 1..T-1 of each window: together ids[1 : 1 + W·(T-1)], once each.
    predicted = windows[:, 1:].reshape(-1)
    assert torch.equal(predicted, ids[1 : 1 + predicted.numel()])
    assert torch.equal(windows[1:, 0], windows[:-1, -1])  # overlap by one token
    capped = validation_windows(ids, 8, max_tokens=30)
    assert capped.shape == (29 // 7, 8) and torch.equal(capped, windows[: capped.shape[0]])


def test_validation_windows_errors() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        validation_windows(torch.arange(10), 1)
    with pytest.raises(ValueError, match="max_tokens"):
        validation_windows(torch.arange(10), 4, max_tokens=3)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        validation_windows(torch.arange(3), 4)
