"""``GrowthController``: grows a model during training and keeps the optimiser and schedule honest.

Call ``controller.step(global_step, val_loss=None)`` after every ``optimizer.step()`` (pass the
validation loss on evaluation steps), then ``scheduler.step()``. On each call it records
trajectory snapshots of the frontier block, advances ramp gates, ends an isolated warm-up when
it is due, and asks the :class:`~aiether.trigger.GrowthTrigger`. A growth:

1. evaluates the probe batch (``probe_loss_before``);
2. initialises the next slot from its source block with the operator (copy, random, geometric,
   reference), then applies the stack's preservation rule and activates the slot;
3. gives the new parameters optimiser state from the source's (``state_transfer``);
4. starts an isolated warm-up: the groups of the previously active blocks run at
   ``lr_mult = isolated_lr_mult`` for ``isolated_warmup_steps`` (0 freezes them, as the
   original did, but without touching ``requires_grad``, which would break DDP);
5. re-warms the learning rate from ``rewarm_from`` to 1 over ``rewarm_steps`` steps
   (through :class:`~aiether.schedule.GrowthAwareLR`; the schedule's horizon is unchanged);
6. evaluates the probe again (``probe_loss_after``), retargets the tracker to the next source,
   records a :class:`~aiether.events.GrowthEvent` and, with a
   :class:`~aiether.layer_states.LayerStateManager`, saves the source and the new block.

Learning rates are written by a :class:`~aiether.schedule.GrowthAwareLR` attached to the
controller; without one the controller writes ``lr = initial_lr · rewarm · lr_mult`` itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from aiether.adapters import StackAdapter, for_model, record_active
from aiether.events import GrowthEvent
from aiether.layer_states import LayerStateManager
from aiether.operators import OPERATORS, GeometricParams, OperatorName, initialise_block
from aiether.stack import GrowableStack, Preserve
from aiether.state_transfer import STATE_TRANSFER_MODES, StateTransfer, transfer_state
from aiether.trajectory import TrajectoryMetrics, TrajectoryTracker
from aiether.trigger import GrowthTrigger

ProbeFn = Callable[[nn.Module], Tensor | float]


class GrowthController:
    """Grows ``model``'s :class:`~aiether.stack.GrowableStack` during training.

    Args:
        model: a model whose block list is a ``GrowableStack`` (see
            :func:`aiether.adapters.make_growable`).
        optimizer: its optimiser, built over every parameter (ideally from
            :func:`aiether.param_groups`, whose groups know their block).
        tracker: trajectory snapshots; retargeted to the frontier block here and after each
            growth. ``None`` creates a default one (window 15, every 100 steps) when the operator
            or the trigger needs statistics.
        trigger: when to grow.
        operator: how to initialise the new block (:mod:`aiether.operators`).
        preserve: must equal the stack's rule if given (it is fixed when the stack is built).
        isolated_warmup_steps: how many steps after a growth the old blocks run at
            ``isolated_lr_mult``.
        isolated_lr_mult: the old blocks' lr multiplier during that warm-up (0 freezes them).
        rewarm_steps: length of the learning-rate re-warm after a growth.
        rewarm_from: the lr factor the re-warm starts from (it rises linearly to 1).
        state_transfer: ``"none"``, ``"second_moment"`` or ``"full"``.
        layer_states: where to save the source and new block at each growth (optional).
        params: gains of the trajectory operators (defaults per operator).
        probe: ``probe(model) -> loss`` on a fixed batch, evaluated in eval mode without
            gradients just before and after each insertion (optional).
        adapter: where the blocks are (default: :func:`aiether.adapters.for_model`).

    Raises:
        ValueError: bad arguments (unknown operator or transfer mode, negative steps, a
            ``preserve`` different from the stack's, a model without a growable stack).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        tracker: TrajectoryTracker | None = None,
        trigger: GrowthTrigger,
        operator: OperatorName = "geometric",
        preserve: Preserve | None = None,
        isolated_warmup_steps: int = 400,
        isolated_lr_mult: float = 0.1,
        rewarm_steps: int = 200,
        rewarm_from: float = 0.1,
        state_transfer: StateTransfer = "second_moment",
        layer_states: LayerStateManager | None = None,
        params: GeometricParams | None = None,
        probe: ProbeFn | None = None,
        adapter: StackAdapter | None = None,
    ) -> None:
        self.adapter = adapter or for_model(model)
        stack = self.adapter.blocks(model)
        if not isinstance(stack, GrowableStack):
            raise ValueError(
                f"{self.adapter.path!r} is not a GrowableStack; call aiether.make_growable(model) first"
            )
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
        if preserve is not None and preserve != stack.preserve:
            raise ValueError(
                f"preserve={preserve!r} but the stack was built with preserve={stack.preserve!r}"
            )
        if state_transfer not in STATE_TRANSFER_MODES:
            raise ValueError(
                f"state_transfer must be one of {STATE_TRANSFER_MODES}, got {state_transfer!r}"
            )
        for name, value in (
            ("isolated_warmup_steps", isolated_warmup_steps),
            ("rewarm_steps", rewarm_steps),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name, fvalue in (("isolated_lr_mult", isolated_lr_mult), ("rewarm_from", rewarm_from)):
            if not 0.0 <= fvalue <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {fvalue!r}")
        self.model = model
        self.optimizer = optimizer
        self.stack = stack
        self.trigger = trigger
        self.operator: OperatorName = operator
        self.isolated_warmup_steps = isolated_warmup_steps
        self.isolated_lr_mult = float(isolated_lr_mult)
        self.rewarm_steps = rewarm_steps
        self.rewarm_from = float(rewarm_from)
        self.state_transfer: StateTransfer = state_transfer
        self.layer_states = layer_states
        self.params = params
        self.probe = probe
        needs_tracker = operator in ("geometric", "reference") or trigger.mode not in (
            "schedule",
            "plateau",
        )
        if tracker is None and needs_tracker:
            tracker = TrajectoryTracker(self._source_params())
        self.tracker = tracker
        if tracker is not None:
            tracker.retarget(self._source_params())
        self.events: list[GrowthEvent] = []
        self.warmup_until: int | None = None
        self.last_snapshot_step: int | None = None
        self.scheduler: Any = None
        for group in optimizer.param_groups:
            group.setdefault("lr_mult", 1.0)
            group.setdefault("initial_lr", group["lr"])

    # -- wiring ------------------------------------------------------------------------------
    def attach_scheduler(self, scheduler: Any) -> None:
        """Let ``scheduler`` (a :class:`~aiether.schedule.GrowthAwareLR`) write the lrs."""
        self.scheduler = scheduler
        if getattr(scheduler, "controller", None) is not self:
            scheduler.attach(self)

    def _source_block(self) -> nn.Module | None:
        if self.stack.is_full:
            return None
        block: nn.Module = self.stack[self.stack.source_slot(self.stack.next_slot())]
        return block

    def _source_params(self) -> list[tuple[str, Tensor]]:
        block = self._source_block() or self.stack[self.stack.active_slots[0]]
        return list(block.named_parameters())

    # -- learning rate -----------------------------------------------------------------------
    def rewarm_factor(self, step: int) -> float:
        """The re-warm multiplier at ``step``: ``rewarm_from`` on the first step after a growth,
        rising linearly to 1 over ``rewarm_steps`` steps; 1 without growth."""
        if not self.events or self.rewarm_steps == 0:
            return 1.0
        since = max(step - self.events[-1].step - 1, 0)
        if since >= self.rewarm_steps:
            return 1.0
        return self.rewarm_from + (1.0 - self.rewarm_from) * since / self.rewarm_steps

    def in_warmup(self, step: int) -> bool:
        """Whether the step after ``step`` still runs in the isolated warm-up of the last growth
        (``warmup_until`` is the first step at full learning rate)."""
        return self.warmup_until is not None and step + 1 < self.warmup_until

    def _set_old_blocks_mult(self, mult: float, old: set[int]) -> None:
        for group in self.optimizer.param_groups:
            if group.get("block") in old:
                group["lr_mult"] = mult

    def _write_lrs(self, step: int) -> None:
        if self.scheduler is not None:
            return
        rewarm = self.rewarm_factor(step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * rewarm * group["lr_mult"]

    def _check_preserved(self, step: int, before: float | None, after: float | None) -> None:
        """Warn when a preserving insertion changed the probe loss: the adapter's
        ``out_proj_names`` then miss a sublayer that writes into the residual stream."""
        if self.stack.preserve == "none" or before is None or after is None:
            return
        if abs(after - before) <= 1e-6 * max(1.0, abs(before)):
            return
        warnings.warn(
            f"growth at step {step} changed the probe loss from {before!r} to {after!r} although "
            f"preserve={self.stack.preserve!r}: out_proj_names={self.stack.out_proj_names} "
            "probably miss a sublayer that writes into the residual stream; pass "
            "StackAdapter(path=..., out_proj_names=(...)) naming every one",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- the loop hook -----------------------------------------------------------------------
    def step(self, global_step: int, val_loss: float | None = None) -> GrowthEvent | None:
        """Call after ``optimizer.step()`` at ``global_step`` (0-based) and before
        ``scheduler.step()``: :meth:`observe`, then :meth:`decide`. Returns the growth event, if any."""
        self.observe(global_step)
        event = self.decide(global_step, val_loss)
        self._write_lrs(global_step)
        return event

    def observe(self, global_step: int) -> None:
        """The per-step bookkeeping: trajectory snapshot, ramp gates, end of the isolated warm-up."""
        if self.tracker is not None and self.tracker.maybe_snapshot(global_step):
            self.last_snapshot_step = global_step
        self.stack.advance()
        if self.warmup_until is not None and not self.in_warmup(global_step):
            self._set_old_blocks_mult(1.0, set(range(len(self.stack))))
            self.warmup_until = None
            self._refresh_scheduler()

    def decide(self, global_step: int, val_loss: float | None = None) -> GrowthEvent | None:
        """Ask the trigger (with the validation loss on evaluation steps) and grow if it says so."""
        metrics = None
        if val_loss is not None and self.tracker is not None and self.tracker.num_snapshots >= 2:
            metrics = self.tracker.aggregate(weighted=self.trigger.mode != "reference")
        if not self.trigger.should_grow(
            global_step,
            metrics,
            val_loss,
            num_active=self.stack.num_active,
            max_layers=self.stack.max_layers,
            in_warmup=self.in_warmup(global_step),
        ):
            return None
        event = self.grow(global_step, val_loss=val_loss, metrics=metrics)
        self._refresh_scheduler()
        return event

    def _refresh_scheduler(self) -> None:
        """Rewrite the lrs now (a trainer that steps its scheduler before the controller, like
        ``transformers.Trainer``, would otherwise apply a growth one step late)."""
        refresh = getattr(self.scheduler, "refresh", None)
        if callable(refresh):
            refresh()

    # -- growth ------------------------------------------------------------------------------
    def _probe_loss(self) -> float | None:
        if self.probe is None:
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                value = self.probe(self.model)
        finally:
            self.model.train(was_training)
        return float(value)

    def grow(
        self,
        global_step: int,
        *,
        val_loss: float | None = None,
        metrics: TrajectoryMetrics | None = None,
    ) -> GrowthEvent:
        """Add one block now (the trigger calls this; it can be called by hand).

        Raises:
            ValueError: at full depth.
        """
        slot = self.stack.next_slot()
        source = self.stack.source_slot(slot)
        old = set(self.stack.active_slots)
        new_block, source_block = self.stack[slot], self.stack[source]
        before = self._probe_loss()
        trajectory = self.operator in ("geometric", "reference")
        if trajectory and self.tracker is not None and self.last_snapshot_step != global_step:
            self.tracker.snapshot()  # the operator extrapolates from the current weights
            self.last_snapshot_step = global_step
        if metrics is None and self.tracker is not None and self.tracker.num_snapshots >= 2:
            metrics = self.tracker.aggregate(weighted=self.trigger.mode != "reference")
        source_state = {k: v.detach().clone() for k, v in source_block.state_dict().items()}
        info = initialise_block(
            self.operator, new_block, source_block, tracker=self.tracker, params=self.params
        )
        self.stack.activate(slot)
        transfer_state(self.optimizer, source_block, new_block, self.state_transfer)
        if self.isolated_warmup_steps > 0 and self.isolated_lr_mult != 1.0:
            self._set_old_blocks_mult(self.isolated_lr_mult, old)
            self.warmup_until = global_step + 1 + self.isolated_warmup_steps
        if self.trigger.last_growth != global_step:
            self.trigger.record_growth(global_step)
        after = self._probe_loss()
        self._check_preserved(global_step, before, after)
        values = metrics.as_floats() if metrics is not None else {}
        event = GrowthEvent(
            step=global_step,
            slot=slot,
            source=source,
            operator=self.operator,
            preserve=self.stack.preserve,
            state_transfer=self.state_transfer,
            parameters=info["parameters"],
            tau=values.get("tau"),
            kappa=values.get("kappa"),
            tau_norm=values.get("tau_norm"),
            kappa_norm=values.get("kappa_norm"),
            val_loss=None if val_loss is None else float(val_loss),
            probe_loss_before=before,
            probe_loss_after=after,
            active_layers=self.stack.active_slots,
        )
        self.events.append(event)
        record_active(self.model, self.stack)
        if self.tracker is not None:
            self.tracker.retarget(self._source_params())
            self.last_snapshot_step = None
        if self.layer_states is not None:
            meta = {
                "strategy": self.operator,
                "strategy_parameters": info["parameters"],
                "step": global_step,
                "metrics": {**values, "per_tensor": info["metrics"]},
                "source": source,
                "preserve": self.stack.preserve,
            }
            self.layer_states.save_state(slot, "source", source_state, {**meta, "slot": source})
            self.layer_states.save_state(slot, "init", new_block.state_dict(), meta)
        return event

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable controller state (the tracker's tensors are saved separately)."""
        return {
            "operator": self.operator,
            "state_transfer": self.state_transfer,
            "active_layers": self.stack.active_slots,
            "max_layers": self.stack.max_layers,
            "warmup_until": self.warmup_until,
            "last_snapshot_step": self.last_snapshot_step,
            "events": [e.to_dict() for e in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output onto a model already holding the saved weights.

        Raises:
            ValueError: the model's active set or depth differs from the saved one.
        """
        if (
            state["max_layers"] != self.stack.max_layers
            or state["active_layers"] != self.stack.active_slots
        ):
            raise ValueError(
                f"growth state has active layers {state['active_layers']} of {state['max_layers']}, "
                f"the model has {self.stack.active_slots} of {self.stack.max_layers}: load the "
                "matching model weights first"
            )
        self.events = [GrowthEvent.from_dict(e) for e in state["events"]]
        self.warmup_until = state["warmup_until"]
        self.last_snapshot_step = state["last_snapshot_step"]
        if self.tracker is not None:
            self.tracker.retarget(self._source_params())
