"""Shape factors: the learning-rate multiplier of an AuON or Muon update for a parameter shape.

``(rows, cols) = adaptnn_core.matrix_shape(shape)`` (a ≥ 2-D tensor viewed as ``(shape[0], -1)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from adaptnn_core import matrix_shape

_Rule = Callable[[int, int], float]


def _original(rows: int, cols: int) -> float:
    return math.sqrt(max(1.0, rows / cols))


# A unit-Frobenius AuON update: "match_muon" gives it a Muon update's Frobenius norm,
# "match_rms_adamw" an update RMS of 0.2.
_AUON_RULES: Mapping[str | None, _Rule] = {
    None: _original,
    "original": _original,
    "unit": lambda rows, cols: 1.0,
    "match_muon": lambda rows, cols: math.sqrt(min(rows, cols)) * _original(rows, cols),
    "match_rms_adamw": lambda rows, cols: 0.2 * math.sqrt(rows * cols),
}
# An orthogonalised update, as torch.optim.Muon.
_MUON_RULES: Mapping[str | None, _Rule] = {
    None: _original,
    "original": _original,
    "unit": lambda rows, cols: 1.0,
    "match_rms_adamw": lambda rows, cols: 0.2 * math.sqrt(max(rows, cols)),
}


def _scale(
    shape: Sequence[int], adjust_lr_fn: str | None, rules: Mapping[str | None, _Rule]
) -> float:
    if adjust_lr_fn not in rules:
        raise ValueError(f"adjust_lr_fn must be one of {list(rules)!r}, got {adjust_lr_fn!r}")
    rows, cols = matrix_shape(list(shape))
    return rules[adjust_lr_fn](rows, cols)


def _auon_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """Learning-rate multiplier of a unit-Frobenius AuON update for a parameter of ``shape``.

    None/"original": ``sqrt(max(1, rows/cols))``; "unit": 1; "match_muon": ``sqrt(min(rows, cols))
    · sqrt(max(1, rows/cols))`` (the Frobenius norm of a Muon update); "match_rms_adamw":
    ``0.2·sqrt(rows·cols)`` (update RMS 0.2).
    """
    return _scale(shape, adjust_lr_fn, _AUON_RULES)


def _muon_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """Learning-rate multiplier of an orthogonalised (Muon-like) update, as ``torch.optim.Muon``.

    None/"original": ``sqrt(max(1, rows/cols))``; "unit": 1; "match_rms_adamw":
    ``0.2·sqrt(max(rows, cols))``.
    """
    return _scale(shape, adjust_lr_fn, _MUON_RULES)
