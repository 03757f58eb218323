"""`INLConfig`: every option of one integrator-neuron layer, validated on construction.

This file is copied next to a saved checkpoint by ``save_pretrained`` (it is imported relatively by
``inl_layer.py``), so it imports nothing but the standard library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, is_dataclass
from typing import Literal, get_args

Variant = Literal["hierarchical", "full"]
ControllerScope = Literal["layer", "shared"]
MuMode = Literal["group", "per_dim"]
Halting = Literal["none", "threshold"]
Excitation = Literal["none", "sparse"]
Compat = Literal["none", "reference"]

_CHOICES: dict[str, object] = {
    "variant": Variant,
    "controller_scope": ControllerScope,
    "mu_mode": MuMode,
    "halting": Halting,
    "excitation": Excitation,
    "compat": Compat,
}


@dataclass(frozen=True, kw_only=True)
class INLConfig:
    """Options of an :class:`~inl_llm.INLLayer` (spec §3.1).

    Attributes:
        d_model: width D of the state x, the velocity v and the context h.
        variant: ``"hierarchical"`` (the update the original LM used: ``v ← α v − β (x − μ)``) or
            ``"full"`` (adds the ``(1 − α) v_cand`` term of the model card, and excitation).
        num_iterations: T, the number of integrator steps.
        dt: the step size of ``x ← x + dt·g·v``.
        controller_hidden: width of the controller's hidden layer.
        controller_scope: ``"layer"`` (each layer owns its controller) or ``"shared"`` (one
            :class:`~inl_llm.SharedINLController` for the whole model, FiLM per layer).
        mu_mode: ``"group"`` (a scalar plus one offset per ``group_size`` channels) or
            ``"per_dim"`` (a vector).
        group_size: channels per μ offset in ``"group"`` mode.
        alpha_max: the bound on the momentum coefficient, ``α = alpha_max·σ(a)`` ∈ (0, alpha_max).
        p_margin: the fraction of the stability bound used, ``p = 2(1 + α)·p_margin·σ(b)``.
        init_alpha: α₀ emitted for a zero controller input.
        init_g: the gate g₀ emitted for a zero controller input.
        init_damping: ``"critical"`` (p₀ = (1 − √α₀)²) or a float p₀.
        output_gate_init: initial value of the per-channel output gate (0: a zero update).
        halting: ``"threshold"`` halts each token once its step ‖x_t − x_{t−1}‖, relative to
            its input ‖x₀‖, is below ``halt_eps``.
        halt_eps: the threshold of halting on ‖x_t − x_{t−1}‖ / (‖x₀‖ + 1e-6).
        min_iterations: iterations every token runs before it may halt.
        random_depth_training: in training, sample T uniformly in [min_iterations, T] per call.
        excitation: ``"sparse"`` adds ``A·sin(γ_j t + φ_j)`` to v on a few channels in training
            (full variant only).
        excitation_amplitude: A.
        excitation_sparsity: the fraction of channels excited, ⌊sparsity·D⌋ evenly spaced.
        excitation_seed: seed of the initial γ ~ N(1, 0.1²) and φ ~ N(0, (2π)²).
        checkpoint_iterations: recompute each iteration in the backward pass (saves memory).
        compat: ``"reference"`` reproduces the shipped hierarchical layer's numerics (σ/softplus
            activations, PyTorch default init, output x_T instead of a gated update).
    """

    d_model: int
    variant: Variant = "hierarchical"
    num_iterations: int = 5
    dt: float = 0.1
    controller_hidden: int = 64
    controller_scope: ControllerScope = "layer"
    mu_mode: MuMode = "group"
    group_size: int = 64
    alpha_max: float = 0.95
    p_margin: float = 0.9
    init_alpha: float = 0.5
    init_g: float = 0.5
    init_damping: Literal["critical"] | float = "critical"
    output_gate_init: float = 0.0
    halting: Halting = "none"
    halt_eps: float = 1e-3
    min_iterations: int = 1
    random_depth_training: bool = False
    excitation: Excitation = "none"
    excitation_amplitude: float = 0.03
    excitation_sparsity: float = 0.1
    excitation_seed: int = 42
    checkpoint_iterations: bool = False
    compat: Compat = "none"

    def __post_init__(self) -> None:
        for name, kind in _CHOICES.items():
            value = getattr(self, name)
            if value not in get_args(kind):
                raise ValueError(f"INLConfig.{name} must be one of {get_args(kind)}, got {value!r}")
        _positive_int("d_model", self.d_model)
        _positive_int("num_iterations", self.num_iterations)
        _positive_int("controller_hidden", self.controller_hidden)
        _positive_int("group_size", self.group_size)
        if not isinstance(self.min_iterations, int) or self.min_iterations < 1:
            raise ValueError(
                f"INLConfig.min_iterations must be an int >= 1, got {self.min_iterations!r}"
            )
        if self.min_iterations > self.num_iterations:
            raise ValueError(
                f"INLConfig.min_iterations ({self.min_iterations}) must not exceed "
                f"num_iterations ({self.num_iterations})"
            )
        if not (isinstance(self.dt, int | float) and math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"INLConfig.dt must be a finite float > 0, got {self.dt!r}")
        if not 0.0 < self.alpha_max < 1.0:
            raise ValueError(f"INLConfig.alpha_max must lie in (0, 1), got {self.alpha_max!r}")
        if not 0.0 < self.p_margin <= 1.0:
            raise ValueError(f"INLConfig.p_margin must lie in (0, 1], got {self.p_margin!r}")
        if not 0.0 < self.init_alpha < self.alpha_max:
            raise ValueError(
                f"INLConfig.init_alpha must lie in (0, alpha_max={self.alpha_max}), got {self.init_alpha!r}"
            )
        if not 0.0 < self.init_g < 1.0:
            raise ValueError(f"INLConfig.init_g must lie in (0, 1), got {self.init_g!r}")
        if self.init_damping != "critical":
            if not isinstance(self.init_damping, int | float) or isinstance(
                self.init_damping, bool
            ):
                raise ValueError(
                    f"INLConfig.init_damping must be 'critical' or a float, got {self.init_damping!r}"
                )
            bound = 2.0 * (1.0 + self.init_alpha) * self.p_margin
            if not 0.0 < self.init_damping < bound:
                raise ValueError(
                    f"INLConfig.init_damping must lie in (0, 2(1 + init_alpha)·p_margin = {bound:.6g}), "
                    f"got {self.init_damping!r}"
                )
        if not math.isfinite(self.output_gate_init):
            raise ValueError(
                f"INLConfig.output_gate_init must be finite, got {self.output_gate_init!r}"
            )
        if not (math.isfinite(self.halt_eps) and self.halt_eps > 0):
            raise ValueError(
                f"INLConfig.halt_eps must be a finite float > 0, got {self.halt_eps!r}"
            )
        if not (math.isfinite(self.excitation_amplitude) and self.excitation_amplitude >= 0):
            raise ValueError(
                f"INLConfig.excitation_amplitude must be finite and >= 0, got {self.excitation_amplitude!r}"
            )
        if not 0.0 < self.excitation_sparsity <= 1.0:
            raise ValueError(
                f"INLConfig.excitation_sparsity must lie in (0, 1], got {self.excitation_sparsity!r}"
            )
        if self.excitation == "sparse" and self.variant != "full":
            raise ValueError("INLConfig.excitation='sparse' needs variant='full' (spec §3.1)")
        if self.compat == "reference" and self.variant != "hierarchical":
            raise ValueError(
                "INLConfig.compat='reference' reproduces the shipped LM layer, which is the "
                "hierarchical variant; got variant='full'"
            )

    @property
    def num_coefficients(self) -> int:
        """Raw controller outputs per channel: (a, b, c) or (a, b, c, u) for the full variant."""
        return 4 if self.variant == "full" else 3

    @property
    def num_groups(self) -> int:
        """Number of μ offsets in ``"group"`` mode, ⌈D / group_size⌉."""
        return -(-self.d_model // self.group_size)

    @property
    def num_excited(self) -> int:
        """Channels that receive excitation, ⌊sparsity·D⌋ (0 when excitation is off)."""
        if self.excitation == "none":
            return 0
        return int(self.excitation_sparsity * self.d_model)

    @property
    def init_p(self) -> float:
        """p₀ = dt·g₀·β₀, the damping product emitted for a zero controller input."""
        if self.init_damping == "critical":
            return (1.0 - math.sqrt(self.init_alpha)) ** 2
        return float(self.init_damping)


def as_inl_config(config: object, owner: str) -> INLConfig:
    """``config`` as an :class:`INLConfig` of this module.

    Under ``trust_remote_code`` transformers loads the configuration and the modelling files into
    separate module folders, so the configuration's ``INLConfig`` is a different class from the
    one the layer imports; a dataclass named ``INLConfig`` is re-created field by field.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(config, INLConfig):
        return config
    if (
        type(config).__name__ == "INLConfig"
        and is_dataclass(config)
        and not isinstance(config, type)
    ):
        return INLConfig(**asdict(config))
    raise TypeError(f"{owner}: config must be an INLConfig, got {type(config).__name__}")


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"INLConfig.{name} must be an int >= 1, got {value!r}")
