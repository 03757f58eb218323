"""Tiny local models, tokenizer, data and run files for the `athena-train` tests (not collected).

* `tiny_bert_dir`: the random BERT of `_athena_tiny.bert_config` saved with `save_pretrained`,
  plus a `BertTokenizerFast` built from a small ``vocab.txt``.
* `tiny_gpt2_dir`: a 2-layer GPT-2 (hidden 32) with the same tokenizer.
* `sentiment_rows`: a trivially learnable rule: label 1 when the text holds "good", 0 when it holds
  "bad", among random filler words.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = [
    "the", "a", "film", "movie", "was", "is", "plot", "actor", "story", "very",
    "quite", "really", "scene", "music", "ending", "and", "it", "this", "that", "so",
]  # fmt: skip
WORDS = ["good", "bad", *FILLER]
VOCAB = SPECIAL + WORDS


def write_tokenizer(folder: Path) -> Any:
    """A `BertTokenizerFast` over `VOCAB`, saved into `folder` (which it creates)."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file))
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def tiny_bert_dir(root: Path, seed: int = 0) -> Path:
    """Random tiny `BertForSequenceClassification` + tokenizer in `root / "bert"`."""
    from _athena_tiny import bert_config
    from transformers import BertForSequenceClassification

    folder = root / "bert"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_config(vocab_size=len(VOCAB)))
    model.save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


def tiny_gpt2_dir(root: Path, seed: int = 0) -> Path:
    """Random 2-layer GPT-2 (`Conv1D` projections, hidden 32) + tokenizer in `root / "gpt2"`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = root / "gpt2"
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


def sentiment_rows(n: int, seed: int, *, names: bool = False) -> list[dict[str, Any]]:
    """`n` rows ``{"text", "label"}``: label 1 iff "good" occurs (else "bad" does); with
    `names`, labels are ``"pos"``/``"neg"``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 4))]
        words.insert(rng.randint(0, len(words)), "good" if label else "bad")
        value: Any = ("pos" if label else "neg") if names else label
        rows.append({"text": " ".join(words), "label": value})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_run(path: Path, config: Mapping[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path
