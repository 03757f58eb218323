"""``Adam``: ``torch.optim.AdamW`` with the original auon package's defaults (quick-start compat)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.optim import AdamW

from auon._base import ParamsT

__all__ = ["Adam"]


class Adam(AdamW):
    """AdamW (decoupled decay) with the original auon defaults ``lr=1e-3, weight_decay=0.01``.

    Kept so that ``from auon import AuON, Adam`` keeps working. Differences from the original class:
    ε is added outside the bias correction (PyTorch's form) and ``wd_mul`` attributes are not
    honoured (use param groups).

    Args:
        params: Parameters or param groups.
        lr: Learning rate.
        betas: ``(β₁, β₂)``.
        eps: Denominator constant.
        weight_decay: Decoupled weight decay.
        **kwargs: Passed to ``torch.optim.AdamW`` (``foreach``, ``fused``, ``maximize``, ...).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)
