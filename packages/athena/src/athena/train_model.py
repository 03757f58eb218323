"""Loading the local Hugging Face model and tokenizer for `athena-train`, and the pooled
classification head.

`load_model` returns, for ``task: classification``, the model's own head
(`AutoModelForSequenceClassification`) or — with ``pooling: mean`` / ``"cls"`` — a
`PooledClassifier`: `AutoModel`'s last hidden state, pooled (mean over the attention mask, or the
first token), into one linear layer. For ``task: causal_lm`` it returns
`AutoModelForCausalLM`. Everything is read with ``local_files_only=True``: nothing is downloaded.

The pooled classifier keeps the encoder under its Hugging Face prefix (``bert.``, ``roberta.``)
and names its head ``classifier``, so adapter keys read ``base_model.model.bert.encoder.…`` as for
`BertForSequenceClassification`, and the head is saved with the adapter (`modules_to_save`).
To reload a trained adapter, rebuild the model with `load_model` (same section) and call
`athena.AthenaModel.from_pretrained(model, output_dir)`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .train_config import ConfigError, ModelSection

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["PooledClassifier", "load_model", "load_tokenizer", "mean_pool", "pick_device"]

Pooling = Literal["cls", "mean"]


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Mean of the hidden states over the unmasked positions.

    Args:
        hidden: (B, T, D) hidden states.
        attention_mask: (B, T), 1 on tokens and 0 on padding (None: all tokens).

    Returns:
        (B, D); a row with no token gives zeros.
    """
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class PooledClassifier(nn.Module):
    """A sequence classifier: encoder → pooled hidden state (B, D) → ``classifier`` (B, C).

    Args:
        encoder: A Hugging Face base model returning ``last_hidden_state`` (B, T, D).
        num_labels: Number of classes C.
        pooling: ``"mean"`` over the attention mask, or ``"cls"`` (first token).

    The forward pass takes the usual ``input_ids``, ``attention_mask``, ``token_type_ids`` and
    optional ``labels`` (B,) and returns a `SequenceClassifierOutput` (cross-entropy loss when
    labels are given).
    """

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: Pooling) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels!r}")
        config = getattr(encoder, "config", None)
        hidden = getattr(config, "hidden_size", None)
        if not isinstance(hidden, int):
            raise ValueError("the encoder's config has no integer hidden_size")
        prefix = getattr(encoder, "base_model_prefix", "") or "encoder"
        self.encoder_name: str = prefix
        self.pooling: Pooling = pooling
        self.num_labels = num_labels
        self.config = config
        self.add_module(prefix, encoder)
        self.classifier = nn.Linear(hidden, num_labels)
        std = float(getattr(config, "initializer_range", 0.02))
        nn.init.normal_(self.classifier.weight, std=std)
        nn.init.zeros_(self.classifier.bias)

    @property
    def encoder(self) -> nn.Module:
        """The wrapped base model."""
        return self.get_submodule(self.encoder_name)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits (B, C) and, with `labels`, the mean cross-entropy."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden: Tensor = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        logits = self.classifier(pooled)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _load_error(what: str, key: str, path: str, exc: Exception) -> ConfigError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"{key}: cannot load a {what} from {path!r} (offline): {detail}")


def load_tokenizer(section: ModelSection) -> PreTrainedTokenizerBase:
    """The tokenizer of `section.tokenizer` (default `section.path`), read offline.

    For a causal LM without a padding token the end-of-sequence token pads (padding never
    enters the loss: its labels are -100).

    Raises:
        ConfigError: no tokenizer there, or a causal-LM tokenizer with neither token.
    """
    from transformers import AutoTokenizer

    key = "model.tokenizer" if section.tokenizer is not None else "model.path"
    path = section.tokenizer or section.path
    if not os.path.isdir(path):
        raise ConfigError(f"{key}: no such folder {path!r} (a local Hugging Face model folder)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _load_error("tokenizer", key, path, exc) from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"{key}: the tokenizer has neither a pad token nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(section: ModelSection, num_labels: int | None, pad_token_id: int) -> nn.Module:
    """The model of `section`, read offline, in training mode.

    Args:
        section: The ``model:`` section.
        num_labels: Classes (classification).
        pad_token_id: Written into the model config when it has none (heads such as GPT-2's
            ``score`` find the last token through it).

    Raises:
        ConfigError: no model folder, or transformers cannot load it.
    """
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    if not os.path.isdir(section.path):
        raise ConfigError(
            f"model.path: no such folder {section.path!r} (a local Hugging Face model folder)"
        )
    model: nn.Module
    try:
        if section.task == "causal_lm":
            model = AutoModelForCausalLM.from_pretrained(section.path, local_files_only=True)
        elif section.pooling is None:
            model = AutoModelForSequenceClassification.from_pretrained(
                section.path,
                local_files_only=True,
                num_labels=num_labels,
                ignore_mismatched_sizes=True,
            )
        else:
            encoder = AutoModel.from_pretrained(section.path, local_files_only=True)
            assert num_labels is not None
            model = PooledClassifier(encoder, num_labels, section.pooling)
    except (OSError, ValueError) as exc:
        raise _load_error("model", "model.path", section.path, exc) from None
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_token_id
    model.train()
    return model


def pick_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given.

    Raises:
        ConfigError: the device is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device: {name!r} requested but CUDA is not available")
    return device
