"""``AuONWithAuxAdam``: one optimiser whose groups run AuON (``use_auon=True``) or AdamW.

A single ``step()`` drives both, so training loops, schedulers and checkpoints deal with one object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from auon._common import (
    _check_bool,
    _check_float,
    _local,
    _lr_value,
    _ValidatedOptimizer,
)
from auon.groups import param_groups
from auon.optimizer import _auon_group_step, _validate_auon_group

__all__ = ["AuONWithAuxAdam"]

_AUON_DEFAULTS: dict[str, Any] = {
    "lr": 0.24,
    "momentum": 0.95,
    "weight_decay": 0.0,
    "gamma": None,
    "variant": "paper",
    "nesterov": True,
    "eps": 1e-7,
    "eps_rms": 1e-8,
    "adjust_lr_fn": None,
    "compute_dtype": torch.float32,
    "brake": "none",
    "brake_temperature": 3.0,
    "nonfinite": "skip",
    "maximize": False,
    "foreach": None,
}
_ADAM_DEFAULTS: dict[str, Any] = {
    "lr": 3e-4,
    "betas": (0.9, 0.95),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "maximize": False,
}


def _validate_adam_group(group: dict[str, Any]) -> None:
    group["lr"] = _lr_value(group["lr"])
    betas = group["betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair of floats, got {betas!r}")
    _check_float(betas[0], "betas[0]", low=0.0, high=1.0, high_open=True)
    _check_float(betas[1], "betas[1]", low=0.0, high=1.0, high_open=True)
    _check_float(group["eps"], "eps", low=0.0)
    _check_float(group["weight_decay"], "weight_decay", low=0.0)
    _check_bool(group["maximize"], "maximize")
    for p in group["params"]:
        if torch.is_complex(p):
            raise ValueError(
                f"AuONWithAuxAdam: complex parameters are not supported, got {p.dtype}"
            )


class AuONWithAuxAdam(_ValidatedOptimizer):
    """AuON on the groups flagged ``use_auon=True``, AdamW on the others, in one optimiser.

    Every group must carry ``use_auon`` (bool). AuON groups take :class:`auon.AuON`'s
    hyperparameters (defaults as there); AdamW groups take ``lr`` (3e-4), ``betas`` ((0.9, 0.95)),
    ``eps`` (1e-8), ``weight_decay`` (0.0, decoupled) and ``maximize``. AdamW state is ``"step"``
    (fp32 0-D tensor), ``"exp_avg"``, ``"exp_avg_sq"``; its bias correction is computed on the device
    (no host sync).

    Args:
        param_groups: Iterable of param-group dicts, each with ``"params"`` and ``"use_auon"``.

    Raises:
        ValueError: A group without a boolean ``use_auon`` or with a bad hyperparameter.

    Example:
        >>> import torch
        >>> from auon import AuONWithAuxAdam
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8))
        >>> opt = AuONWithAuxAdam.from_model(model, lr=0.02, adamw_lr=1e-3)
        >>> model(torch.tensor([1, 2])).sum().backward()
        >>> _ = opt.step()
    """

    def __init__(self, param_groups: Iterable[dict[str, Any]]) -> None:
        groups = list(param_groups)
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("use_auon"), bool):
                raise ValueError(f"param_groups[{i}] must be a dict with a bool 'use_auon' flag")
        super().__init__(groups, {})

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        lr: float = 0.24,
        adamw_lr: float = 3e-4,
        weight_decay: float = 0.0,
        adamw_weight_decay: float = 0.0,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        **auon_kwargs: Any,
    ) -> AuONWithAuxAdam:
        """Build from :func:`auon.param_groups`: hidden matrices on AuON, the rest on AdamW.

        Args:
            model: The module to optimise.
            lr: AuON learning rate.
            adamw_lr: AdamW learning rate.
            weight_decay: AuON weight decay.
            adamw_weight_decay: AdamW weight decay of embeddings and heads.
            adamw_betas: AdamW betas.
            **auon_kwargs: Extra AuON hyperparameters for the matrix group.

        Returns:
            The optimiser.
        """
        mats, others = param_groups(
            model,
            lr=lr,
            adamw_lr=adamw_lr,
            weight_decay=weight_decay,
            adamw_weight_decay=adamw_weight_decay,
            adamw_betas=adamw_betas,
        )
        groups = [{**g, **auon_kwargs, "use_auon": True} for g in mats]
        groups += [{**g, "use_auon": False} for g in others]
        return cls(groups)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; fills the AuON or AdamW defaults according to ``use_auon`` and validates."""
        if not isinstance(param_group.get("use_auon"), bool):
            raise ValueError("param_group must have a bool 'use_auon' flag")
        defaults = _AUON_DEFAULTS if param_group["use_auon"] else _ADAM_DEFAULTS
        for k, v in defaults.items():
            param_group.setdefault(k, v)
        super().add_param_group(param_group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        if group["use_auon"]:
            _validate_auon_group(group)
        else:
            _validate_adam_group(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step of every group; returns the closure's loss or ``None``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_auon"]:
                _auon_group_step(self, group)
            else:
                self._adam_group(group)
        return loss

    def _adam_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AuONWithAuxAdam does not support sparse gradients")
            st = self.state[p]
            local = _local(p)
            if len(st) == 0:
                st["step"] = torch.zeros((), dtype=torch.float32, device=local.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            g = _local(p.grad)
            if group["maximize"]:
                g = -g
            m, v, t = _local(st["exp_avg"]), _local(st["exp_avg_sq"]), st["step"]
            t.add_(1.0)
            if group["weight_decay"] != 0.0:
                local.mul_(1.0 - lr * group["weight_decay"])
            m.lerp_(g, 1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            bc1 = 1.0 - torch.pow(beta1, t)
            bc2_sqrt = torch.sqrt(1.0 - torch.pow(beta2, t))
            denom = (v.sqrt() / bc2_sqrt).add_(group["eps"])
            step_size = (lr / bc1) if not isinstance(lr, Tensor) else lr.reshape(()) / bc1
            local.addcdiv_(m * (-step_size), denom)
