"""Parameter helpers: the AION scalars and optimiser groups that keep them out of weight decay.

Weight decay pulls α0 and β (and the scalars of the peer residuals: ReZero's α, LayerScale's λ,
Admin's ω) towards 0, which changes the method rather than regularising it;
:func:`weight_decay_param_groups` puts them in a group with ``weight_decay=0``. Its former name
``param_groups`` is a deprecated alias: ``auon.param_groups`` has the same name and another
contract (matrices vs the rest, for two optimisers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from torch import nn

from aion_torch._residual import AionResidual

__all__ = ["aion_parameters", "param_groups", "weight_decay_param_groups"]


def aion_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Yield the parameters (α0, β) of every :class:`AionResidual` in ``model``, once each.

    Frozen ones (``requires_grad=False``) are included; filter them if needed.

    Args:
        model: Any module.

    Yields:
        ``(1,)`` parameters.
    """
    seen: set[int] = set()
    for m in model.modules():
        if isinstance(m, AionResidual):
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p


def _is_residual(m: nn.Module) -> bool:
    """A residual module in the sense of the shared interface: its class defines ``post_norm``."""
    return isinstance(m, AionResidual) or isinstance(getattr(type(m), "post_norm", None), bool)


def weight_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser groups: residual scalars at weight decay 0, everything else at ``weight_decay``.

    Residual modules are :class:`AionResidual` and every module whose class has a ``post_norm``
    attribute (the peers of :mod:`aion_torch.residuals`). Only parameters with
    ``requires_grad`` are listed; empty groups are omitted.

    Args:
        model: Any module.
        weight_decay: Decay of the main group (≥ 0).

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...],
        "weight_decay": 0.0}]`` for
        ``torch.optim.AdamW(weight_decay_param_groups(model, 0.1), lr=...)``.

    Raises:
        ValueError: ``weight_decay`` negative or not finite.
    """
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise TypeError(f"weight_decay must be a float, got {weight_decay!r}")
    if not 0.0 <= weight_decay < float("inf"):
        raise ValueError(f"weight_decay must be a finite non-negative float, got {weight_decay!r}")
    no_decay: set[int] = set()
    for m in model.modules():
        if _is_residual(m):
            no_decay.update(id(p) for p in m.parameters())
    decay_params: list[nn.Parameter] = []
    zero_params: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (zero_params if id(p) in no_decay else decay_params).append(p)
    groups: list[dict[str, Any]] = []
    if decay_params:
        groups.append({"params": decay_params, "weight_decay": float(weight_decay)})
    if zero_params:
        groups.append({"params": zero_params, "weight_decay": 0.0})
    return groups


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Deprecated alias of :func:`weight_decay_param_groups` (same arguments and result).

    Renamed because ``auon.param_groups`` shares the name with another contract.

    Warns:
        DeprecationWarning: on every call, naming :func:`weight_decay_param_groups`.
    """
    warnings.warn(
        "aion_torch.param_groups is deprecated; use aion_torch.weight_decay_param_groups "
        "(same arguments and result)",
        DeprecationWarning,
        stacklevel=2,
    )
    return weight_decay_param_groups(model, weight_decay)
