"""The two public functions of aion-torch 1.0.x: ``energy`` and ``compute_alpha``.

Both keep the original semantics (no TorchScript): ``energy`` is the mean of squares accumulated
in at least fp32 and cast back to the input dtype, ``compute_alpha`` is the AION scaling rule
``α = α0 / (1 + β·r)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_alpha", "energy"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def energy(t: Tensor, dim: int = -1, keepdim: bool = True) -> Tensor:
    """Mean of squares along ``dim``, accumulated in fp32 (fp64 stays fp64), cast back to ``t.dtype``.

    This is the aion-torch 1.0.x ``energy``: for fp16/bf16 inputs the statistic is rounded back to
    the half dtype, so rows with RMS above ≈256 overflow in fp16. The default mode of
    :class:`~aion_torch.AionResidual` therefore uses ``adaptnn_core.mean_square`` (fp32 out) instead.

    Args:
        t: Floating tensor, e.g. ``(B, T, D)``.
        dim: Dimension to reduce.
        keepdim: Keep the reduced dimension with size 1.

    Returns:
        ``mean(t², dim)`` in ``t.dtype``, e.g. ``(B, T, 1)`` for ``keepdim=True``.

    Raises:
        ValueError: If ``t`` is not a floating tensor or the reduced dimension is empty.
    """
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"t must be a floating tensor, got dtype {t.dtype}")
    if t.ndim == 0 or t.shape[dim] == 0:
        raise ValueError(f"t cannot be empty along dim={dim}, got shape {tuple(t.shape)}")
    acc = torch.promote_types(t.dtype, torch.float32)
    return t.to(acc).pow(2).mean(dim=dim, keepdim=keepdim).to(t.dtype)


def compute_alpha(alpha0: Tensor | float, beta: Tensor | float, ratio_s: Tensor | float) -> Tensor:
    """AION scaling rule ``α = α0 / (1 + β·ratio_s)`` (elementwise, broadcasting).

    The dtype follows PyTorch type promotion of the inputs (float64 stays float64); Python floats
    only are returned as a 0-dim tensor of the default dtype. Gradients flow to every tensor input.

    Args:
        alpha0: Base scale α0.
        beta: Sensitivity β to the energy ratio.
        ratio_s: Smoothed energy ratio ``E[y]/E[x]``.

    Returns:
        α with the broadcast shape of the inputs.
    """
    out = alpha0 / (1 + beta * ratio_s)
    if isinstance(out, Tensor):
        return out
    return torch.tensor(out, dtype=torch.get_default_dtype())
