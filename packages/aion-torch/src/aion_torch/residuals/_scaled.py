"""Pre-norm peer residuals of AION: plain, fixed scale, ReZero and LayerScale.

Each is ``x + s·y`` with a different ``s``: 1; a constant buffer; a learnable scalar starting at 0
(Bachlechner et al., "ReZero is All You Need: Fast Convergence at Large Depth", 2020); a learnable
per-channel vector starting at 1e-5 (Touvron et al., "Going deeper with Image Transformers",
2021). All share ``forward(x, y, x_norm=None)`` and ``post_norm = False``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from aion_torch._scalar import ScalarParamModule, scalar_parameter

__all__ = ["FixedScaleResidual", "LayerScaleResidual", "PlainResidual", "ReZeroResidual"]


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(
            f"Input shapes must match: x {tuple(x.shape)} vs y {tuple(y.shape)} (no broadcasting)"
        )


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


class PlainResidual(nn.Module):
    """``out = x + y``."""

    post_norm: ClassVar[bool] = False

    def forward(self, x: Tensor, y: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """``x + y`` for ``x``, ``y`` of shape ``(..., D)``; ``x_norm`` is ignored."""
        _check_pair(x, y)
        return x + y


class FixedScaleResidual(nn.Module):
    """``out = x + s·y`` with a constant ``s`` (persistent fp32 buffer ``scale``).

    The controls of the AION benchmark are ``s = 0.1`` (what AION's α stays close to) and
    ``s = 1/√(2L)``.

    Args:
        scale: The constant ``s`` (finite).
    """

    post_norm: ClassVar[bool] = False
    scale: Tensor

    def __init__(self, scale: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(_check_float("scale", scale)))

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.6g}"

    def forward(self, x: Tensor, y: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """``x + s·y`` for ``(..., D)`` inputs; ``x_norm`` is ignored."""
        _check_pair(x, y)
        return torch.addcmul(x, self.scale.to(y.dtype), y)


class ReZeroResidual(ScalarParamModule):
    """``out = x + a·y`` with a learnable scalar ``a`` (parameter ``alpha``), initialised to 0.

    At initialisation the block is the identity (Bachlechner et al., 2020). ``alpha`` has shape
    ``(1,)`` so that FSDP2 can shard it; ``state_dict`` saves and loads it 0-dim, as before.

    Args:
        init: Initial value of ``a``.
    """

    post_norm: ClassVar[bool] = False
    scalar_params: ClassVar[tuple[str, ...]] = ("alpha",)

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.alpha = scalar_parameter(_check_float("init", init))

    def forward(self, x: Tensor, y: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """``x + a·y`` for ``(..., D)`` inputs; ``x_norm`` is ignored."""
        _check_pair(x, y)
        return torch.addcmul(x, self.alpha.reshape(()).to(y.dtype), y)


class LayerScaleResidual(nn.Module):
    """``out = x + λ⊙y`` with a learnable per-channel ``λ ∈ R^D`` (parameter ``gamma``).

    Args:
        dim: Channel count ``D``.
        init: Initial value of every entry of ``λ`` (1e-5 in Touvron et al., 2021, for deep
            models).
    """

    post_norm: ClassVar[bool] = False

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.gamma = nn.Parameter(torch.full((dim,), _check_float("init", init)))

    def forward(self, x: Tensor, y: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """``x + λ⊙y`` for ``(..., D)`` inputs; ``x_norm`` is ignored."""
        _check_pair(x, y)
        if y.shape[-1] != self.gamma.shape[0]:
            raise ValueError(
                f"y must have {self.gamma.shape[0]} channels in its last dim, got {tuple(y.shape)}"
            )
        return torch.addcmul(x, self.gamma.to(y.dtype), y)
