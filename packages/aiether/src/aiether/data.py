"""Byte-level training data for ``aiether-train``: the embedded corpus, a text file, or a saved
``datasets`` dataset.

- **Embedded** (default, no download): the standard library's ``pydoc_data.topics`` (≈ 465 KB of
  English prose about Python), topics sorted by name, every tenth (offset 8) held out for
  validation, topics joined by a blank line; UTF-8 bytes, vocabulary 256.
- **A text file** (``--text_file``): its UTF-8 bytes, the last 10% for validation.
- **``--dataset_path``**: the original meaning, ``datasets.load_from_disk`` with ``train`` and
  ``validation`` splits of ``input_ids`` (needs ``pip install datasets``), flattened to one stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenStreams:
    """Training and validation token streams (1-D int64) and the vocabulary size."""

    name: str
    train: Tensor
    val: Tensor
    vocab_size: int


def _as_bytes(text: str) -> Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def embedded_streams() -> TokenStreams:
    """``pydoc_data.topics`` as bytes, split by topic (module docstring)."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    val = [topics[n] for i, n in enumerate(names) if i % 10 == 8]
    train = [topics[n] for i, n in enumerate(names) if i % 10 != 8]
    return TokenStreams(
        "pydoc_data.topics", _as_bytes("\n\n".join(train)), _as_bytes("\n\n".join(val)), 256
    )


def text_file_streams(path: str | Path, val_fraction: float = 0.1) -> TokenStreams:
    """A UTF-8 text file as bytes; the last ``val_fraction`` is validation.

    Raises:
        ValueError: a file too short to hold both splits.
    """
    data = _as_bytes(Path(path).read_text(encoding="utf-8"))
    cut = int(len(data) * (1 - val_fraction))
    if cut < 2 or len(data) - cut < 2:
        raise ValueError(
            f"{path}: {len(data)} bytes is too little text for a train/validation split"
        )
    return TokenStreams(Path(path).name, data[:cut], data[cut:], 256)


def dataset_streams(path: str | Path) -> TokenStreams:
    """``datasets.load_from_disk(path)`` with ``train``/``validation`` splits of ``input_ids``.

    Raises:
        ImportError: ``datasets`` is not installed; ValueError: a split or column is missing.
    """
    try:
        from datasets import load_from_disk  # type: ignore[import-not-found]
    except ImportError as err:
        raise ImportError(
            "--dataset_path needs the datasets package: pip install datasets"
        ) from err
    ds = load_from_disk(str(path))
    streams = {}
    for split in ("train", "validation"):
        if split not in ds or "input_ids" not in ds[split].column_names:
            raise ValueError(f"{path}: needs a {split!r} split with an 'input_ids' column")
        streams[split] = torch.tensor(
            [t for row in ds[split]["input_ids"] for t in row], dtype=torch.long
        )
    vocab = int(max(int(streams["train"].max()), int(streams["validation"].max()))) + 1
    return TokenStreams(Path(path).name, streams["train"], streams["validation"], vocab)


def random_batch(
    stream: Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``block_size + 1`` tokens: inputs and next-token targets.

    Raises:
        ValueError: a stream shorter than one window.
    """
    if len(stream) <= block_size + 1:
        raise ValueError(
            f"a stream of {len(stream)} tokens is shorter than block_size + 1 = {block_size + 1}"
        )
    start = torch.randint(0, len(stream) - block_size - 1, (batch_size,), generator=generator)
    windows = torch.stack([stream[s : s + block_size + 1] for s in start.tolist()])
    return windows[:, :-1], windows[:, 1:]
