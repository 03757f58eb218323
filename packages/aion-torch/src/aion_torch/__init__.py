"""aion-torch: AION adaptive residual scaling ``x + α·y``, α from the energies of x and y.

Sync-free and ``torch.compile``-clean by default, with a ``reference`` mode that reproduces the
aion-torch 1.0.x numerics and, in :mod:`aion_torch.residuals`, the peer residuals (plain, fixed
scale, ReZero, LayerScale, DeepNorm, Admin) behind the same ``forward(x, y, x_norm=None)``.
"""

from aion_torch import residuals
from aion_torch._block import AionBlock
from aion_torch._functional import compute_alpha, energy
from aion_torch._params import aion_parameters, param_groups, weight_decay_param_groups
from aion_torch._residual import AionResidual
from aion_torch._sync import sync_stats

__version__ = "0.1.0"

__all__ = [
    "AionBlock",
    "AionResidual",
    "__version__",
    "aion_parameters",
    "compute_alpha",
    "energy",
    "param_groups",
    "residuals",
    "sync_stats",
    "weight_decay_param_groups",
]
