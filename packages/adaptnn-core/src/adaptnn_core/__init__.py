"""adaptnn-core: shared numerics for the adaptnn libraries.

fp32 energy statistics with masks and a NaN-safe EMA, batched Newton–Schulz orthogonalisation,
and thin torch.distributed helpers (the public submodule :mod:`adaptnn_core.dist`, also
re-exported here). Pure PyTorch; importing it does not initialise CUDA.
"""

from adaptnn_core import dist
from adaptnn_core._ema import EMATracker, ema_update_
from adaptnn_core._energy import energy_ratio, masked_mean, masked_sum_count, mean_square, rms
from adaptnn_core._orth import (
    KELLER_COEFFICIENTS,
    POLAR_EXPRESS_COEFFICIENTS,
    matrix_shape,
    newton_schulz,
    newton_schulz_flops,
    orthogonalize,
)
from adaptnn_core._precision import keep_fp32
from adaptnn_core.dist import (
    all_reduce_,
    all_reduce_coalesced_,
    broadcast_,
    is_initialized,
    rank,
    world_size,
)

__version__ = "0.1.0"

__all__ = [
    "KELLER_COEFFICIENTS",
    "POLAR_EXPRESS_COEFFICIENTS",
    "EMATracker",
    "__version__",
    "all_reduce_",
    "all_reduce_coalesced_",
    "broadcast_",
    "dist",
    "ema_update_",
    "energy_ratio",
    "is_initialized",
    "keep_fp32",
    "masked_mean",
    "masked_sum_count",
    "matrix_shape",
    "mean_square",
    "newton_schulz",
    "newton_schulz_flops",
    "orthogonalize",
    "rank",
    "rms",
    "world_size",
]
