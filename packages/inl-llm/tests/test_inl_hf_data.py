"""causal_lm_collator: padding, attention mask and −100 labels."""

from __future__ import annotations

import pytest
import torch

from inl_llm.data import causal_lm_collator


def test_right_padding_default() -> None:
    batch = causal_lm_collator(pad_token_id=9)([[1, 2, 3], [4], torch.tensor([5, 6])])
    assert torch.equal(batch["input_ids"], torch.tensor([[1, 2, 3], [4, 9, 9], [5, 6, 9]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[1, 2, 3], [4, -100, -100], [5, 6, -100]]))
    assert all(t.dtype == torch.long for t in batch.values())


def test_left_padding_dicts_and_given_labels() -> None:
    collate = causal_lm_collator(pad_token_id=0, padding_side="left", pad_to_multiple_of=4)
    batch = collate([{"input_ids": [7, 8], "labels": [-100, 8]}, {"input_ids": [3, 4, 5]}])
    assert torch.equal(batch["input_ids"], torch.tensor([[0, 0, 7, 8], [0, 3, 4, 5]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]))
    assert torch.equal(batch["labels"], torch.tensor([[-100, -100, -100, 8], [-100, 3, 4, 5]]))


def test_pad_equal_to_eos_is_still_ignored() -> None:
    eos = 2
    batch = causal_lm_collator(pad_token_id=eos)([[5, eos], [6]])
    assert batch["labels"].tolist() == [[5, eos], [6, -100]]  # a real EOS is learned, padding not


def test_collator_errors() -> None:
    with pytest.raises(ValueError, match="pad_token_id"):
        causal_lm_collator(pad_token_id=-1)
    with pytest.raises(ValueError, match="padding_side"):
        causal_lm_collator(pad_token_id=0, padding_side="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        causal_lm_collator(pad_token_id=0, pad_to_multiple_of=0)
    collate = causal_lm_collator(pad_token_id=0)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="no tokens"):
        collate([[]])
    with pytest.raises(ValueError, match="labels"):
        collate([{"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="1-D"):
        collate([torch.ones(2, 2, dtype=torch.long)])
