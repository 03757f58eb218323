"""``mode="reference"`` of :class:`~aion_torch.AionResidual`: the aion-torch 1.0.x numerics.

Energies are fp32-accumulated means of squares cast back to the input dtype, the ratio is taken
in the input dtype and averaged over tokens (a mean of ratios), then averaged over WORLD with
equal rank weights by an all-reduce whose backward is the identity (:class:`AllReduceAvgIdentity`),
smoothed by ``γ·ema + (1−γ)·ratio`` (left alone for γ = 1) and mapped to ``α = α0/(1 + β·r̄)``;
eval reuses the α of the last training forward. Unlike 1.0.x the buffers are written in place and
``alpha_cached`` is stored detached, so ``deepcopy`` and eval-mode backward work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from adaptnn_core import all_reduce_, is_initialized
from aion_torch._functional import energy

if TYPE_CHECKING:
    from aion_torch._residual import AionResidual

__all__ = ["AllReduceAvgIdentity", "reference_forward"]


class AllReduceAvgIdentity(torch.autograd.Function):
    """Equal-weight average over WORLD in the forward, identity in the backward (aion-torch 1.0.x)."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        out = t.detach().clone()
        all_reduce_(out, "avg", None)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def reference_forward(
    m: AionResidual, x: Tensor, y: Tensor, x_norm: Tensor | None, return_stats: bool
) -> Tensor | tuple[Tensor, dict[str, Any]]:
    """The aion-torch 1.0.x forward of ``m`` on validated inputs ``(..., D)``.

    Returns ``out`` or ``(out, {"alpha": float, "ratio": float})`` (a host sync, as in 1.0.x).
    """
    if not m.training:
        alpha = m.alpha_cached.clone()
        out = x + alpha * y
        if not return_stats:
            return out
        return out, {"alpha": float(alpha.item()), "ratio": float(m.ratio_ema.item())}
    d = x if x_norm is None else x_norm
    ex = energy(d, dim=-1, keepdim=False)
    ey = energy(y, dim=-1, keepdim=False)
    ratio = ey / (ex + m.epsilon)
    ratio_mean = ratio.mean()
    if is_initialized():
        ratio_mean = cast(Tensor, AllReduceAvgIdentity.apply(ratio_mean))
    if m.ema_gamma < 1.0:
        ratio_s = m.ema_gamma * m.ratio_ema + (1.0 - m.ema_gamma) * ratio_mean
        with torch.no_grad():
            m.ratio_ema.copy_(ratio_s)
    else:
        ratio_s = ratio_mean
    # the (1,) parameters as the 0-dim scalars of 1.0.x: same values, same type promotion
    alpha = m.alpha0.reshape(()) / (1 + m.beta.reshape(()) * ratio_s)
    with torch.no_grad():
        m.alpha_cached.copy_(alpha)
        m.step_count.add_(1)
    out = x + alpha * y
    if not return_stats:
        return out
    return out, {"alpha": float(alpha.item()), "ratio": float(ratio_mean.item())}
