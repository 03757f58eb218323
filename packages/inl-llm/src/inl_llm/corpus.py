"""Training text for INL language models: the embedded corpus or a file, split, tokenised, batched.

* **Embedded corpus** (no download): the text of the standard library's ``pydoc_data.topics``
  (≈ 465 KB of English technical prose about Python). Topics are sorted by name and every tenth
  (offset 8, as in the repository's benchmark harness) goes to the validation split; topics are
  joined by a blank line.
* **A text file** (``text_file=PATH``, read as UTF-8): the last ``val_fraction`` of its characters
  (10% by default), moved forward to the next line start, is the validation split.

Both splits are deterministic. :func:`encode` turns a split into a 1-D id tensor;
:func:`random_batch` draws random contiguous windows from it with a seeded
:class:`torch.Generator`; :func:`validation_windows` cuts the fixed, non-overlapping windows that
validation runs over.
"""

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

__all__ = [
    "TextSplits",
    "embedded_splits",
    "encode",
    "load_splits",
    "random_batch",
    "text_file_splits",
    "validation_windows",
]

_VAL_EVERY = 10
_VAL_OFFSET = 8


@dataclass(frozen=True)
class TextSplits:
    """The train and validation text of a corpus.

    Attributes:
        name: ``"pydoc_data.topics"`` or the file's name.
        train: the training text.
        val: the validation text.
        meta: provenance (source, sizes, a SHA-256 of the whole text).
    """

    name: str
    train: str
    val: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def val_bytes_per_char(self) -> float:
        """UTF-8 bytes per character of the validation text."""
        return len(self.val.encode("utf-8")) / max(1, len(self.val))


def embedded_splits() -> TextSplits:
    """The embedded corpus: ``pydoc_data.topics``, every tenth topic (offset 8) for validation.

    Returns:
        The splits; ``meta`` names the source, the topic counts and the text's SHA-256 (the
        topics differ between Python versions).
    """
    from pydoc_data.topics import topics

    names = sorted(topics)
    train = [topics[n] for i, n in enumerate(names) if i % _VAL_EVERY != _VAL_OFFSET]
    val = [topics[n] for i, n in enumerate(names) if i % _VAL_EVERY == _VAL_OFFSET]
    train_text, val_text = "\n\n".join(train), "\n\n".join(val)
    return TextSplits(
        name="pydoc_data.topics",
        train=train_text,
        val=val_text,
        meta={
            "source": "pydoc_data.topics",
            "topics": len(names),
            "val_topics": len(val),
            "sha256": _sha256(train_text, val_text),
        },
    )


def text_file_splits(path: str | Path, val_fraction: float = 0.1) -> TextSplits:
    """A UTF-8 text file split into training text and a final validation part.

    Args:
        path: the file.
        val_fraction: the share of characters at the end that becomes validation text, in (0, 1);
            the cut moves forward to the next line start when there is one.

    Returns:
        The splits; ``meta`` holds the path, the character counts and the text's SHA-256.

    Raises:
        ValueError: when the file does not exist, is not UTF-8, or is too short for two non-empty
            splits; or for a ``val_fraction`` outside (0, 1).
    """
    if not isinstance(val_fraction, float | int) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"text_file_splits: val_fraction must lie in (0, 1), got {val_fraction!r}")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"text_file_splits: text_file {str(path)!r} is not an existing file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"text_file_splits: text_file {str(path)!r} is not UTF-8 text ({error})"
        ) from error
    cut = math.floor(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut)
    if newline != -1 and newline + 1 < len(text):
        cut = newline + 1
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise ValueError(
            f"text_file_splits: text_file {str(path)!r} ({len(text)} characters) is too short "
            f"for a training and a validation split"
        )
    return TextSplits(
        name=file.name,
        train=train,
        val=val,
        meta={
            "source": str(file),
            "characters": len(text),
            "val_characters": len(val),
            "sha256": _sha256(train, val),
        },
    )


def load_splits(text_file: str | Path | None = None) -> TextSplits:
    """The embedded corpus when ``text_file`` is None, else :func:`text_file_splits` of it."""
    return embedded_splits() if text_file is None else text_file_splits(text_file)


def encode(text: str, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Tokenise a whole text into one id sequence, with no special tokens added.

    Args:
        text: the text (any length: the model's context length does not apply here).
        tokenizer: a fast tokenizer (its ``backend_tokenizer`` does the work).

    Returns:
        A 1-D int64 CPU tensor of token ids, shape (N,).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"encode: tokenizer must be a fast tokenizer, got {type(tokenizer).__name__}"
        )
    ids: list[int] = backend.encode(text, add_special_tokens=False).ids
    return torch.tensor(ids, dtype=torch.long)


def random_batch(
    ids: torch.Tensor,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw ``batch_size`` random contiguous windows of ``seq_len`` tokens.

    The windows are the model's ``input_ids`` and its ``labels`` (the model shifts them), so each
    window trains ``seq_len - 1`` next-token predictions.

    Args:
        ids: the tokenised split, shape (N,).
        batch_size: B, windows per batch.
        seq_len: T, tokens per window; N must exceed T.
        generator: the CPU generator that chooses the window starts (resume restores its state).

    Returns:
        An int64 CPU tensor of shape (B, T).

    Raises:
        ValueError: for a non-positive ``batch_size``/``seq_len`` or a split of at most T tokens.
    """
    _check_sizes(ids, batch_size, seq_len, "random_batch")
    starts = torch.randint(0, ids.numel() - seq_len + 1, (batch_size,), generator=generator)
    return ids[starts[:, None] + torch.arange(seq_len)]


def validation_windows(
    ids: torch.Tensor, seq_len: int, max_tokens: int | None = None
) -> torch.Tensor:
    """Cut a split into consecutive windows that overlap by one token.

    Window i covers ids[i·(T−1) : i·(T−1) + T], so every token after the first is predicted exactly
    once across the windows (the model shifts labels inside); a tail shorter than T is dropped.

    Args:
        ids: the tokenised split, shape (N,).
        seq_len: T, tokens per window (at least 2).
        max_tokens: keep only the first ``max_tokens`` ids (None: all).

    Returns:
        An int64 tensor of shape (W, T), W ≥ 1.

    Raises:
        ValueError: for ``seq_len < 2``, ``max_tokens < seq_len`` or a split shorter than T.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"validation_windows: seq_len must be an int >= 2, got {seq_len!r}")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < seq_len:
            raise ValueError(
                f"validation_windows: max_tokens must be None or an int >= seq_len ({seq_len}), "
                f"got {max_tokens!r}"
            )
        ids = ids[:max_tokens]
    if ids.numel() < seq_len:
        raise ValueError(
            f"validation_windows: the split has {ids.numel()} tokens, fewer than seq_len={seq_len}"
        )
    stride = seq_len - 1
    count = (ids.numel() - 1) // stride
    starts = torch.arange(count) * stride
    return ids[starts[:, None] + torch.arange(seq_len)]


def _check_sizes(ids: torch.Tensor, batch_size: int, seq_len: int, where: str) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")
    if ids.dim() != 1:
        raise ValueError(f"{where}: ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.numel() <= seq_len:
        raise ValueError(
            f"{where}: the split has {ids.numel()} tokens, need more than seq_len={seq_len}"
        )


def _sha256(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
