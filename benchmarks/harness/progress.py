"""Progress bars for anything longer than a few seconds (tqdm, written to stderr)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, desc: str = "", total: int | None = None, disable: bool = False
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar (``disable=True`` returns a silent bar)."""
    bar: Iterator[T] = tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True)
    return bar
