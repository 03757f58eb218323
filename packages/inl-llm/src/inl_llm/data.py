"""`causal_lm_collator`: pad token sequences into a causal-LM batch with −100 labels on padding."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = ["causal_lm_collator"]

IGNORE_INDEX = -100

Example = Sequence[int] | Tensor | Mapping[str, Sequence[int] | Tensor]


def causal_lm_collator(
    pad_token_id: int,
    *,
    padding_side: Literal["right", "left"] = "right",
    pad_to_multiple_of: int | None = None,
) -> Callable[[Sequence[Example]], dict[str, Tensor]]:
    """A collate function for :class:`~inl_llm.INLForCausalLM` training.

    Each example is a sequence of token ids, a 1-D tensor, or a mapping with ``input_ids`` and
    optionally ``labels`` (same length; −100 entries stay ignored). The batch is padded to the
    longest example; ``labels`` default to the ids (the model shifts them inside) and are −100
    on padding, so padding never enters the loss even when ``pad_token_id`` is also the EOS id.

    Args:
        pad_token_id: the id written into padded positions of ``input_ids``.
        padding_side: ``"right"`` (training, the default) or ``"left"`` (batched generation).
        pad_to_multiple_of: round the padded length up to a multiple of this, if given.

    Returns:
        ``collate(examples) -> {"input_ids": (B, S) long, "attention_mask": (B, S) long,
        "labels": (B, S) long}``.

    Raises:
        ValueError: on a bad argument, an empty batch, an empty example, or labels whose length
            differs from the ids.
    """
    if not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool) or pad_token_id < 0:
        raise ValueError(
            f"causal_lm_collator: pad_token_id must be an int >= 0, got {pad_token_id!r}"
        )
    if padding_side not in ("right", "left"):
        raise ValueError(
            f"causal_lm_collator: padding_side must be 'right' or 'left', got {padding_side!r}"
        )
    if pad_to_multiple_of is not None and (
        not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
    ):
        raise ValueError(
            f"causal_lm_collator: pad_to_multiple_of must be an int >= 1, got {pad_to_multiple_of!r}"
        )

    def collate(examples: Sequence[Example]) -> dict[str, Tensor]:
        if len(examples) == 0:
            raise ValueError("causal_lm_collator: got an empty batch")
        ids_list: list[Tensor] = []
        labels_list: list[Tensor] = []
        for i, example in enumerate(examples):
            if isinstance(example, Mapping):
                ids = _as_ids(example["input_ids"], f"examples[{i}]['input_ids']")
                raw_labels = example.get("labels")
                labels = (
                    ids if raw_labels is None else _as_ids(raw_labels, f"examples[{i}]['labels']")
                )
            else:
                ids = _as_ids(example, f"examples[{i}]")
                labels = ids
            if ids.numel() == 0:
                raise ValueError(f"causal_lm_collator: examples[{i}] has no tokens")
            if labels.shape != ids.shape:
                raise ValueError(
                    f"causal_lm_collator: examples[{i}] has {ids.numel()} ids but "
                    f"{labels.numel()} labels"
                )
            ids_list.append(ids)
            labels_list.append(labels)
        length = max(int(t.numel()) for t in ids_list)
        if pad_to_multiple_of is not None:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        batch = len(ids_list)
        input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
        labels_out = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for row, (ids, labels) in enumerate(zip(ids_list, labels_list, strict=True)):
            n = int(ids.numel())
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[row, span] = ids
            labels_out[row, span] = labels
            attention_mask[row, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels_out}

    return collate


def _as_ids(value: Sequence[int] | Tensor, name: str) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(list(value), dtype=torch.long)
    if tensor.dim() != 1 or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(
            f"causal_lm_collator: {name} must be a 1-D sequence of ints, got shape "
            f"{tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor.to(torch.long)
