"""Tests of athena.continual_metrics.ContinualMetrics on a hand-made 3×3 accuracy matrix."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from athena.continual_metrics import ContinualMetrics

# a[t][i]: accuracy on task i after training through task t
#            task 0 task 1 task 2
_A = [
    [0.90, 0.99, 0.30],  # after task 0 (a[0][1] = 0.99 is measured before task 1 is learned)
    [0.95, 0.80, 0.10],  # after task 1
    [0.60, 0.55, 0.85],  # after task 2
]
_BASELINE = [0.5, 0.4, 0.1]  # untrained model on each task


def _filled() -> ContinualMetrics:
    metrics = ContinualMetrics(3)
    for t, row in enumerate(_A):
        for i, acc in enumerate(row):
            metrics.update(t, i, acc)
    return metrics


def test_metrics_on_a_hand_made_matrix() -> None:
    m = _filled()
    # A_2 = (0.60 + 0.55 + 0.85) / 3 = 2.00 / 3 = 0.666...
    assert math.isclose(m.average_accuracy(), 2.0 / 3.0)
    # forgetting: task 0: max(a00, a10) - a20 = max(0.90, 0.95) - 0.60 = 0.35
    #             task 1: max(a11) - a21 = 0.80 - 0.55 = 0.25 (a01 = 0.99 is before training task 1
    #             and does not count; counting it would give 0.44 and F = 0.395)
    #             F = (0.35 + 0.25) / 2 = 0.30
    assert math.isclose(m.forgetting(), 0.30)
    # BWT = ((a20 - a00) + (a21 - a11)) / 2 = ((0.60 - 0.90) + (0.55 - 0.80)) / 2
    #     = (-0.30 - 0.25) / 2 = -0.275
    assert math.isclose(m.bwt(), -0.275)
    # FWT = ((a01 - b1) + (a12 - b2)) / 2 = ((0.99 - 0.40) + (0.10 - 0.10)) / 2 = 0.59 / 2 = 0.295
    assert math.isclose(m.fwt(_BASELINE), 0.295)
    assert math.isclose(m.fwt(torch.tensor(_BASELINE, dtype=torch.float64)), 0.295)


def test_metrics_read_at_an_intermediate_task() -> None:
    m = _filled()
    # through task 1: A_1 = (0.95 + 0.80) / 2 = 0.875
    assert math.isclose(m.average_accuracy(through=1), 0.875)
    # BWT_1 = a10 - a00 = 0.95 - 0.90 = 0.05; forgetting_1 = max(a00) - a10 = -0.05
    assert math.isclose(m.bwt(through=1), 0.05)
    assert math.isclose(m.forgetting(through=1), -0.05)
    # FWT_1 = a01 - b1 = 0.99 - 0.40 = 0.59
    assert math.isclose(m.fwt(_BASELINE, through=1), 0.59)
    # A_0 = a00
    assert math.isclose(m.average_accuracy(through=0), 0.90)


def test_accuracy_matrix_and_to_dict() -> None:
    m = ContinualMetrics(3)
    m.update(0, 0, 0.9)
    m.update(1, 2, torch.tensor(0.25))
    matrix = m.accuracy_matrix()
    assert matrix.shape == (3, 3)
    assert matrix.dtype == torch.float64
    assert int(torch.isnan(matrix).sum()) == 7
    assert matrix[0, 0].item() == 0.9
    assert matrix[1, 2].item() == 0.25
    matrix[0, 0] = 0.0  # a copy
    assert m.accuracy_matrix()[0, 0].item() == 0.9
    partial = m.to_dict(baseline=_BASELINE)
    assert partial["accuracy_matrix"][0] == [0.9, None, None]
    assert partial["average_accuracy"] is None
    assert partial["forgetting"] is None
    assert partial["bwt"] is None
    assert partial["fwt"] is None
    json.dumps(partial)

    full = _filled().to_dict(baseline=_BASELINE)
    assert full["num_tasks"] == 3
    assert full["accuracy_matrix"] == _A
    assert math.isclose(full["average_accuracy"], 2.0 / 3.0)
    assert math.isclose(full["forgetting"], 0.30)
    assert math.isclose(full["bwt"], -0.275)
    assert math.isclose(full["fwt"], 0.295)
    assert "fwt" not in _filled().to_dict()
    json.dumps(full)


def test_update_overwrites_and_state_round_trip() -> None:
    m = _filled()
    m.update(2, 0, 0.70)  # A_2 = (0.70 + 0.55 + 0.85) / 3 = 0.70
    assert math.isclose(m.average_accuracy(), 0.70)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    other = ContinualMetrics(3)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(other.accuracy_matrix(), m.accuracy_matrix(), equal_nan=True)
    assert math.isclose(other.average_accuracy(), 0.70)
    with pytest.raises(ValueError, match="num_tasks=3, this object has 4"):
        ContinualMetrics(4).load_state_dict(m.state_dict())


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="num_tasks must be >= 1, got 0"):
        ContinualMetrics(0)
    m = ContinualMetrics(3)
    with pytest.raises(ValueError, match=r"trained_through must be in \[0, 3\), got 3"):
        m.update(3, 0, 0.5)
    with pytest.raises(ValueError, match=r"task must be in \[0, 3\), got -1"):
        m.update(0, -1, 0.5)
    with pytest.raises(ValueError, match="finite"):
        m.update(0, 0, math.nan)
    with pytest.raises(TypeError, match="trained_through"):
        m.update(0.0, 0, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"through must be in \[0, 3\), got 5"):
        m.average_accuracy(through=5)

    m = _filled()
    m._acc[2, 1] = math.nan  # unfill one entry
    with pytest.raises(ValueError, match=r"average_accuracy needs the unfilled entries a\[2, 1\]"):
        m.average_accuracy()
    with pytest.raises(ValueError, match=r"bwt needs the unfilled entries a\[2, 1\]"):
        m.bwt()
    with pytest.raises(ValueError, match=r"forgetting needs the unfilled entries a\[2, 1\]"):
        m.forgetting()
    m = _filled()
    m._acc[1, 1] = math.nan
    with pytest.raises(ValueError, match=r"bwt needs the unfilled entries a\[1, 1\]"):
        m.bwt()
    with pytest.raises(ValueError, match=r"forgetting needs at least one of .*a\[1, 1\]"):
        m.forgetting()
    m = _filled()
    m._acc[0, 0] = math.nan
    # task 0 still has a[1, 0] for its maximum: F = ((0.95 - 0.60) + (0.80 - 0.55)) / 2 = 0.30
    assert math.isclose(m.forgetting(), 0.30)
    m._acc[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"fwt needs the unfilled entries a\[1, 2\]"):
        m.fwt(_BASELINE)
    with pytest.raises(ValueError, match="baseline must have num_tasks=3 entries, got 2"):
        m.fwt([0.1, 0.2])
    with pytest.raises(ValueError, match="at least two tasks"):
        ContinualMetrics(1).bwt()
    with pytest.raises(ValueError, match="at least two tasks"):
        _filled().forgetting(through=0)
