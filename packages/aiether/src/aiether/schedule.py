"""``GrowthAwareLR``: a learning-rate schedule over the global step that growth does not restart.

``lr = base_lr · base_lambda(t) · rewarm(t) · lr_mult``: ``base_lambda`` is the run's schedule
over the global step ``t`` (warm-up + cosine to the planned last step, say), and its horizon
never changes when the model grows (the original reset it to a fresh full-length cosine at every
growth). ``rewarm(t)`` ramps linearly from the controller's ``rewarm_from`` to 1 over
``rewarm_steps`` after each growth; ``lr_mult`` is the group's multiplier (lowered for the old
blocks during an isolated warm-up). Call ``scheduler.step()`` after ``controller.step()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch.optim.lr_scheduler import LRScheduler


class _Rewarm(Protocol):
    def rewarm_factor(self, step: int) -> float: ...


class GrowthAwareLR(LRScheduler):
    """``LambdaLR`` with a growth re-warm and per-group ``lr_mult`` (module docstring).

    Args:
        optimizer: the wrapped optimiser (groups may carry ``lr_mult``).
        base_lambda: multiplier of the initial lr at global step ``t``.
        controller: anything with ``rewarm_factor(step) -> float`` (a
            :class:`~aiether.controller.GrowthController`); ``None`` means no re-warm. It can be
            attached later with :meth:`attach`.
        last_epoch: as for every ``LRScheduler``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lambda: Callable[[int], float],
        controller: _Rewarm | None = None,
        last_epoch: int = -1,
    ) -> None:
        self.base_lambda = base_lambda
        self.controller: _Rewarm | None = None
        if controller is not None:
            self.attach(controller)
        super().__init__(optimizer, last_epoch)

    def attach(self, controller: _Rewarm) -> None:
        """Use ``controller``'s re-warm from now on (and tell a ``GrowthController`` that this
        scheduler now writes the learning rates)."""
        self.controller = controller
        register = getattr(controller, "attach_scheduler", None)
        if callable(register) and getattr(controller, "scheduler", None) is not self:
            register(self)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        t = self.last_epoch
        rewarm = self.controller.rewarm_factor(t) if self.controller is not None else 1.0
        scale = self.base_lambda(t) * rewarm
        return [
            float(base) * scale * float(group.get("lr_mult", 1.0))
            for base, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
        ]

    def refresh(self) -> None:
        """Recompute and write the lrs for the current step (after a growth or the end of a
        warm-up, when the scheduler has already stepped)."""
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = list(values)

    def state_dict(self) -> dict[str, Any]:
        """The counters (JSON-serialisable); the lambda and the controller are not saved."""
        skip = {"optimizer", "base_lambda", "controller"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
