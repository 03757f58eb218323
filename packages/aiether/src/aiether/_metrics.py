"""Trajectory statistics τ (tortuosity) and κ (effective curvature) of one tensor's weight path.

For snapshots ``W_0 … W_{S−1}`` with velocities ``V_t = W_t − W_{t−1}`` (``T = S − 1`` of them),
``Δ = W_{S−1} − W_0`` and ``ε = 1e-8`` (Frobenius norms throughout):

- ``τ = Σ_t ‖V_t‖ / (‖Δ‖ + ε)``: path length over displacement, 1 on a straight line, ≈ √T for a
  random walk; defined as 1 when S < 2;
- ``κ = Σ_t ‖V_t^⊥‖ / (Σ_t |⟨V_t, Δ̂⟩| + ε)`` with ``Δ̂ = Δ / ‖Δ‖``: motion across the net
  displacement over motion along it, 0 on a straight line, ≈ √(T − 1) for a random walk; defined
  as 0 when S < 3 or ‖Δ‖ < ε.

Everything follows from the T×T velocity Gram ``G_st = ⟨V_s, V_t⟩``: ``‖V_t‖ = √G_tt``,
``‖Δ‖² = 1ᵀG1``, ``⟨V_t, Δ̂⟩ = (G1)_t / ‖Δ‖``, ``‖V_t^⊥‖² = G_tt − ⟨V_t, Δ̂⟩²``. (The original
divides by ``‖Δ‖ + ε`` inside Δ̂ too; Δ̂ is then not a unit vector and a straight line gets a
spurious κ ≈ √(2ε/‖Δ‖). The ``reference`` operator keeps that form.) The Gram is
what a sharded tensor reduces (a sum of local Grams), and it is tiny. The window-normalised values
``τ̃ = τ/√T`` and ``κ̃ = κ/√(T − 1)`` are ≈ 1 for pure noise whatever the window, which is what
makes one threshold meaningful for every window length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EPS = 1e-8


def velocity_gram(history: Tensor) -> Tensor:
    """The Gram of the velocities of a snapshot history.

    Args:
        history: ``(S, D)`` snapshots in time order (any float dtype).

    Returns:
        ``(S − 1, S − 1)`` Gram ``V Vᵀ`` in the history's dtype, promoted to at least float32.
    """
    dtype = torch.promote_types(history.dtype, torch.float32)
    h = history.to(dtype)
    v = h[1:] - h[:-1]
    return v @ v.T


def gram_tau_kappa(gram: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """τ and κ from a ``(T, T)`` velocity Gram, as 0-d tensors on the Gram's device (no host sync).

    ``T = 0`` (one snapshot) gives τ = 1, κ = 0; ``T = 1`` gives κ = 0. κ is 0 when ‖Δ‖ < ε.
    """
    t = gram.shape[0]
    one = torch.ones((), dtype=gram.dtype, device=gram.device)
    if t == 0:
        return one, torch.zeros_like(one)
    diag = torch.diagonal(gram).clamp_min(0)
    row = gram.sum(dim=1)  # (G1)_t = ⟨V_t, Δ⟩
    delta_norm = gram.sum().clamp_min(0).sqrt()
    tau = diag.sqrt().sum() / (delta_norm + eps)
    if t < 2:
        return tau, torch.zeros_like(one)
    along = row / delta_norm.clamp_min(eps)
    across = (diag - along.square()).clamp_min(0).sqrt()
    kappa = across.sum() / (along.abs().sum() + eps)
    kappa = torch.where(delta_norm < eps, torch.zeros_like(kappa), kappa)
    return tau, kappa


def normalise_tau_kappa(tau: Tensor, kappa: Tensor, num_velocities: int) -> tuple[Tensor, Tensor]:
    """τ̃ = τ/√T and κ̃ = κ/√(T − 1): ≈ 1 for a random walk at any window length T ≥ 2."""
    t = max(num_velocities, 1)
    return tau / math.sqrt(t), kappa / math.sqrt(max(t - 1, 1))
