"""``AuONWithAuxAdam``: one optimiser whose groups run AuON (``use_auon=True``) or AdamW.

A single ``step()`` drives both, so training loops, schedulers and checkpoints deal with one object.
The AdamW groups run torch's own functional AdamW (``torch.optim.adamw.adamw``) with the state and
defaults ``torch.optim.AdamW`` uses, so they are bit for bit ``torch.optim.AdamW``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim.adamw import adamw

from auon._auon_group import _auon_group_step, _validate_auon_group
from auon._base import _ValidatedOptimizer
from auon._state import _params_with_grads
from auon._validation import _check_bool, _check_float, _lr_value
from auon.auon_optimizer import AuON
from auon.groups import matrix_param_groups

__all__ = ["AuONWithAuxAdam"]

_AUON_DEFAULTS: dict[str, Any] = {
    name: param.default
    for name, param in inspect.signature(AuON.__init__).parameters.items()
    if param.default is not inspect.Parameter.empty
}
_ADAM_DEFAULTS: dict[str, Any] = {
    "lr": 3e-4,
    "betas": (0.9, 0.95),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "fused": None,
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
    _check_bool(group["capturable"], "capturable")
    for flag in ("foreach", "fused"):
        if group[flag] is not None:
            _check_bool(group[flag], flag)
    for p in group["params"]:
        if torch.is_complex(p):
            raise ValueError(
                f"AuONWithAuxAdam: complex parameters are not supported, got {p.dtype}"
            )


def _step_counter(p: Tensor, on_device: bool, fused: bool) -> Tensor:
    """A fresh AdamW ``"step"``, where and in the dtype ``torch.optim.AdamW`` keeps it.

    On the host (a CPU 0-D tensor, read there without a device sync) unless ``capturable`` or
    ``fused``; fp32, or float64 when that is the default dtype (not for fused).
    """
    wide = torch.get_default_dtype() == torch.float64 and not fused
    dtype = torch.float64 if wide else torch.float32
    if on_device:
        return torch.zeros((), dtype=dtype, device=p.device)
    return torch.tensor(0.0, dtype=dtype)


class AuONWithAuxAdam(_ValidatedOptimizer):
    """AuON on the groups flagged ``use_auon=True``, AdamW on the others, in one optimiser.

    Every group must carry ``use_auon`` (bool). AuON groups take :class:`auon.AuON`'s
    hyperparameters (defaults as there); AdamW groups take ``lr`` (3e-4), ``betas`` ((0.9, 0.95)),
    ``eps`` (1e-8), ``weight_decay`` (0.0, decoupled), ``maximize``, and ``foreach``,
    ``capturable`` and ``fused`` as ``torch.optim.AdamW``. An AdamW group is stepped by
    ``torch.optim.adamw.adamw`` with ``torch.optim.AdamW``'s state (``"step"``, ``"exp_avg"``,
    ``"exp_avg_sq"``; the step counter lives on the host unless ``capturable`` or ``fused``, as
    there), so it equals ``torch.optim.AdamW`` bit for bit.

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
        """Build from :func:`auon.matrix_param_groups`: hidden matrices on AuON, the rest on AdamW.

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
        decay: dict[str, Any] = {
            "weight_decay": weight_decay,
            "adamw_weight_decay": adamw_weight_decay,
        }
        mats, others = matrix_param_groups(
            model, lr=lr, adamw_lr=adamw_lr, adamw_betas=adamw_betas, **decay
        )
        groups = [{**g, **auon_kwargs, "use_auon": True} for g in mats]
        groups += [{**g, "use_auon": False} for g in others]
        return cls(groups)

    def _group_defaults(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(_AUON_DEFAULTS if group.get("use_auon") else _ADAM_DEFAULTS)

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

    def _group_step(self, group: dict[str, Any]) -> None:
        if group["use_auon"]:
            _auon_group_step(self, group)
        else:
            self._adam_group_step(group)

    def _adam_group_step(self, group: dict[str, Any]) -> None:
        on_device = group["capturable"] or bool(group["fused"])
        params: list[Tensor] = []
        grads: list[Tensor] = []
        exp_avgs: list[Tensor] = []
        exp_avg_sqs: list[Tensor] = []
        steps: list[Tensor] = []
        for p in _params_with_grads(group, "AuONWithAuxAdam"):
            st = self.state[p]
            if len(st) == 0:
                st["step"] = _step_counter(p, on_device, bool(group["fused"]))
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(cast(Tensor, p.grad))
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        adamw(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            foreach=group["foreach"],
            capturable=group["capturable"],
            fused=group["fused"],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
