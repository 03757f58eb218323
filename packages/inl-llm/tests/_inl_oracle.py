"""An independent float64 re-implementation of the INL loop from the spec's formulas (tests only).

It reads the layer's weights but none of its code: the controller is one Linear on the
concatenation [h, x, v] (the shipped form), then ReLU, then the output Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from inl_llm import INLLayer


def oracle_loop(layer: INLLayer, x0: Tensor, h: Tensor, steps: int | None = None) -> Tensor:
    """x_T of ``layer`` for every token, float64, following spec §2/§3.1 literally."""
    cfg = layer.config
    ctrl = layer.controller if layer.controller is not None else layer.shared_controller
    assert ctrl is not None
    w1 = torch.cat([ctrl.in_h.weight, ctrl.in_xv.weight], dim=1).double()
    b1 = ctrl.in_h.bias.double()
    w2, b2 = ctrl.out.weight.double(), ctrl.out.bias.double()
    k, d = cfg.num_coefficients, cfg.d_model
    if cfg.mu_mode == "group":
        mu = (
            layer.mu_global.double()
            + layer.mu_offsets.double().repeat_interleave(cfg.group_size)[:d]
        )
    else:
        mu = layer.mu.double()
    x, h = x0.double(), h.double()
    v = torch.zeros_like(x)
    for t in range(cfg.num_iterations if steps is None else steps):
        raw = F.linear(torch.relu(F.linear(torch.cat([h, x, v], -1), w1, b1)), w2, b2)
        raw = raw.unflatten(-1, (k, d))
        if layer.controller is None:
            raw = raw * layer.film_scale.double()[:, None] + layer.film_bias.double()[:, None]
        a, b, c = raw[..., 0, :], raw[..., 1, :], raw[..., 2, :]
        if cfg.compat == "reference":
            alpha, beta, g = torch.sigmoid(a), F.softplus(b), torch.sigmoid(c)
        else:
            alpha = cfg.alpha_max * torch.sigmoid(a)
            g = torch.sigmoid(c)
            p = 2 * (1 + alpha) * cfg.p_margin * torch.sigmoid(b)
            beta = p / (cfg.dt * torch.clamp(g, min=1e-4))
        v = alpha * v - beta * (x - mu)
        if cfg.variant == "full":
            v = v + (1 - alpha) * raw[..., 3, :]
        if cfg.num_excited and layer.training:
            idx = layer.excite_index
            drive = cfg.excitation_amplitude * torch.sin(
                layer.excite_gamma.double() * t + layer.excite_phase.double()
            )
            v[..., idx] = v[..., idx] + drive
        x = x + cfg.dt * g * v
    return x
