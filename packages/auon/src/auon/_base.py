"""The optimiser base of auon: every param group validated as it is added, one shared ``step``.

Subclasses say how to validate a group (:meth:`_ValidatedOptimizer._validate_group`) and how to
step one (:meth:`_ValidatedOptimizer._group_step`); the closure handling and the ``no_grad`` loop
over the groups are written once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


def _hyperparameters(arguments: dict[str, Any]) -> dict[str, Any]:
    """A constructor's hyperparameters: its ``locals()`` on entry less ``self`` and ``params``.

    The optimisers pass ``locals()`` as their first statement, so the defaults dict is exactly
    the signature (names and order) and is never written out a second time.
    """
    return {k: v for k, v in arguments.items() if k not in ("self", "params", "__class__")}


class _ValidatedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that validates every param group as it is added.

    The constructor validates the defaults first (so an error names the argument) and then adds the
    groups through :meth:`add_param_group`, so no group ever bypasses :meth:`_validate_group`; an
    invalid group is removed again before the error leaves, leaving the optimiser as it was.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if defaults:
            self._validate_group({**defaults, "params": []})
        super().__init__(cast(Any, params), defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _group_step(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _group_defaults(self, group: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters a group of this optimiser has when nothing overrides them."""
        return dict(self.defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Called by ``load_state_dict`` and unpickling. A saved group that lacks a hyperparameter
        (a checkpoint of the original optimiser, or of an older version) gets this optimiser's
        value, as ``torch.optim`` optimisers do for options added after a release."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self._group_defaults(group).items():
                group.setdefault(key, value)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group after validating its hyperparameters and parameters."""
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1])
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step on every param group.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._group_step(group)
        return loss
