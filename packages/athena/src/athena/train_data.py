"""Local JSONL/CSV text files → tokenized, padded batches for `athena-train`.

* `read_records` reads a JSONL file (one JSON object per line, blank lines skipped) or a CSV file
  (a header row naming the fields); errors name the file and line.
* `LabelMap` turns the label field into class ids: integer labels (``1``, ``"1"``) are used as
  they are; any other labels are class names, numbered in sorted order of the training set's names.
* `encode` tokenizes once, truncating to ``max_length``; `TokenizedDataset` holds the result and
  `make_loader` batches it with right padding (`collate`). Causal-LM batches get
  ``labels = input_ids`` with the padding set to -100 (the model shifts them itself).

Nothing here imports transformers; the tokenizer is any callable with the Hugging Face tokenizer
call signature.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DataError",
    "LabelMap",
    "TokenizedDataset",
    "collate",
    "encode",
    "infer_format",
    "make_loader",
    "read_examples",
    "read_records",
]

DataFormat = Literal["jsonl", "csv"]
Task = Literal["classification", "causal_lm"]

_EXTENSIONS: dict[str, DataFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_INT = re.compile(r"[+-]?\d+")
#: Tokenizer outputs passed to the model; causal LMs get no token_type_ids.
_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": ("input_ids", "attention_mask", "token_type_ids"),
    "causal_lm": ("input_ids", "attention_mask"),
}


class DataError(ValueError):
    """A data file that cannot be used; the message names the file (and line)."""


def infer_format(path: str | os.PathLike[str], fmt: str | None = None) -> DataFormat:
    """`fmt` when given, else the format the extension names (``.jsonl``/``.ndjson``, ``.csv``).

    Raises:
        DataError: unknown extension and no `fmt`.
    """
    if fmt is not None:
        if fmt not in ("jsonl", "csv"):
            raise DataError(f"data.format must be 'jsonl' or 'csv', got {fmt!r}")
        return "jsonl" if fmt == "jsonl" else "csv"
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise DataError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension {suffix!r}; "
            "set data.format to 'jsonl' or 'csv'"
        )
    return _EXTENSIONS[suffix]


def read_records(
    path: str | os.PathLike[str], fmt: str | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """Read a JSONL or CSV file into ``(line number, record)`` pairs.

    Raises:
        DataError: missing file, a line that is not a JSON object, a CSV without a header, or no
            records at all.
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise DataError(f"no such data file {where!r}")
    kind = infer_format(path, fmt)
    records: list[tuple[int, dict[str, Any]]] = []
    with open(where, encoding="utf-8", newline="") as fh:
        if kind == "jsonl":
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(
                        f"{where}:{lineno}: each line must be a JSON object, got "
                        f"{type(record).__name__}"
                    )
                records.append((lineno, record))
        else:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise DataError(f"{where}: a CSV file needs a header row naming its fields")
            for row in reader:
                records.append((reader.line_num, dict(row)))
    if not records:
        raise DataError(f"{where}: no records")
    return records


def read_examples(
    path: str | os.PathLike[str],
    fmt: str | None,
    text_field: str,
    label_field: str | None,
) -> tuple[list[str], list[object]]:
    """Texts (and raw labels when `label_field` is given) of a data file.

    Raises:
        DataError: a record without the field, or a text that is not a non-empty string.
    """
    where = os.fspath(path)
    texts: list[str] = []
    labels: list[object] = []
    for lineno, record in read_records(path, fmt):
        text = record.get(text_field)
        if text_field not in record:
            raise DataError(
                f"{where}:{lineno}: no field {text_field!r} (data.text_field); the record has "
                f"{sorted(record)}"
            )
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"{where}:{lineno}: field {text_field!r} must be a non-empty string, got {text!r}"
            )
        texts.append(text)
        if label_field is not None:
            if label_field not in record or record[label_field] in (None, ""):
                raise DataError(
                    f"{where}:{lineno}: no value for field {label_field!r} (data.label_field)"
                )
            labels.append(record[label_field])
    return texts, labels


