"""Argument checks shared by the auon optimisers: learning rates, ranges, choices, flags, params.

Each check raises ``ValueError``/``TypeError`` naming the argument, the expected and the received
value, before any optimiser state changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

AdjustLrFn = Literal["original", "unit", "match_muon", "match_rms_adamw"]
NonFinite = Literal["skip", "propagate"]

_ADJUST_LR_FNS: tuple[str | None, ...] = (None, "original", "unit", "match_muon", "match_rms_adamw")
_HELPER_HINT = "vectors and scalars belong to AdamW; see auon.matrix_param_groups"


def _lr_value(lr: object, name: str = "lr") -> float | Tensor:
    """Check a learning rate: a float ≥ 0 or a 1-element tensor (checked without a host sync)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(
                f"{name} as a tensor must have exactly 1 element, got shape {tuple(lr.shape)}"
            )
        if not lr.is_floating_point():
            raise TypeError(f"{name} as a tensor must be floating point, got {lr.dtype}")
        return lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"{name} must be a float or a 1-element tensor, got {type(lr).__name__}")
    if not (math.isfinite(lr) and lr >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {lr!r}")
    return float(lr)


def _check_float(
    value: object,
    name: str,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check that ``value`` is a real number in the interval given; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = True if high is None else (v < high if high_open else v <= high)
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lo = "(" if low_open else "["
        hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{name} must be in {lo}{low}, {hi}, got {value!r}")
    return v


def _check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)!r}, got {value!r}")


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_param(p: Tensor, opt: str, *, min_ndim: int) -> None:
    """Reject complex parameters and, when ``min_ndim`` is 2, vectors and scalars."""
    if not isinstance(p, Tensor):
        raise TypeError(f"{opt}: params must be tensors, got {type(p).__name__}")
    if torch.is_complex(p):
        raise ValueError(f"{opt}: complex parameters are not supported, got dtype {p.dtype}")
    if not p.is_floating_point():
        raise ValueError(f"{opt}: parameters must be floating point, got dtype {p.dtype}")
    if p.ndim < min_ndim:
        raise ValueError(
            f"{opt}: params must have ndim >= {min_ndim}, got a parameter of shape "
            f"{tuple(p.shape)}; {_HELPER_HINT}"
        )


def _check_ns(steps: object, name: str = "ns_steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"{name} must be an int, got {type(steps).__name__}")
    if not 1 <= steps <= 99:
        raise ValueError(f"{name} must be in [1, 99], got {steps}")
    return steps


_MUON_ADJUST_LR_FNS: tuple[str | None, ...] = (None, "original", "unit", "match_rms_adamw")


def _check_variant(group: dict[str, Any], defaults: dict[str, tuple[Any, Any]]) -> bool:
    """Check ``group["variant"]``; fill each ``None`` entry of ``defaults`` (paper, repo value).

    Returns:
        Whether the group is the paper variant.
    """
    _check_choice(group["variant"], "variant", ("paper", "repo"))
    paper: bool = group["variant"] == "paper"
    for key, (paper_value, repo_value) in defaults.items():
        if group[key] is None:
            group[key] = paper_value if paper else repo_value
    return paper


def _check_momentum_group(
    group: dict[str, Any],
    opt: str,
    *,
    adjust_lr_fns: Sequence[str | None],
    flags: Sequence[str],
    eps_open: bool,
    min_ndim: int,
) -> None:
    """The checks every auon momentum optimiser's param group shares (``ValueError``/``TypeError``).

    ``lr``, ``momentum``, ``weight_decay``, ``eps`` (``> 0`` when ``eps_open``), the optional
    ``gamma`` (``> 0``) and ``eps_rms`` (``≥ 0``), ``adjust_lr_fn`` (in ``adjust_lr_fns``; ``None``
    for a repo variant), ``nonfinite``, the bools ``nesterov``, ``maximize`` and ``flags``,
    ``foreach`` (bool or ``None``) and every parameter (real floating point, ``ndim ≥ min_ndim``).
    """
    group["lr"] = _lr_value(group["lr"])
    _check_float(group["momentum"], "momentum", low=0.0, high=1.0)
    _check_float(group["weight_decay"], "weight_decay", low=0.0)
    if "gamma" in group:
        _check_float(group["gamma"], "gamma", low=0.0, low_open=True)
    _check_float(group["eps"], "eps", low=0.0, low_open=eps_open)
    if "eps_rms" in group:
        _check_float(group["eps_rms"], "eps_rms", low=0.0)
    _check_choice(group["adjust_lr_fn"], "adjust_lr_fn", adjust_lr_fns)
    _check_choice(group["nonfinite"], "nonfinite", ("skip", "propagate"))
    for flag in ("nesterov", "maximize", *flags):
        _check_bool(group[flag], flag)
    if group["foreach"] is not None:
        _check_bool(group["foreach"], "foreach")
    if group.get("variant") == "repo" and group["adjust_lr_fn"] is not None:
        raise ValueError(
            "adjust_lr_fn must be None with variant='repo' (no shape factor), "
            f"got {group['adjust_lr_fn']!r}"
        )
    for p in group["params"]:
        _check_param(p, opt, min_ndim=min_ndim)
