"""The INL controller: a per-token MLP from [h, x, v] to the raw coefficients of one step.

``[h, x, v] (3D) → Linear → ReLU → Linear → k·D`` raw outputs (a, b, c[, u]) per channel. The
context h does not change over the iterations, so its projection is computed once per forward
(:meth:`INLController.context`) and each step only multiplies [x, v]; this is the same function as
one Linear on the concatenation. :class:`SharedINLController` is the same module owned by a model
and called by every layer (spec §3.1, "shared controller"); each layer then applies its own FiLM.

This file is copied next to a saved checkpoint, so it imports torch and relative modules only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .functional import logit
from .inl_config import INLConfig, as_inl_config

__all__ = ["INLController", "SharedINLController"]


class INLController(nn.Module):
    """Per-token controller ``[h, x, v] → H → ReLU → k·D`` (k = 3, or 4 for the full variant).

    Args:
        config: the layer options; uses d_model, controller_hidden, variant, compat and the
            initial coefficients.
    """

    def __init__(self, config: INLConfig) -> None:
        super().__init__()
        config = as_inl_config(config, type(self).__name__)
        self.config = config
        d, hidden, k = config.d_model, config.controller_hidden, config.num_coefficients
        self.in_h = nn.Linear(d, hidden, bias=True)
        self.in_xv = nn.Linear(2 * d, hidden, bias=False)
        self.out = nn.Linear(hidden, k * d, bias=True)
        for m in (self.in_h, self.in_xv, self.out):
            m._inl_owned = True  # type: ignore[assignment]  # a model's _init_weights leaves these alone
        self.reset_parameters()

    @staticmethod
    def expected_num_parameters(config: INLConfig) -> int:
        """Closed-form parameter count: ``D·H + H + 2D·H + H·kD + kD``."""
        d, hidden, k = config.d_model, config.controller_hidden, config.num_coefficients
        return 3 * d * hidden + hidden + hidden * k * d + k * d

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as spec §3.1, or as the shipped layer with ``compat="reference"``.

        Default: Xavier-uniform input maps with zero bias (so a zero input gives a zero hidden
        layer), output weights N(0, 0.01), output biases chosen so that a zero input yields α₀, p₀,
        g₀ and u = 0. Reference: PyTorch's default Linear init of the shipped ``Linear(3D → H)``
        (uniform ±1/√(3D) for the input weights and bias) and ``Linear(H → 3D)`` (±1/√H).
        """
        cfg = self.config
        d, hidden = cfg.d_model, cfg.controller_hidden
        if cfg.compat == "reference":
            bound = 1.0 / math.sqrt(3 * d)
            for w in (self.in_h.weight, self.in_xv.weight, self.in_h.bias):
                nn.init.uniform_(w, -bound, bound)
            bound = 1.0 / math.sqrt(hidden)
            nn.init.uniform_(self.out.weight, -bound, bound)
            nn.init.uniform_(self.out.bias, -bound, bound)
            return
        # Xavier-uniform of the (H, 3D) map, applied to its two column blocks.
        bound = math.sqrt(6.0 / (3 * d + hidden))
        nn.init.uniform_(self.in_h.weight, -bound, bound)
        nn.init.uniform_(self.in_xv.weight, -bound, bound)
        nn.init.zeros_(self.in_h.bias)
        nn.init.normal_(self.out.weight, 0.0, 0.01)
        bias = self.out.bias.view(cfg.num_coefficients, d)
        bias[0].fill_(logit(cfg.init_alpha / cfg.alpha_max))
        bias[1].fill_(logit(cfg.init_p / (2.0 * (1.0 + cfg.init_alpha) * cfg.p_margin)))
        bias[2].fill_(logit(cfg.init_g))
        if cfg.num_coefficients == 4:
            bias[3].zero_()

    def context(self, h: Tensor) -> Tensor:
        """Project the context once per forward: (..., D) → (..., H)."""
        context: Tensor = self.in_h(h)
        return context

    def forward(self, context: Tensor, x: Tensor, v: Tensor) -> Tensor:
        """Raw outputs of one step.

        Args:
            context: :meth:`context` of h, (..., H).
            x: state, (..., D).
            v: velocity, (..., D).

        Returns:
            (..., k, D): the raw a, b, c[, u] along dimension −2.
        """
        hidden = torch.relu(context + self.in_xv(torch.cat([x, v], dim=-1)))
        raw: Tensor = self.out(hidden)
        return raw.view(*raw.shape[:-1], self.config.num_coefficients, self.config.d_model)


class SharedINLController(INLController):
    """One controller for a whole model, called by every :class:`~inl_llm.INLLayer` built with it.

    The model owns it (registers it once, so its parameters appear once in ``state_dict`` and in
    the optimiser); layers hold it by reference and modulate its raw outputs with per-layer FiLM
    parameters. Build it with the same :class:`~inl_llm.INLConfig` as the layers.
    """
