"""Peer residuals of AION behind one ``forward(x, y, x_norm=None)`` interface.

Pre-norm (``post_norm = False``): :class:`PlainResidual`, :class:`FixedScaleResidual`,
:class:`ReZeroResidual`, :class:`LayerScaleResidual` (and :class:`aion_torch.AionResidual`).
Post-norm (``post_norm = True``, called as ``res(x, sublayer(x))``): :class:`DeepNormResidual`
with :func:`deepnorm_init_`, :class:`AdminResidual`. :func:`make_residual` builds any by name.
"""

from aion_torch.residuals._factory import RESIDUAL_KINDS, make_residual
from aion_torch.residuals._postnorm import AdminResidual, DeepNormResidual, deepnorm_init_
from aion_torch.residuals._scaled import (
    FixedScaleResidual,
    LayerScaleResidual,
    PlainResidual,
    ReZeroResidual,
)

__all__ = [
    "RESIDUAL_KINDS",
    "AdminResidual",
    "DeepNormResidual",
    "FixedScaleResidual",
    "LayerScaleResidual",
    "PlainResidual",
    "ReZeroResidual",
    "deepnorm_init_",
    "make_residual",
]
