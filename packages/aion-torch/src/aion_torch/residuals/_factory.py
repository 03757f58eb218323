"""``make_residual``: build AION or one of its peers by name, for benchmarks and model factories."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from aion_torch._residual import AionResidual
from aion_torch.residuals._postnorm import AdminResidual, DeepNormResidual
from aion_torch.residuals._scaled import (
    FixedScaleResidual,
    LayerScaleResidual,
    PlainResidual,
    ReZeroResidual,
)

__all__ = ["RESIDUAL_KINDS", "make_residual"]

ResidualKind = Literal[
    "plain",
    "fixed",
    "rezero",
    "layerscale",
    "deepnorm",
    "admin",
    "aion",
    "aion_reference",
    "aion_fixed",
]
RESIDUAL_KINDS: tuple[str, ...] = (
    "plain",
    "fixed",
    "rezero",
    "layerscale",
    "deepnorm",
    "admin",
    "aion",
    "aion_reference",
    "aion_fixed",
)


def make_residual(kind: ResidualKind, *, dim: int, num_layers: int, **kw: Any) -> nn.Module:
    """Build a residual with the shared ``forward(x, y, x_norm=None)`` interface.

    Args:
        kind: ``"plain"``; ``"fixed"`` (``scale``, default 0.1); ``"rezero"`` (``init``);
            ``"layerscale"`` (``init``); ``"deepnorm"`` (also call :func:`deepnorm_init_` on the
            model); ``"admin"`` (``output_change``; ``N = 2·num_layers`` sublayers); ``"aion"``
            (default mode, any :class:`AionResidual` option); ``"aion_reference"``
            (aion-torch 1.0.x numerics); ``"aion_fixed"`` (β = 0 frozen, α0 learnable: the
            control that separates adaptivity from a small learnable branch scale).
        dim: Channel count ``D``.
        num_layers: Number of transformer blocks ``L``.
        **kw: Extra keyword arguments of the chosen class.

    Returns:
        The residual module.

    Raises:
        ValueError: unknown ``kind`` or invalid ``dim``/``num_layers``.
    """
    for name, value in (("dim", dim), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if kind == "plain":
        return PlainResidual(**kw)
    if kind == "fixed":
        return FixedScaleResidual(**kw)
    if kind == "rezero":
        return ReZeroResidual(**kw)
    if kind == "layerscale":
        return LayerScaleResidual(dim, **kw)
    if kind == "deepnorm":
        return DeepNormResidual(dim, num_layers, **kw)
    if kind == "admin":
        return AdminResidual(dim, 2 * num_layers, **kw)
    if kind == "aion":
        return AionResidual(**kw)
    if kind == "aion_reference":
        return AionResidual(mode="reference", **kw)
    if kind == "aion_fixed":
        for bad in ("beta", "trainable"):
            if bad in kw:
                raise ValueError(f"aion_fixed sets {bad} itself; got {bad}={kw[bad]!r}")
        return AionResidual(beta=0.0, trainable=("alpha0",), **kw)
    raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {kind!r}")
