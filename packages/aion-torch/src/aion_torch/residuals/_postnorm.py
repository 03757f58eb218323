"""Post-norm peer residuals of AION: DeepNorm and Admin, which up-weight the skip inside LN.

* DeepNorm (Wang et al., "DeepNet: Scaling Transformers to 1,000 Layers", 2022), decoder-only
  form: ``LN(α·x + y)`` with ``α = (2N)^¼`` for ``N`` blocks, plus :func:`deepnorm_init_`, which
  scales the value/output projections and the feed-forward weights by ``β = (8N)^−¼``.
* Admin (Liu et al., "Understanding the Difficulty of Training Transformers", 2020): ``LN(ω⊙x + y)``
  with a learnable per-channel ω initialised by the closed form of microsoft/admin-torch:
  ``ω = √((N+1)/ln(N+1) − 1)`` ("O(logn)") or ``√N`` ("O(1)"), ``N`` = residual sublayers.

Both are called as ``residual(x, sublayer(x))`` (``post_norm = True``); ``x_norm`` is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

__all__ = ["AdminResidual", "DeepNormResidual", "deepnorm_init_"]

_FC_NAMES: tuple[str, ...] = ("v_proj", "out_proj", "fc1", "fc2")


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(
            f"Input shapes must match: x {tuple(x.shape)} vs y {tuple(y.shape)} (no broadcasting)"
        )


class DeepNormResidual(nn.Module):
    """Post-norm ``out = LN(α·x + y)`` with ``α = (2N)^¼`` (DeepNet, decoder-only).

    Pair it with :func:`deepnorm_init_` on the model; DeepNorm is not "AION with β = 0": it
    up-weights the skip inside a post-LN and shrinks the initial branch weights.

    Args:
        dim: Channel count ``D`` of the LayerNorm.
        num_layers: Number of transformer blocks ``N``.

    Attributes:
        alpha: The skip weight ``(2N)^¼`` (a Python float).
        norm: ``nn.LayerNorm(dim)``.
    """

    post_norm: ClassVar[bool] = True

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        _check_positive_int("dim", dim)
        n = _check_positive_int("num_layers", num_layers)
        self.alpha = (2.0 * n) ** 0.25
        self.norm = nn.LayerNorm(dim)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.6g}"

    def forward(self, x: Tensor, y: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """``LN(α·x + y)`` for ``(..., D)`` inputs."""
        _check_pair(x, y)
        out: Tensor = self.norm(torch.add(y, x, alpha=self.alpha))
        return out


def deepnorm_init_(
    module: nn.Module, num_layers: int, names: Sequence[str] = _FC_NAMES
) -> list[str]:
    """Multiply the weights of the named submodules by ``β = (8N)^−¼`` in place (DeepNet).

    Applied after the model's own initialisation; submodules match when the last component of
    their qualified name is in ``names`` (the harness GPT's ``v_proj``, ``out_proj``, ``fc1``,
    ``fc2``).

    Args:
        module: Model to modify.
        num_layers: Number of transformer blocks ``N``.
        names: Submodule names whose ``weight`` is scaled.

    Returns:
        Qualified names of the scaled submodules.

    Raises:
        ValueError: ``num_layers`` invalid or no submodule matched.
    """
    n = _check_positive_int("num_layers", num_layers)
    if isinstance(names, str):
        names = (names,)
    beta = (8.0 * n) ** -0.25
    wanted = set(names)
    scaled: list[str] = []
    with torch.no_grad():
        for qual, sub in module.named_modules():
            if qual.rsplit(".", 1)[-1] in wanted and isinstance(
                getattr(sub, "weight", None), Tensor
            ):
                weight: Tensor = sub.weight
                weight.mul_(beta)
                scaled.append(qual)
    if not scaled:
        raise ValueError(f"names {tuple(names)} matched no submodule with a weight in module")
    return scaled


class AdminResidual(nn.Module):
    """Post-norm ``out = LN(ω⊙x + y)`` with learnable per-channel ω (Admin, closed-form init).

    Args:
        dim: Channel count ``D``.
        num_sublayers: Residual sublayers ``N`` in the model (2 per transformer block).
        output_change: ``"O(logn)"``: ``ω = √((N+1)/ln(N+1) − 1)``; ``"O(1)"``: ``ω = √N``.

    Attributes:
        omega: ``(D,)`` parameter.
        norm: ``nn.LayerNorm(dim)``.
    """

    post_norm: ClassVar[bool] = True

    def __init__(
        self, dim: int, num_sublayers: int, output_change: Literal["O(logn)", "O(1)"] = "O(logn)"
    ) -> None:
        super().__init__()
        _check_positive_int("dim", dim)
        n = _check_positive_int("num_sublayers", num_sublayers)
        if output_change == "O(logn)":
            w = math.sqrt(max((n + 1) / math.log(n + 1) - 1.0, 0.0))
        elif output_change == "O(1)":
            w = math.sqrt(n)
        else:
            raise ValueError(f"output_change must be 'O(logn)' or 'O(1)', got {output_change!r}")
        self.output_change = output_change
        self.omega = nn.Parameter(torch.full((dim,), w))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, y: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """``LN(ω⊙x + y)`` for ``(..., D)`` inputs."""
        _check_pair(x, y)
        out: Tensor = self.norm(torch.addcmul(y, self.omega.to(x.dtype), x))
        return out
