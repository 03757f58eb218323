"""Interleaved timing of benchmark arms (A B C A B C …) with medians, quartiles and host-sync counts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Per-call wall times of one arm, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def q1_ms(self) -> float:
        return statistics.quantiles(self.samples_ms, n=4)[0]

    @property
    def q3_ms(self) -> float:
        return statistics.quantiles(self.samples_ms, n=4)[2]

    def ratio(self, baseline: Timing) -> float:
        """This arm's median over the baseline's median, both measured in the same run."""
        return self.median_ms / baseline.median_ms

    def samples_us(self, digits: int = 4) -> list[float]:
        """The raw samples in microseconds, rounded to ``digits`` significant digits (compact
        enough to keep every sample in a result file)."""
        return [float(f"{v * 1e3:.{digits}g}") for v in self.samples_ms]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_timing(
    arms: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 10,
    iters: int = 50,
    device: torch.device | None = None,
) -> dict[str, Timing]:
    """Time each arm ``iters`` times after ``warmup`` discarded calls, interleaving arms in rounds.

    Interleaving spreads slow drifts of the machine (frequency, other load) evenly over the arms,
    so ratios of medians measured in one call are meaningful.
    """
    if not arms:
        raise ValueError("arms must not be empty")
    if iters < 3:
        raise ValueError(f"iters must be >= 3, got {iters}")
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(iters):
        for name in names:
            _sync(device)
            t0 = time.perf_counter()
            arms[name]()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: Timing(tuple(v)) for name, v in samples.items()}


@contextmanager
def _counting_syncs() -> Iterator[list[int]]:
    count = [0]
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "tolist")}

    def wrap(name: str) -> Callable[..., object]:
        original = originals[name]

        def counted(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            count[0] += 1
            return original(self, *args, **kwargs)

        return counted

    try:
        for name in originals:
            setattr(torch.Tensor, name, wrap(name))
        yield count
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def count_aten_ops(fn: Callable[[], object]) -> int:
    """Run ``fn`` once and count the ATen operators it dispatches (each is at least one kernel
    launch in eager mode; views and metadata-only operators are counted too)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):  # type: ignore[no-untyped-call]
        n = 0

        def __torch_dispatch__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            _Count.n += 1
            return func(*args, **(kwargs or {}))

    with _Count():  # type: ignore[no-untyped-call]
        fn()
    return _Count.n


def count_host_syncs(fn: Callable[[], object]) -> int:
    """Run ``fn`` once and count calls of ``Tensor.item``, ``__bool__`` and ``tolist``."""
    with _counting_syncs() as count:
        fn()
    return count[0]