@dataclass(frozen=True)
class LabelMap:
    """How raw labels become class ids.

    Attributes:
        names: Class names in id order, or None when the labels are integer ids already.
        num_labels: Number of classes.
    """

    names: tuple[str, ...] | None
    num_labels: int

    @staticmethod
    def _as_int(value: object) -> int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
        return None

    @classmethod
    def from_labels(cls, labels: Sequence[object], num_labels: int | None, source: str) -> LabelMap:
        """Integer ids when every label is one, else sorted class names.

        Args:
            labels: The training set's raw labels.
            num_labels: The configured number of classes (None: infer).
            source: The file, for messages.

        Raises:
            DataError: a negative id, an id ≥ `num_labels`, a label that is neither an integer
                nor a string, more names than `num_labels`, or fewer than 2 classes.
        """
        ids = [cls._as_int(v) for v in labels]
        if all(i is not None for i in ids):
            values = [i for i in ids if i is not None]
            if min(values) < 0:
                raise DataError(f"{source}: labels must be >= 0, found {min(values)}")
            inferred = max(values) + 1
            count = inferred if num_labels is None else num_labels
            if max(values) >= count:
                raise DataError(
                    f"{source}: label {max(values)} does not fit model.num_labels={count}"
                )
            result = cls(None, count)
        else:
            for value in labels:
                if not isinstance(value, str | int) or isinstance(value, bool):
                    raise DataError(f"{source}: labels must be integers or strings, got {value!r}")
            names = tuple(sorted({str(v) for v in labels}))
            count = len(names) if num_labels is None else num_labels
            if len(names) > count:
                raise DataError(
                    f"{source}: {len(names)} distinct labels {list(names)[:10]} exceed "
                    f"model.num_labels={count}"
                )
            result = cls(names, count)
        if result.num_labels < 2:
            raise DataError(
                f"{source}: classification needs at least 2 classes; found labels "
                f"{sorted({str(v) for v in labels})[:10]}"
            )
        return result

    def encode(self, labels: Sequence[object], source: str) -> list[int]:
        """Class ids of `labels`.

        Raises:
            DataError: a label unknown to this map.
        """
        out: list[int] = []
        index = {n: i for i, n in enumerate(self.names)} if self.names is not None else None
        for value in labels:
            if index is None:
                label = self._as_int(value)
                if label is None or not 0 <= label < self.num_labels:
                    raise DataError(
                        f"{source}: label {value!r} is not an integer in [0, {self.num_labels})"
                    )
            else:
                key = str(value)
                if key not in index:
                    raise DataError(
                        f"{source}: label {value!r} does not occur in the training data "
                        f"(classes {list(index)[:10]})"
                    )
                label = index[key]
            out.append(label)
        return out


class TokenizedDataset(Dataset[dict[str, list[int]]]):
    """Tokenized examples: each a dict of int lists (``input_ids``, ``attention_mask``, ...) plus
    ``labels`` (one class id, as a 1-list) for classification."""

    def __init__(self, features: list[dict[str, list[int]]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.features[index]


def encode(
    tokenizer: PreTrainedTokenizerBase | Callable[..., Mapping[str, Any]],
    texts: Sequence[str],
    *,
    max_length: int,
    task: Task,
    labels: Sequence[int] | None = None,
) -> TokenizedDataset:
    """Tokenize `texts` (truncated to `max_length` tokens, no padding) into a dataset.

    Raises:
        DataError: `labels` does not match `texts`, or a text tokenizes to nothing.
    """
    if labels is not None and len(labels) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    keep = [k for k in _FIELDS[task] if k in encoded]
    if "input_ids" not in keep:
        raise DataError("the tokenizer returned no input_ids")
    features: list[dict[str, list[int]]] = []
    for i in range(len(texts)):
        feature = {k: [int(t) for t in encoded[k][i]] for k in keep}
        if not feature["input_ids"]:
            raise DataError(f"text {i} ({texts[i][:40]!r}) tokenizes to no tokens")
        if labels is not None:
            feature["labels"] = [int(labels[i])]
        features.append(feature)
    return TokenizedDataset(features)


def collate(
    features: Sequence[Mapping[str, Sequence[int]]], *, pad_token_id: int, task: Task
) -> dict[str, Tensor]:
    """Right-pad a list of examples to the longest one.

    Returns:
        ``input_ids`` (B, T) padded with `pad_token_id`, ``attention_mask`` (B, T) (0 on
        padding), ``token_type_ids`` (B, T) when present, and ``labels``: (B,) class ids for
        classification, (B, T) token ids with -100 on padding for a causal LM.
    """
    length = max(len(f["input_ids"]) for f in features)
    size = len(features)
    ids = torch.full((size, length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((size, length), dtype=torch.long)
    types = (
        torch.zeros((size, length), dtype=torch.long) if "token_type_ids" in features[0] else None
    )
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        ids[row, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
        if "attention_mask" in feature:
            mask[row, :n] = torch.tensor(feature["attention_mask"], dtype=torch.long)
        else:
            mask[row, :n] = 1
        if types is not None:
            types[row, :n] = torch.tensor(feature["token_type_ids"], dtype=torch.long)
    batch: dict[str, Tensor] = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    if task == "causal_lm":
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    elif "labels" in features[0]:
        batch["labels"] = torch.tensor([f["labels"][0] for f in features], dtype=torch.long)
    return batch


def make_loader(
    dataset: TokenizedDataset,
    *,
    batch_size: int,
    pad_token_id: int,
    task: Task,
    shuffle: bool,
    seed: int,
) -> DataLoader[dict[str, list[int]]]:
    """A single-process `DataLoader` of padded batches; the shuffling order depends on `seed`
    only (a dedicated `torch.Generator`), so runs repeat exactly."""
    generator = torch.Generator().manual_seed(seed)

    def _collate(features: list[dict[str, list[int]]]) -> dict[str, Tensor]:
        return collate(features, pad_token_id=pad_token_id, task=task)

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_collate,
        num_workers=0,
    )
