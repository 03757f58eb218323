"""auon: the AuON optimiser (paper and repository variants), HybridAuON, a Muon baseline, helpers.

``from auon import AuON, Adam`` works as in the original package. See ``auon.matrix_param_groups``
for splitting a model between a matrix optimiser and AdamW (``auon.param_groups`` is its deprecated
old name).
"""

from auon.adam import Adam
from auon.auon_optimizer import AuON
from auon.aux_adam import AuONWithAuxAdam
from auon.functional import auon_step, brake_reference_rms, cosh_factor, rms_brake_factor
from auon.groups import build_optimizers, matrix_param_groups, param_groups
from auon.hybrid import HybridAuON
from auon.muon import Muon
from auon.newton_schulz import zeropower_via_newtonschulz5

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AuON",
    "AuONWithAuxAdam",
    "HybridAuON",
    "Muon",
    "__version__",
    "auon_step",
    "brake_reference_rms",
    "build_optimizers",
    "cosh_factor",
    "matrix_param_groups",
    "param_groups",
    "rms_brake_factor",
    "zeropower_via_newtonschulz5",
]
