"""The INL update as pure functions: coefficient maps, one integrator step, and its linear theory.

Per channel, with error e = x − μ, the layer iterates

    v ← α v + (1 − α) v_cand − β e,        x ← x + dt·g·v.

For coefficients frozen at (α, β, g) the map (e, v) ↦ (e', v') is linear with the iteration matrix
``M = [[1 − p, dt·g·α], [−β, α]]``, p = dt·g·β, whose trace is 1 + α − p and determinant α. It is
Schur-stable (spectral radius < 1) iff |α| < 1 and 0 < p < 2(1 + α) (the Jury conditions for a
2 × 2 real matrix); :func:`stable_coefficients` emits only such coefficients. None of this bounds the
*state-dependent* system, where α, β, g are recomputed from (h, x, v) at every step.

This file is copied next to a saved checkpoint (``inl_layer.py`` imports it relatively), so it
imports torch only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "coefficients",
    "fixed_point",
    "inl_step",
    "iteration_matrix",
    "reference_coefficients",
    "spectral_radius",
    "stable_coefficients",
]

# g is bounded below in β = p / (dt·g) so that β stays finite when σ(c) underflows.
G_FLOOR = 1e-4


def stable_coefficients(
    a: Tensor, b: Tensor, c: Tensor, *, alpha_max: float, p_margin: float, dt: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Map raw controller outputs to coefficients inside the stability region (spec §3.1).

    ``α = alpha_max·σ(a)``, ``g = σ(c)``, ``p = 2(1 + α)·p_margin·σ(b)``, ``β = p / (dt·max(g, 1e-4))``,
    so that |α| < 1 and 0 < dt·g·β < 2(1 + α) for every input (g ≥ 1e-4; below, dt·g·β < p).

    Args:
        a, b, c: raw outputs, any shape (broadcastable to each other).
        alpha_max: bound on α, in (0, 1).
        p_margin: fraction of the bound 2(1 + α) used, in (0, 1].
        dt: integrator step.

    Returns:
        (α, β, g), each of the broadcast shape.
    """
    alpha = alpha_max * torch.sigmoid(a)
    g = torch.sigmoid(c)
    p = (2.0 * p_margin) * (1.0 + alpha) * torch.sigmoid(b)
    beta = p / (dt * g.clamp_min(G_FLOOR))
    return alpha, beta, g


def reference_coefficients(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The shipped activations: ``α = σ(a)``, ``β = softplus(b)`` (unbounded), ``g = σ(c)``."""
    return torch.sigmoid(a), F.softplus(b), torch.sigmoid(c)


def inl_step(
    x: Tensor,
    v: Tensor,
    mu: Tensor,
    alpha: Tensor,
    beta: Tensor,
    g: Tensor,
    dt: float,
    v_cand: Tensor | None = None,
    drive: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One integrator step: ``v' = α v + (1 − α) v_cand − β (x − μ) + drive``, ``x' = x + dt·g·v'``.

    Args:
        x, v: state and velocity, (..., D).
        mu: equilibrium, broadcastable to x.
        alpha, beta, g: coefficients, broadcastable to x.
        dt: step size.
        v_cand: candidate velocity of the full variant (None: the hierarchical update).
        drive: an additive term on v' (the excitation), broadcastable to x.

    Returns:
        (x', v').
    """
    v_new = alpha * v - beta * (x - mu)
    if v_cand is not None:
        v_new = v_new + (1.0 - alpha) * v_cand
    if drive is not None:
        v_new = v_new + drive
    return x + dt * g * v_new, v_new


def coefficients(alpha: Tensor, beta: Tensor, g: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """The closed form of the hierarchical update from v₀ = 0: ``e_t = c_t·e₀`` and ``v_t = d_t·e₀``.

    ``c₀ = 1``, ``d₀ = 0``, ``d_{t+1} = α_t d_t − β_t c_t``, ``c_{t+1} = c_t + dt·g_t·d_{t+1}``; hence
    ``x_T = μ + c_T·(x₀ − μ)``: with v₀ = 0 the hierarchical layer is an elementwise rescaling of
    x₀ − μ by a data-gated factor.

    Args:
        alpha, beta, g: per-step coefficients, (T, ...) (step t uses index t).
        dt: step size.

    Returns:
        (c, d), each (T + 1, ...), with c[0] = 1 and d[0] = 0.
    """
    if not alpha.shape == beta.shape == g.shape or alpha.dim() < 1:
        raise ValueError(
            "coefficients: alpha, beta and g must share one shape (T, ...), got "
            f"{tuple(alpha.shape)}, {tuple(beta.shape)}, {tuple(g.shape)}"
        )
    c = [torch.ones_like(alpha[0])]
    d = [torch.zeros_like(alpha[0])]
    for t in range(alpha.shape[0]):
        d_next = alpha[t] * d[-1] - beta[t] * c[-1]
        c.append(c[-1] + dt * g[t] * d_next)
        d.append(d_next)
    return torch.stack(c), torch.stack(d)


def iteration_matrix(alpha: Tensor, beta: Tensor, g: Tensor, dt: float) -> Tensor:
    """The frozen-coefficient iteration matrix ``M = [[1 − p, dt·g·α], [−β, α]]`` acting on (e, v).

    Args:
        alpha, beta, g: coefficients of one shape (...).
        dt: step size.

    Returns:
        (..., 2, 2).
    """
    p = dt * g * beta
    top = torch.stack([1.0 - p, dt * g * alpha], dim=-1)
    bottom = torch.stack([-beta, alpha], dim=-1)
    return torch.stack([top, bottom], dim=-2)


def spectral_radius(alpha: Tensor, beta: Tensor, g: Tensor, dt: float) -> Tensor:
    """ρ(M) of :func:`iteration_matrix`, from float64 eigenvalues; shape (...)."""
    m = iteration_matrix(alpha.double(), beta.double(), g.double(), dt)
    rho: Tensor = torch.linalg.eigvals(m).abs().amax(dim=-1)
    return rho


def fixed_point(mu: Tensor, alpha: Tensor, beta: Tensor, v_cand: Tensor) -> Tensor:
    """The equilibrium of the full variant for frozen coefficients: ``x* = μ + (1 − α)·v_cand / β``.

    At x*, v* = 0 would need the v update to vanish: ``0 = (1 − α) v_cand − β (x* − μ)``.
    """
    return mu + (1.0 - alpha) * v_cand / beta


def logit(p: float) -> float:
    """The inverse of the logistic function, for initial output biases (p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"logit: p must lie in (0, 1), got {p!r}")
    return math.log(p) - math.log1p(-p)
