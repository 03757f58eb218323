"""One AuON param group: its validation and its step, shared by ``AuON`` and ``AuONWithAuxAdam``."""

from __future__ import annotations

from typing import Any

import torch

from auon._state import _collect_group
from auon._validation import (
    _ADJUST_LR_FNS,
    _check_choice,
    _check_float,
    _check_momentum_group,
    _check_variant,
)
from auon._workspace import _cpu_workspace
from auon.functional import auon_step

# The group keys that auon_step takes by the same name.
_STEP_KEYS = (
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "gamma",
    "variant",
    "eps",
    "eps_rms",
    "adjust_lr_fn",
    "compute_dtype",
    "brake",
    "brake_temperature",
    "nonfinite",
    "maximize",
    "foreach",
)


def _validate_auon_group(group: dict[str, Any]) -> None:
    """Validate the hyperparameters and parameters of one AuON param group (``ValueError``)."""
    paper = _check_variant(group, {"gamma": (1.0, 1.5)})
    _check_choice(group["brake"], "brake", ("none", "rms"))
    _check_float(group["brake_temperature"], "brake_temperature", low=0.0, low_open=True)
    dtype = group["compute_dtype"]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"compute_dtype must be a floating torch.dtype, got {dtype!r}")
    if not paper and group["brake"] != "none":
        raise ValueError(f"brake must be 'none' with variant='repo', got {group['brake']!r}")
    _check_momentum_group(
        group,
        f"AuON(variant={group['variant']!r})",
        adjust_lr_fns=_ADJUST_LR_FNS,
        flags=(),
        eps_open=True,
        min_ndim=2 if paper else 0,
    )


def _auon_group_step(owner: torch.optim.Optimizer, group: dict[str, Any]) -> None:
    """One AuON step on the parameters of ``group`` that have gradients (state in ``owner``)."""
    t = _collect_group(owner.state, group, "AuON")
    if not t.params:
        return
    workspace = _cpu_workspace(owner, t.params, group["compute_dtype"])
    hyper = {key: group[key] for key in _STEP_KEYS}
    auon_step(*t[:4], wd_muls=t.wd_muls, workspace=workspace, **hyper)
