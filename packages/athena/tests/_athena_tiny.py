"""Tiny models shared by the athena tests (not collected by pytest): the random BERT of the spec
(hidden 32, 2 layers, 4 heads, intermediate 37, no dropout) and a small named MLP."""

from __future__ import annotations

import copy

import torch
from torch import nn

VOCAB = 100


def bert_config(**overrides: object):  # -> transformers.BertConfig
    from transformers import BertConfig

    kwargs: dict[str, object] = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def tiny_bert(seed: int = 0, **overrides: object) -> nn.Module:
    """A random `BertForSequenceClassification` in eval mode, identical for a seed."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(**overrides)).eval()


def twin(model: nn.Module) -> nn.Module:
    """An independent copy with the same weights."""
    return copy.deepcopy(model)


def batch(seed: int = 1, size: int = 4, length: int = 9) -> dict[str, torch.Tensor]:
    """Token ids, a right-padded attention mask and labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (size, length), generator=g)
    mask = torch.ones(size, length, dtype=torch.long)
    mask[0, length - 3 :] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.randint(0, 2, (size,), generator=g),
    }


class MLP(nn.Module):
    """Two blocks (`layers.<i>.up`, `layers.<i>.down`) and a `head`."""

    def __init__(self, d: int = 8, hidden: int = 12, classes: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleDict({"up": nn.Linear(d, hidden), "down": nn.Linear(hidden, d)})
            for _ in range(2)
        )
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = x + block["down"](torch.relu(block["up"](x)))
        return self.head(x)
