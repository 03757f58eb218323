"""`INLLayer`: the integrator-neuron layer, an iterated damped second-order update per token.

From x₀ (the normalised residual stream) and v₀ = 0, each of T steps recomputes the coefficients
from [h, x, v] with a small controller and applies (spec §3.1; ``functional.inl_step``)

    v ← α⊙v + (1 − α)⊙v_cand − β⊙(x − μ) [+ excitation],     x ← x + dt·g⊙v,

with α, p = dt·g·β kept inside the frozen-coefficient stability region (|α| < 1,
0 < p < 2(1 + α)). The layer returns ``gate⊙(x_T − x₀)``, a per-channel gated *update* that is
exactly zero at initialisation (``compat="reference"`` returns x_T as the original did).

Two execution paths: a fixed number of steps (no data-dependent control flow, compiles with
``fullgraph=True``), and per-token halting (``halting="threshold"``), which iterates only the tokens
that are still moving, gathered into a compact batch, so halted tokens cost nothing and each
token's result does not depend on the rest of its batch (eager: its shapes are data-dependent).

This file is copied next to a saved checkpoint, so it imports torch and relative modules only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .functional import inl_step, reference_coefficients, stable_coefficients
from .inl_config import INLConfig, as_inl_config
from .inl_controller import INLController, SharedINLController

__all__ = ["INLConfig", "INLLayer", "INLStats", "SharedINLController"]

# The halting statistic ‖x_t − x_{t−1}‖ / (‖x₀‖ + eps): a step measured against the token's input.
# Spec §3.1 divides by ‖x_{t−1}‖ instead; that ratio is constant while x decays geometrically to
# μ ≈ 0 (step/state = 1 − ρ), so it tests the contraction rate, not convergence, and a threshold
# either halts every token after the first step or none (docs/results/inl-llm/halting.md at
# d988be5: 0.07–0.17 at every t ≤ 8). Against the fixed ‖x₀‖ the step shrinks like ρ^t.
_NORM_EPS = 1e-6


@dataclass
class INLStats:
    """Per-token statistics of one INL forward (on the device; read them when you choose).

    Attributes:
        iterations: steps each token ran, (B, S) int64 (0 for tokens masked out).
        step_norm: the token's last relative step ‖x_t − x_{t−1}‖ / (‖x₀‖ + 1e-6), (B, S).
        trajectory: the states x₀ … x_T, (T + 1, B, S, D), only with ``return_trajectory=True``.
    """

    iterations: Tensor
    step_norm: Tensor
    trajectory: Tensor | None = None


class INLLayer(nn.Module):
    """The integrator-neuron layer (spec §3.1).

    Args:
        config: the layer options.
        shared: the model's :class:`SharedINLController`, required when
            ``config.controller_scope == "shared"`` and refused otherwise. The layer keeps it by
            reference (not as a submodule), so its parameters belong to the owner only.

    Example:
        >>> layer = INLLayer(INLConfig(d_model=16))
        >>> x0, h = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        >>> bool((layer(x0, h) == 0).all())  # a zero update at initialisation
        True
    """

    excite_index: Tensor

    def __init__(self, config: INLConfig, shared: SharedINLController | None = None) -> None:
        super().__init__()
        config = as_inl_config(config, "INLLayer")
        self.config = config
        d, k = config.d_model, config.num_coefficients
        if config.controller_scope == "shared":
            if not isinstance(shared, SharedINLController):
                raise ValueError(
                    "INLLayer: controller_scope='shared' needs shared=SharedINLController(config), "
                    f"got {type(shared).__name__}"
                )
            sc = shared.config
            if (sc.d_model, sc.controller_hidden, sc.num_coefficients, sc.compat) != (
                d,
                config.controller_hidden,
                k,
                config.compat,
            ):
                raise ValueError(
                    "INLLayer: the shared controller was built for "
                    f"(d_model={sc.d_model}, controller_hidden={sc.controller_hidden}, "
                    f"variant={sc.variant!r}, compat={sc.compat!r}); this layer has "
                    f"(d_model={d}, controller_hidden={config.controller_hidden}, "
                    f"variant={config.variant!r}, compat={config.compat!r})"
                )
            self.controller: INLController | None = None
            # Not registered: the owner's state_dict and optimiser hold its parameters once.
            object.__setattr__(self, "_shared", shared)
            self.film_scale = nn.Parameter(torch.empty(k))
            self.film_bias = nn.Parameter(torch.empty(k))
        else:
            if shared is not None:
                raise ValueError(
                    "INLLayer: shared= was given but config.controller_scope is 'layer'; "
                    "use INLConfig(controller_scope='shared', ...)"
                )
            self.controller = INLController(config)
            object.__setattr__(self, "_shared", None)
        if config.mu_mode == "group":
            self.mu_global = nn.Parameter(torch.empty(1))
            self.mu_offsets = nn.Parameter(torch.empty(config.num_groups))
        else:
            self.mu = nn.Parameter(torch.empty(d))
        if config.compat != "reference":
            self.gate = nn.Parameter(torch.empty(d))
        n = config.num_excited
        if n:
            # ⌊sparsity·D⌋ channels evenly spaced over [0, D): j·D // n.
            self.register_buffer("excite_index", torch.arange(n) * d // n, persistent=True)
            self.excite_gamma = nn.Parameter(torch.empty(n))
            self.excite_phase = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    @staticmethod
    def expected_num_parameters(config: INLConfig) -> int:
        """Parameters the layer registers itself (its own controller, or FiLM when shared)."""
        d, k = config.d_model, config.num_coefficients
        n = (
            INLController.expected_num_parameters(config)
            if config.controller_scope == "layer"
            else 2 * k
        )
        n += 1 + config.num_groups if config.mu_mode == "group" else d
        n += 0 if config.compat == "reference" else d
        return n + 2 * config.num_excited

    @property
    def shared_controller(self) -> SharedINLController | None:
        """The model's shared controller this layer calls, or None."""
        shared: SharedINLController | None = self.__dict__["_shared"]
        return shared

    def controller_parameters(self) -> Iterator[nn.Parameter]:
        """The layer's own controller parameters (none when the controller is shared)."""
        if self.controller is not None:
            yield from self.controller.parameters()

    def other_parameters(self) -> Iterator[nn.Parameter]:
        """The layer's parameters outside its controller: gate, μ, FiLM, excitation."""
        owned = {id(p) for p in self.controller_parameters()}
        for p in self.parameters():
            if id(p) not in owned:
                yield p

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise: μ = 0, gate = ``output_gate_init``, FiLM identity, seeded excitation."""
        cfg = self.config
        if self.controller is not None:
            self.controller.reset_parameters()
        else:
            self.film_scale.fill_(1.0)
            self.film_bias.zero_()
        if cfg.mu_mode == "group":
            self.mu_global.zero_()
            self.mu_offsets.zero_()
        else:
            self.mu.zero_()
        if cfg.compat != "reference":
            self.gate.fill_(cfg.output_gate_init)
        n = cfg.num_excited
        if n:
            gen = torch.Generator().manual_seed(cfg.excitation_seed)
            gamma = 1.0 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
            phase = 2.0 * torch.pi * torch.randn(n, generator=gen, dtype=torch.float64)
            self.excite_gamma.copy_(gamma)
            self.excite_phase.copy_(phase)
            self.excite_index.copy_(torch.arange(n) * cfg.d_model // n)

    def equilibrium(self) -> Tensor:
        """μ as a (D,) vector: ``mu_global + repeat_interleave(mu_offsets, group_size)[:D]``."""
        cfg = self.config
        if cfg.mu_mode == "per_dim":
            return self.mu
        offsets = self.mu_offsets.repeat_interleave(cfg.group_size)[: cfg.d_model]
        return self.mu_global + offsets

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, variant={c.variant!r}, T={c.num_iterations}, "
            f"controller={c.controller_scope!r}, halting={c.halting!r}, compat={c.compat!r}"
        )

    # ------------------------------------------------------------------ one step

    def _raw(self, context: Tensor, x: Tensor, v: Tensor) -> Tensor:
        shared = self.shared_controller
        if shared is None:
            assert self.controller is not None
            own: Tensor = self.controller(context, x, v)
            return own
        raw: Tensor = shared(context, x, v)
        return raw * self.film_scale.to(raw.dtype)[:, None] + self.film_bias.to(raw.dtype)[:, None]

    def _context(self, h: Tensor) -> Tensor:
        shared = self.shared_controller
        if shared is None:
            assert self.controller is not None
            return self.controller.context(h)
        return shared.context(h)

    def _step(
        self, x: Tensor, v: Tensor, context: Tensor, mu: Tensor, t: int
    ) -> tuple[Tensor, Tensor]:
        cfg = self.config
        raw = self._raw(context, x, v)
        a, b, c = raw[..., 0, :], raw[..., 1, :], raw[..., 2, :]
        if cfg.compat == "reference":
            alpha, beta, g = reference_coefficients(a, b, c)
        else:
            alpha, beta, g = stable_coefficients(
                a, b, c, alpha_max=cfg.alpha_max, p_margin=cfg.p_margin, dt=cfg.dt
            )
        v_cand = raw[..., 3, :] if cfg.variant == "full" else None
        drive = self._excitation(t, x) if cfg.num_excited and self.training else None
        return inl_step(x, v, mu, alpha, beta, g, cfg.dt, v_cand=v_cand, drive=drive)

    def _excitation(self, t: int, like: Tensor) -> Tensor:
        """``A·sin(γ_j t + φ_j)`` on the excited channels, zero elsewhere: (D,)."""
        values = self.config.excitation_amplitude * torch.sin(
            self.excite_gamma * float(t) + self.excite_phase
        )
        full = torch.zeros(self.config.d_model, dtype=values.dtype, device=values.device)
        return full.index_put((self.excite_index,), values).to(like.dtype)

    def _checkpointed_step(
        self, x: Tensor, v: Tensor, context: Tensor, mu: Tensor, t: int
    ) -> tuple[Tensor, Tensor]:
        if self.config.checkpoint_iterations and torch.is_grad_enabled():
            out: tuple[Tensor, Tensor] = checkpoint(
                self._step, x, v, context, mu, t, use_reentrant=False
            )
            return out
        return self._step(x, v, context, mu, t)

    def num_steps(self) -> int:
        """T for this call: ``num_iterations``, or a uniform draw in [min_iterations, T] in training
        with ``random_depth_training`` (from torch's CPU generator, so seeded ranks agree)."""
        cfg = self.config
        if self.training and cfg.random_depth_training and cfg.min_iterations < cfg.num_iterations:
            draw = torch.randint(cfg.min_iterations, cfg.num_iterations + 1, (1,))
            return int(draw)  # a CPU tensor: no device synchronisation
        return cfg.num_iterations

    # ------------------------------------------------------------------ forward

    @overload
    def forward(
        self,
        x0: Tensor,
        h: Tensor,
        *,
        mask: Tensor | None = None,
        return_stats: Literal[False] = False,
        return_trajectory: bool = False,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        x0: Tensor,
        h: Tensor,
        *,
        mask: Tensor | None = None,
        return_stats: Literal[True],
        return_trajectory: bool = False,
    ) -> tuple[Tensor, INLStats]: ...

    def forward(
        self,
        x0: Tensor,
        h: Tensor,
        *,
        mask: Tensor | None = None,
        return_stats: bool = False,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, INLStats]:
        """Run the integrator on every token.

        Args:
            x0: initial state, the normalised residual stream, (B, S, D).
            h: context (the attention output, or x0 itself when INL replaces the FFN), (B, S, D).
            mask: (B, S) bool, True for real tokens; masked tokens get a zero update and 0
                iterations (with ``compat="reference"``, their output is x₀).
            return_stats: also return :class:`INLStats`.
            return_trajectory: keep x₀ … x_T in the stats (fixed-T path only).

        Returns:
            The update ``gate⊙(x_T − x₀)`` (``compat="reference"``: x_T), (B, S, D), and the stats
            when asked.

        Raises:
            ValueError: on shapes other than (B, S, D) with D = d_model, h not shaped like x0, a
                mask not (B, S) bool, or ``return_trajectory`` with halting.
        """
        self._check_inputs(x0, h, mask)
        if return_trajectory and self.config.halting == "threshold":
            raise ValueError("INLLayer: return_trajectory needs halting='none' (the fixed-T path)")
        stats_or_none: INLStats | None
        if self.config.halting == "threshold":
            x_final, stats_or_none = self._halting_forward(x0, h, mask)
        else:
            x_final, stats_or_none = self._fixed_forward(
                x0, h, mask, return_stats, return_trajectory
            )
        out = self._output(x_final, x0, mask)
        if return_stats:
            assert stats_or_none is not None
            return out, stats_or_none
        return out

    def _output(self, x_final: Tensor, x0: Tensor, mask: Tensor | None) -> Tensor:
        if self.config.compat == "reference":
            if mask is not None:  # padding keeps its input, as in the halting path
                return torch.where(mask.unsqueeze(-1), x_final, x0)
            return x_final
        out = self.gate.to(x0.dtype) * (x_final - x0)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out

    def _check_inputs(self, x0: Tensor, h: Tensor, mask: Tensor | None) -> None:
        d = self.config.d_model
        if not isinstance(x0, Tensor) or x0.dim() != 3 or x0.shape[-1] != d:
            shape = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
            raise ValueError(f"INLLayer: x0 must be (B, S, {d}), got {shape}")
        if not isinstance(h, Tensor) or h.shape != x0.shape:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"INLLayer: h must have x0's shape {tuple(x0.shape)}, got {shape}")
        if mask is not None and (
            not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != x0.shape[:2]
        ):
            got = (
                (tuple(mask.shape), mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
            )
            raise ValueError(
                f"INLLayer: mask must be a bool (B, S) = {tuple(x0.shape[:2])}, got {got}"
            )

    def _fixed_forward(
        self,
        x0: Tensor,
        h: Tensor,
        mask: Tensor | None,
        return_stats: bool,
        return_trajectory: bool,
    ) -> tuple[Tensor, INLStats | None]:
        steps = self.num_steps()
        mu = self.equilibrium().to(x0.dtype)
        context = self._context(h)
        x, v = x0, torch.zeros_like(x0)
        x_prev = x0
        trajectory = [x0] if return_trajectory else None
        for t in range(steps):
            x_prev = x
            x, v = self._checkpointed_step(x, v, context, mu, t)
            if trajectory is not None:
                trajectory.append(x)
        if not return_stats:
            return x, None
        with torch.no_grad():
            step_norm = _relative_step(x, x_prev, _scale(x0))
            iterations = torch.full(x0.shape[:2], steps, dtype=torch.long, device=x0.device)
            if mask is not None:
                iterations = iterations * mask
                step_norm = step_norm * mask
        traj = torch.stack(trajectory) if trajectory is not None else None
        return x, INLStats(iterations=iterations, step_norm=step_norm, trajectory=traj)

    def _halting_forward(
        self, x0: Tensor, h: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, INLStats]:
        """Per-token halting on a compact batch of the still-active tokens (eager, host syncs).

        After step t (counted from 1) with t ≥ min_iterations, a token whose relative step
        ‖x_t − x_{t−1}‖ / (‖x₀‖ + 1e-6) is below
        ``halt_eps`` stops: its state is final and it leaves the batch. Each step's controller runs
        on the active tokens only.
        """
        cfg = self.config
        batch, seq, d = x0.shape
        steps = self.num_steps()
        mu = self.equilibrium().to(x0.dtype)
        flat_x0 = x0.reshape(-1, d)
        flat_ctx = self._context(h).reshape(batch * seq, -1)
        n_tokens = batch * seq
        active = (
            torch.arange(n_tokens, device=x0.device)
            if mask is None
            else mask.reshape(-1).nonzero().squeeze(-1)
        )
        x, ctx = flat_x0.index_select(0, active), flat_ctx.index_select(0, active)
        v = torch.zeros_like(x)
        scale = _scale(x.detach())
        done_index: list[Tensor] = []
        done_x: list[Tensor] = []
        done_norm: list[Tensor] = []
        done_steps: list[Tensor] = []
        for t in range(1, steps + 1):
            if active.numel() == 0:
                break
            x_new, v = self._checkpointed_step(x, v, ctx, mu, t - 1)
            rel = _relative_step(x_new.detach(), x.detach(), scale)
            x = x_new
            if t < cfg.min_iterations or t == steps:
                continue
            halt = rel < cfg.halt_eps
            if bool(halt.any()):  # host sync: the compact batch's size is data-dependent
                keep = ~halt
                done_index.append(active[halt])
                done_x.append(x[halt])
                done_norm.append(rel[halt])
                done_steps.append(torch.full_like(active[halt], t))
                active, x, v, ctx = active[keep], x[keep], v[keep], ctx[keep]
                scale = scale[keep]
        if active.numel():
            done_index.append(active)
            done_x.append(x)
            done_norm.append(rel)
            done_steps.append(torch.full_like(active, steps))
        x_final = flat_x0
        iterations = torch.zeros(n_tokens, dtype=torch.long, device=x0.device)
        step_norm = torch.zeros(n_tokens, dtype=x0.dtype, device=x0.device)
        if done_index:
            index = torch.cat(done_index)
            x_final = flat_x0.index_put((index,), torch.cat(done_x))
            iterations = iterations.index_put((index,), torch.cat(done_steps))
            step_norm = step_norm.index_put((index,), torch.cat(done_norm).to(x0.dtype))
        stats = INLStats(
            iterations=iterations.view(batch, seq), step_norm=step_norm.view(batch, seq)
        )
        return x_final.view(batch, seq, d), stats


def _scale(x0: Tensor) -> Tensor:
    """‖x₀‖₂ + 1e-6 over the last dimension: the yardstick of the halting statistic."""
    norm: Tensor = torch.linalg.vector_norm(x0.detach(), dim=-1)
    return norm + _NORM_EPS


def _relative_step(x_new: Tensor, x_old: Tensor, scale: Tensor) -> Tensor:
    """‖x_new − x_old‖₂ / scale over the last dimension."""
    num: Tensor = torch.linalg.vector_norm(x_new - x_old, dim=-1)
    return num / scale
