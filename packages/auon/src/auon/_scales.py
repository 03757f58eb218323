"""Shape factors: the learning-rate multiplier of an AuON or Muon update for a parameter shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

from adaptnn_core import matrix_shape
from auon._validation import _ADJUST_LR_FNS


def _auon_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """Learning-rate multiplier of a unit-Frobenius AuON update for a parameter of ``shape``.

    None/"original": ``sqrt(max(1, rows/cols))``; "unit": 1; "match_muon": ``sqrt(min(rows, cols))
    · sqrt(max(1, rows/cols))`` (the Frobenius norm of a Muon update); "match_rms_adamw":
    ``0.2·sqrt(rows·cols)`` (update RMS 0.2). ``(rows, cols) = adaptnn_core.matrix_shape``.
    """
    rows, cols = matrix_shape(list(shape))
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "unit":
        return 1.0
    if adjust_lr_fn == "match_muon":
        return math.sqrt(min(rows, cols)) * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(rows * cols)
    raise ValueError(f"adjust_lr_fn must be one of {list(_ADJUST_LR_FNS)!r}, got {adjust_lr_fn!r}")


def _muon_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """Learning-rate multiplier of an orthogonalised (Muon-like) update, as ``torch.optim.Muon``.

    None/"original": ``sqrt(max(1, rows/cols))``; "unit": 1; "match_rms_adamw":
    ``0.2·sqrt(max(rows, cols))``.
    """
    rows, cols = matrix_shape(list(shape))
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "unit":
        return 1.0
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(
        f"adjust_lr_fn must be one of [None, 'original', 'unit', 'match_rms_adamw'], got {adjust_lr_fn!r}"
    )
