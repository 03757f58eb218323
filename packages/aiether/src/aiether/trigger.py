"""``GrowthTrigger``: when to add a block.

Conditions, checked at each evaluation:

- *geometric*: the frontier's numel-weighted window-normalised statistics reach the thresholds,
  ``τ̃ ≥ tau_crit`` and ``κ̃ ≥ kappa_crit`` (≈ 1 means "moving like noise": no net direction
  left to follow), with at least 3 snapshots;
- *plateau*: the relative validation-loss improvement over the last ``plateau_window``
  evaluations is below ``plateau_threshold``.

Modes: ``"geometric+plateau"`` (both), ``"geometric"``, ``"plateau"``, each held for ``patience``
consecutive evaluations; ``"schedule"`` (grow at the given steps; call every step; a scheduled
growth is not held back by an isolated warm-up, it ends it);
``"reference"`` (the original rule: raw, unweighted τ ≥ tau_crit and κ ≥ kappa_crit with both
thresholds 0 by default, i.e. a growth every ``patience`` evaluations). No growth before
``min_step``, during an isolated warm-up, within ``cooldown_steps`` of the last growth or at full
depth. Under torch.distributed the decision of rank 0 is broadcast (one int tensor), so every
rank grows at the same step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch.distributed import ProcessGroup

from adaptnn_core.dist import broadcast_, is_initialized
from aiether.trajectory import TrajectoryMetrics

TriggerMode = Literal["geometric+plateau", "geometric", "plateau", "schedule", "reference"]
TRIGGER_MODES: tuple[str, ...] = (
    "geometric+plateau",
    "geometric",
    "plateau",
    "schedule",
    "reference",
)


class GrowthTrigger:
    """Decides, step by step, whether the controller grows.

    Args:
        mode: see the module docstring.
        tau_crit: threshold on the normalised τ̃ (raw τ in ``"reference"`` mode, where ``None``
            means 0); ``None`` elsewhere means 0.8.
        kappa_crit: threshold on the normalised κ̃ (raw κ in ``"reference"`` mode, where
            ``None`` means 0); ``None`` elsewhere means 0.8.
        patience: consecutive evaluations the condition must hold.
        plateau_threshold: relative improvement below which the loss has plateaued.
        plateau_window: evaluations the improvement is measured over.
        min_step: no growth before this step.
        cooldown_steps: no growth within this many steps of the previous one.
        schedule: growth steps for ``mode="schedule"``.
        max_layers: never grow past this depth (default: the stack's size).
        process_group: the group the rank-0 decision is broadcast in (``None``: the default).
        device: the device of the broadcast tensor (a CUDA ``device`` for NCCL).

    Raises:
        ValueError: an unknown mode, a negative threshold, ``patience < 1``,
            ``plateau_window < 1``, negative steps, or ``mode="schedule"`` without a schedule.
    """

    def __init__(
        self,
        mode: TriggerMode = "geometric+plateau",
        tau_crit: float | None = None,
        kappa_crit: float | None = None,
        patience: int = 3,
        plateau_threshold: float = 0.01,
        plateau_window: int = 3,
        min_step: int = 0,
        cooldown_steps: int = 0,
        schedule: Iterable[int] = (),
        max_layers: int | None = None,
        *,
        process_group: ProcessGroup | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if mode not in TRIGGER_MODES:
            raise ValueError(f"mode must be one of {TRIGGER_MODES}, got {mode!r}")
        default = 0.0 if mode == "reference" else 0.8
        self.tau_crit = default if tau_crit is None else float(tau_crit)
        self.kappa_crit = default if kappa_crit is None else float(kappa_crit)
        for name in ("tau_crit", "kappa_crit", "plateau_threshold"):
            value = self.tau_crit if name == "tau_crit" else self.kappa_crit
            value = float(plateau_threshold) if name == "plateau_threshold" else value
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name, ivalue, low in (
            ("patience", patience, 1),
            ("plateau_window", plateau_window, 1),
            ("min_step", min_step, 0),
            ("cooldown_steps", cooldown_steps, 0),
        ):
            if isinstance(ivalue, bool) or not isinstance(ivalue, int) or ivalue < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {ivalue!r}")
        steps = sorted(int(s) for s in schedule)
        if any(s < 0 for s in steps):
            raise ValueError(f"schedule steps must be >= 0, got {steps}")
        if mode == "schedule" and not steps:
            raise ValueError("mode='schedule' needs schedule=(step, …)")
        if max_layers is not None and (isinstance(max_layers, bool) or max_layers < 1):
            raise ValueError(f"max_layers must be a positive integer or None, got {max_layers!r}")
        self.mode: TriggerMode = mode
        self.patience = patience
        self.plateau_threshold = float(plateau_threshold)
        self.plateau_window = plateau_window
        self.min_step = min_step
        self.cooldown_steps = cooldown_steps
        self.schedule: tuple[int, ...] = tuple(steps)
        self.max_layers = max_layers
        self.process_group = process_group
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.counter = 0
        self.losses: list[float] = []
        self.last_growth: int | None = None
        self.schedule_done = 0

    # -- conditions --------------------------------------------------------------------------
    def geometric_condition(self, metrics: TrajectoryMetrics | None) -> bool:
        """τ̃ ≥ tau_crit and κ̃ ≥ kappa_crit (raw τ, κ in reference mode), ≥ 3 snapshots."""
        if metrics is None or metrics.num_velocities < 2:
            return False
        values = metrics.as_floats()
        if self.mode == "reference":
            return values["tau"] >= self.tau_crit and values["kappa"] >= self.kappa_crit
        return values["tau_norm"] >= self.tau_crit and values["kappa_norm"] >= self.kappa_crit

    def plateau_condition(self) -> bool:
        """Relative improvement over the last ``plateau_window`` evaluations < threshold."""
        if len(self.losses) <= self.plateau_window:
            return False
        old, new = self.losses[-1 - self.plateau_window], self.losses[-1]
        return (old - new) / max(abs(old), 1e-12) < self.plateau_threshold

    def blocked(self, step: int, num_active: int, max_layers: int, in_warmup: bool) -> bool:
        """Whether a growth is ruled out now, whatever the statistics say."""
        limit = min(max_layers, self.max_layers) if self.max_layers is not None else max_layers
        return (
            num_active >= limit
            or step < self.min_step
            or (in_warmup and self.mode != "schedule")
            or (self.last_growth is not None and step - self.last_growth < self.cooldown_steps)
        )

    # -- decisions ---------------------------------------------------------------------------
    def _local_decision(
        self,
        step: int,
        metrics: TrajectoryMetrics | None,
        val_loss: float | None,
        *,
        num_active: int,
        max_layers: int,
        in_warmup: bool,
    ) -> bool:
        blocked = self.blocked(step, num_active, max_layers, in_warmup)
        if self.mode == "schedule":
            due = (
                self.schedule_done < len(self.schedule)
                and step >= self.schedule[self.schedule_done]
            )
            return due and not blocked
        if val_loss is None:  # not an evaluation step
            return False
        self.losses.append(float(val_loss))
        if self.mode == "plateau":
            hit = self.plateau_condition()
        elif self.mode == "geometric+plateau":
            hit = self.geometric_condition(metrics) and self.plateau_condition()
        else:  # geometric, reference
            hit = self.geometric_condition(metrics)
        self.counter = self.counter + 1 if hit else 0
        return self.counter >= self.patience and not blocked

    def should_grow(
        self,
        step: int,
        metrics: TrajectoryMetrics | None = None,
        val_loss: float | None = None,
        *,
        num_active: int,
        max_layers: int,
        in_warmup: bool = False,
    ) -> bool:
        """Update with this step's evidence and decide (rank 0's decision on every rank).

        Call it every step; pass ``val_loss`` (and the frontier's aggregate ``metrics``) on
        evaluation steps. A ``True`` answer is recorded as a growth at ``step``.
        """
        decision = self._local_decision(
            step,
            metrics,
            val_loss,
            num_active=num_active,
            max_layers=max_layers,
            in_warmup=in_warmup,
        )
        if is_initialized():
            flag = torch.tensor([int(decision)], dtype=torch.int64, device=self.device)
            broadcast_(flag, src=0, group=self.process_group)
            decision = bool(flag.item())
        if decision:
            self.record_growth(step)
        return decision

    def record_growth(self, step: int) -> None:
        """Reset the counters after a growth at ``step``."""
        self.last_growth = step
        self.counter = 0
        self.losses.clear()
        if self.mode == "schedule":
            while (
                self.schedule_done < len(self.schedule)
                and self.schedule[self.schedule_done] <= step
            ):
                self.schedule_done += 1

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (configuration and counters)."""
        return {
            "mode": self.mode,
            "tau_crit": self.tau_crit,
            "kappa_crit": self.kappa_crit,
            "patience": self.patience,
            "plateau_threshold": self.plateau_threshold,
            "plateau_window": self.plateau_window,
            "min_step": self.min_step,
            "cooldown_steps": self.cooldown_steps,
            "schedule": list(self.schedule),
            "max_layers": self.max_layers,
            "counter": self.counter,
            "losses": list(self.losses),
            "last_growth": self.last_growth,
            "schedule_done": self.schedule_done,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters of :meth:`state_dict`.

        Raises:
            ValueError: the saved mode or schedule differs from this trigger's.
        """
        if state["mode"] != self.mode or list(state["schedule"]) != list(self.schedule):
            raise ValueError(
                f"trigger state is for mode={state['mode']!r} schedule={state['schedule']}, "
                f"this trigger has mode={self.mode!r} schedule={list(self.schedule)}"
            )
        self.counter = int(state["counter"])
        self.losses = [float(v) for v in state["losses"]]
        self.last_growth = None if state["last_growth"] is None else int(state["last_growth"])
        self.schedule_done = int(state["schedule_done"])
