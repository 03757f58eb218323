"""The athena benchmark helpers: batch order, pooling, the multi-head model and batch joining."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import BertConfig, BertModel

from benchmarks import _athena_bench as ab
from benchmarks.bench_athena_continual import MultiHeadClassifier, _pad_cat


def _encoder() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
    )
    return BertModel(config).eval()


def test_batches_are_seeded_epochs_without_repeats_inside_an_epoch() -> None:
    data = {"labels": torch.arange(10), "input_ids": torch.arange(10).unsqueeze(1)}
    a = ab.batches(data, batch_size=4, steps=5, seed=3)
    b = ab.batches(data, batch_size=4, steps=5, seed=3)
    assert all(torch.equal(x["labels"], y["labels"]) for x, y in zip(a, b, strict=True))
    first_epoch = torch.cat([x["labels"] for x in a])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert not torch.equal(
        torch.cat([x["labels"] for x in ab.batches(data, 4, 5, seed=4)]),
        torch.cat([x["labels"] for x in a]),
    )


def test_mean_pooling_ignores_padding() -> None:
    model = ab.MeanPoolClassifier(_encoder(), num_labels=3)
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    short = model(input_ids=ids[:, :3], attention_mask=torch.ones(1, 3, dtype=torch.long)).logits
    padded = model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 0, 0]])).logits
    torch.testing.assert_close(short, padded)


def test_multi_head_classifier_uses_each_examples_head() -> None:
    model = MultiHeadClassifier(_encoder(), num_tasks=3)
    ids = torch.randint(1, 50, (3, 4))
    mask = torch.ones_like(ids)
    mixed = model(input_ids=ids, attention_mask=mask, task_ids=torch.tensor([0, 2, 1])).logits
    for row, task in enumerate([0, 2, 1]):
        alone = model(
            input_ids=ids[row : row + 1], attention_mask=mask[:1], task_ids=torch.tensor([task])
        ).logits
        torch.testing.assert_close(mixed[row : row + 1], alone)


def test_pad_cat_right_pads_to_the_longest() -> None:
    a = {
        "input_ids": torch.ones(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "labels": torch.tensor([0, 1]),
        "task_ids": torch.tensor([1, 1]),
    }
    b = {
        "input_ids": torch.full((1, 5), 2),
        "attention_mask": torch.ones(1, 5, dtype=torch.long),
        "labels": torch.tensor([1]),
        "task_ids": torch.tensor([0]),
    }
    out = _pad_cat([a, b], pad_id=9)
    assert out["input_ids"].shape == (3, 5)
    assert out["input_ids"][0].tolist() == [1, 1, 1, 9, 9]
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    assert out["task_ids"].tolist() == [1, 1, 0]
