"""Continual-learning metrics computed from an accuracy matrix.

`ContinualMetrics` collects ``a[t, i]``, the accuracy on task ``i`` after training through task
``t`` (both 0-based, ``T`` tasks), and derives the usual summary numbers. With ``t`` the task the
metric is read at (by default the last one, ``T - 1``):

* average accuracy ``A_t = mean_{i <= t} a[t, i]`` (``ACC`` of Lopez-Paz & Ranzato, "Gradient
  Episodic Memory for Continual Learning", NeurIPS 2017, section 2);
* backward transfer ``BWT_t = mean_{i < t} (a[t, i] - a[i, i])`` (same paper; negative values
  are forgetting);
* forward transfer ``FWT_t = mean_{0 < i <= t} (a[i - 1, i] - b_i)``, ``b_i`` the accuracy of the
  untrained (randomly initialised) model on task ``i`` (same paper);
* forgetting ``F_t = mean_{i < t} (max_{i <= l < t} a[l, i] - a[t, i])`` (Chaudhry et al.,
  "Riemannian Walk for Incremental Learning", ECCV 2018, the forgetting measure); the maximum
  runs over the filled entries with ``i <= l < t`` (a task cannot be forgotten before it is
  learned).

Usage::

    metrics = ContinualMetrics(num_tasks=3)
    for t, task in enumerate(tasks):
        train(task)
        for i, other in enumerate(tasks):
            metrics.update(t, i, evaluate(other))
    print(metrics.to_dict(baseline=untrained_accuracies))

Accuracies may be fractions or percentages; the metrics come out in the same unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["ContinualMetrics"]


def _index(name: str, value: object, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in [0, {size}), got {value}")
    return value


class ContinualMetrics:
    """Accuracy matrix of a sequence of tasks and the metrics derived from it.

    Args:
        num_tasks: Number of tasks ``T`` (>= 1).

    Raises:
        ValueError: For ``num_tasks < 1``.
    """

    def __init__(self, num_tasks: int) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int):
            raise TypeError(f"num_tasks must be an int, got {num_tasks!r}")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = num_tasks
        self._acc = torch.full((num_tasks, num_tasks), math.nan, dtype=torch.float64)

    def update(self, trained_through: int, task: int, acc: float | Tensor) -> None:
        """Record ``a[trained_through, task]`` (overwrites an earlier value).

        Args:
            trained_through: Last task trained on, 0-based.
            task: Task evaluated, 0-based (may exceed ``trained_through``: needed by `fwt`).
            acc: The accuracy, a finite number (or a one-element tensor).

        Raises:
            ValueError: For an index outside ``[0, num_tasks)`` or a non-finite accuracy.
        """
        t = _index("trained_through", trained_through, self.num_tasks)
        i = _index("task", task, self.num_tasks)
        if isinstance(acc, Tensor):
            if acc.numel() != 1:
                raise ValueError(f"acc must be a number, got a tensor of shape {tuple(acc.shape)}")
            value = float(acc.detach().reshape(()).item())
        elif isinstance(acc, bool) or not isinstance(acc, int | float):
            raise TypeError(f"acc must be a number, got {acc!r} ({type(acc).__name__})")
        else:
            value = float(acc)
        if not math.isfinite(value):
            raise ValueError(f"acc must be finite, got {value} for a[{t}, {i}]")
        self._acc[t, i] = value

    def accuracy_matrix(self) -> Tensor:
        """A copy of the ``(T, T)`` float64 matrix ``a[t, i]``, NaN where not filled."""
        return self._acc.clone()

    # ------------------------------------------------------------------ helpers

    def _through(self, through: int | None) -> int:
        if through is None:
            return self.num_tasks - 1
        return _index("through", through, self.num_tasks)

    def _get(self, metric: str, entries: Sequence[tuple[int, int]]) -> list[float]:
        values = [float(self._acc[t, i]) for t, i in entries]
        missing = [
            f"a[{t}, {i}]" for (t, i), v in zip(entries, values, strict=True) if math.isnan(v)
        ]
        if missing:
            raise ValueError(f"{metric} needs the unfilled entries {', '.join(missing)}")
        return values

    @staticmethod
    def _need_two(metric: str, t: int) -> None:
        if t < 1:
            raise ValueError(
                f"{metric} needs at least two tasks trained (through >= 1), got through={t}"
            )

    # ------------------------------------------------------------------ metrics

    def average_accuracy(self, through: int | None = None) -> float:
        """``A_t = mean_{i <= t} a[t, i]`` (GEM's ACC when ``t = T - 1``).

        Args:
            through: The task ``t`` the metric is read at; the last task by default.

        Raises:
            ValueError: When one of the needed entries is unfilled (it is named).
        """
        t = self._through(through)
        values = self._get("average_accuracy", [(t, i) for i in range(t + 1)])
        return sum(values) / len(values)

    def bwt(self, through: int | None = None) -> float:
        """Backward transfer ``mean_{i < t} (a[t, i] - a[i, i])`` (Lopez-Paz & Ranzato, 2017).

        Args:
            through: The task ``t`` the metric is read at (>= 1); the last task by default.

        Raises:
            ValueError: For ``t < 1`` or when a needed entry is unfilled (it is named).
        """
        t = self._through(through)
        self._need_two("bwt", t)
        final = self._get("bwt", [(t, i) for i in range(t)])
        diagonal = self._get("bwt", [(i, i) for i in range(t)])
        return sum(f - d for f, d in zip(final, diagonal, strict=True)) / t

    def forgetting(self, through: int | None = None) -> float:
        """Forgetting ``mean_{i < t} (max_{i <= l < t} a[l, i] - a[t, i])`` (Chaudhry et al., 2018).

        The maximum runs over the filled entries ``a[l, i]``, ``i <= l < t``; at least one must be
        filled for every ``i < t``.

        Args:
            through: The task ``t`` the metric is read at (>= 1); the last task by default.

        Raises:
            ValueError: For ``t < 1`` or when a needed entry is unfilled (it is named).
        """
        t = self._through(through)
        self._need_two("forgetting", t)
        final = self._get("forgetting", [(t, i) for i in range(t)])
        total = 0.0
        for i in range(t):
            past = [float(v) for v in self._acc[i:t, i].tolist() if not math.isnan(v)]
            if not past:
                wanted = " or ".join(f"a[{row}, {i}]" for row in range(i, t))
                raise ValueError(f"forgetting needs at least one of the unfilled entries {wanted}")
            total += max(past) - final[i]
        return total / t

    def fwt(self, baseline: Sequence[float] | Tensor, through: int | None = None) -> float:
        """Forward transfer ``mean_{0 < i <= t} (a[i - 1, i] - b_i)`` (Lopez-Paz & Ranzato, 2017).

        Args:
            baseline: ``b_i``, the accuracy of the untrained (randomly initialised) model on each
                task, ``num_tasks`` numbers (``b_0`` is not used).
            through: The task ``t`` the metric is read at (>= 1); the last task by default.

        Raises:
            ValueError: For a baseline of the wrong length or with non-finite values, ``t < 1``,
                or when a needed entry is unfilled (it is named).
        """
        base = self._baseline(baseline)
        t = self._through(through)
        self._need_two("fwt", t)
        before = self._get("fwt", [(i - 1, i) for i in range(1, t + 1)])
        return sum(a - base[i] for a, i in zip(before, range(1, t + 1), strict=True)) / t

    def _baseline(self, baseline: Sequence[float] | Tensor) -> list[float]:
        if isinstance(baseline, Tensor):
            values = [float(v) for v in baseline.detach().reshape(-1).tolist()]
        else:
            values = [float(v) for v in baseline]
        if len(values) != self.num_tasks:
            raise ValueError(
                f"baseline must have num_tasks={self.num_tasks} entries, got {len(values)}"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"baseline must be finite, got {values}")
        return values

    def to_dict(self, baseline: Sequence[float] | Tensor | None = None) -> dict[str, Any]:
        """The matrix and the final metrics as JSON-friendly plain values.

        Args:
            baseline: Untrained accuracies for ``fwt``; the key is left out when ``None``.

        Returns:
            ``num_tasks``, ``accuracy_matrix`` (nested lists, ``None`` for unfilled entries) and
            ``average_accuracy``, ``forgetting``, ``bwt`` (and ``fwt``) read at the last task,
            each ``None`` when it cannot be computed yet (unfilled entries, or a single task).
        """
        out: dict[str, Any] = {
            "num_tasks": self.num_tasks,
            "accuracy_matrix": [
                [None if math.isnan(v) else v for v in row] for row in self._acc.tolist()
            ],
        }
        metrics: dict[str, Any] = {
            "average_accuracy": self.average_accuracy,
            "forgetting": self.forgetting,
            "bwt": self.bwt,
        }
        if baseline is not None:
            base = self._baseline(baseline)
            metrics["fwt"] = lambda: self.fwt(base)
        for name, fn in metrics.items():
            try:
                out[name] = fn()
            except ValueError:
                out[name] = None
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """``{"num_tasks": T, "accuracy": (T, T) float64 tensor}`` (NaN for unfilled)."""
        return {"num_tasks": self.num_tasks, "accuracy": self._acc.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict` of a `ContinualMetrics` with the same ``num_tasks``.

        Raises:
            ValueError: For a different ``num_tasks`` or a malformed matrix.
        """
        if state.get("num_tasks") != self.num_tasks:
            raise ValueError(
                f"state has num_tasks={state.get('num_tasks')!r}, this object has {self.num_tasks}"
            )
        acc = state.get("accuracy")
        if not isinstance(acc, Tensor) or tuple(acc.shape) != (self.num_tasks, self.num_tasks):
            raise ValueError(
                f"state['accuracy'] must be a ({self.num_tasks}, {self.num_tasks}) tensor"
            )
        self._acc = acc.detach().to("cpu", torch.float64).clone()
