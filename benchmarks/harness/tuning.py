"""Learning-rate selection shared by the benchmarks: a ×``factor`` grid on a selection seed,
extended on the side of an edge optimum until the optimum is interior (DESIGN.md's protocol).

A run record must carry ``val_loss`` (lower is better), ``val_bpb`` (printed) and ``crashed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def score(record: dict[str, Any]) -> float:
    """Selection key: validation loss; a crashed or non-finite run ranks last."""
    v = float(record["val_loss"])
    return v if math.isfinite(v) and not record["crashed"] else math.inf


def select_lr(
    run: Callable[[float], dict[str, Any]],
    centre: float,
    *,
    factor: float = 3.0,
    points: int = 3,
    max_extend: int = 3,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run a ``points``-point grid ``centre·factor^k`` (k centred on 0) and extend it by one point
    on the side of an edge optimum until the optimum is interior (at most ``max_extend`` times).

    Args:
        run: trains one model at the given lr on the selection seed and returns its record.

    Returns:
        The grid records sorted by lr and a summary (grid, extensions, selected lr, interior).
    """
    by_k: dict[int, dict[str, Any]] = {}

    def visit(k: int) -> None:
        lr = centre * factor**k
        record = run(lr)
        record.update(phase="tune", lr_exponent=k)
        by_k[k] = record
        log(f"  lr {lr:.4g}: val {record['val_bpb']:.4f} bits/byte")

    first = [k - (points - 1) // 2 for k in range(points)]
    for k in first:
        visit(k)
    extensions: list[float] = []

    def best() -> int:
        return min(by_k, key=lambda k: (score(by_k[k]), k))

    while len(extensions) < max_extend and len(by_k) >= 3:
        k, ks = best(), sorted(by_k)
        if ks[0] < k < ks[-1] or not math.isfinite(score(by_k[k])):
            break
        new = ks[0] - 1 if k == ks[0] else ks[-1] + 1
        extensions.append(centre * factor**new)
        visit(new)
    ks, k = sorted(by_k), best()
    summary = {
        "centre_lr": centre,
        "factor": factor,
        "grid_lrs": [centre * factor**j for j in ks],
        "grid_val_bpb": [by_k[j]["val_bpb"] for j in ks],
        "initial_grid_lrs": [centre * factor**j for j in first],
        "extensions": extensions,
        "selected_lr": centre * factor**k,
        "interior": (ks[0] < k < ks[-1]) if len(ks) >= 3 else None,
    }
    return [by_k[j] for j in ks], summary


def fixed_lr(lr: float) -> dict[str, Any]:
    """The selection summary of a run without an lr grid (``--quick`` / ``--lr``)."""
    return {
        "centre_lr": lr,
        "grid_lrs": [lr],
        "grid_val_bpb": [],
        "initial_grid_lrs": [lr],
        "extensions": [],
        "selected_lr": lr,
        "interior": None,
    }
