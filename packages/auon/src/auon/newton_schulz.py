"""``zeropower_via_newtonschulz5``: the original package's name for quintic Newton–Schulz."""

from __future__ import annotations

import torch
from torch import Tensor

from adaptnn_core import newton_schulz

__all__ = ["zeropower_via_newtonschulz5"]


def zeropower_via_newtonschulz5(G: Tensor, steps: int = 5) -> Tensor:
    """Approximate orthogonalisation ``≈ UVᵀ`` of ``G`` (KellerJordan/Muon), bf16 result.

    Alias of ``adaptnn_core.newton_schulz(G, steps, coefficients="keller",
    compute_dtype=torch.bfloat16, out_dtype=torch.bfloat16)``.

    Args:
        G: Tensor ``(..., m, n)`` batched over leading dims.
        steps: Number of quintic steps in ``[1, 99]``.

    Returns:
        bf16 tensor ``(..., m, n)`` with singular values in ≈[0.68, 1.13].
    """
    return newton_schulz(
        G, steps, coefficients="keller", compute_dtype=torch.bfloat16, out_dtype=torch.bfloat16
    )
