"""The ``nonfinite="skip"`` bookkeeping: keep old values, zero bad tensors, count skipped steps.

All of it works on 0-D device flags (``torch.where``/``masked_fill_``), with no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _keep_finite_(old: list[Tensor], new: list[Tensor], finite: Sequence[Tensor]) -> None:
    """``old_i ← new_i`` where ``finite_i`` (0-D bool), else unchanged; no host sync."""
    for o, n, f in zip(old, new, finite, strict=True):
        torch.where(f, n, o, out=o)


def _zero_nonfinite_(xs: list[Tensor], finite: Sequence[Tensor]) -> None:
    """Zero every tensor whose flag is False, so that ``0·x`` below stays finite."""
    for x, f in zip(xs, finite, strict=True):
        x.masked_fill_(f.logical_not(), 0.0)


def _count_nonfinite_(counters: Sequence[Tensor] | None, finite: Tensor) -> None:
    """Add 1 to ``counters[i]`` (int64 0-D) where the 1-D bool ``finite[i]`` is False."""
    if counters is None:
        return
    bad = finite.logical_not().to(torch.int64)
    for c, b in zip(counters, bad.unbind(0), strict=True):
        c.add_(b)
