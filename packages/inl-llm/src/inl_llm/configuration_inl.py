"""`INLLLMConfig`: the Hugging Face configuration of the INL causal language model (spec §3.2).

It keeps the field names and defaults of the original ``INLLLMConfig`` (``d_model``,
``num_layers``, ``num_iterations_per_layer``, …) and exposes the standard transformers names
through ``attribute_map`` (``config.hidden_size is config.d_model``). The original's descriptive
strings (``integrator_type``, ``controller_type``, ``equilibrium_type``, ``excitation_type``) still
load and are dropped: they described nothing the code used.

This file is copied next to a saved checkpoint by ``save_pretrained`` (``trust_remote_code``), so it
imports nothing but the standard library, torch, transformers and sibling modules, relatively.
"""

import math
from typing import Any, ClassVar, Literal

from transformers import PreTrainedConfig

from .inl_config import INLConfig

__all__ = ["INLLLMConfig"]

# Keys of the original config that only described the implementation; accepted and ignored.
_LEGACY_KEYS = ("integrator_type", "controller_type", "equilibrium_type", "excitation_type")

# d_model / num_layers / num_heads / num_iterations_per_layer / feedforward_dim (spec §2). "tiny" is
# ours, sized for CPU runs: 2.26 M parameters with a 6000-token BPE vocabulary (pass ``vocab_size``
# to match the tokenizer); the target is 200 training steps of 8 × 64 tokens in about a minute on
# 2 CPU cores (a target; this file makes no timing claim).
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "d_model": 128,
        "num_layers": 4,
        "num_heads": 4,
        "num_iterations_per_layer": 3,
        "feedforward_dim": 512,
        "max_seq_len": 512,
    },
    "small": {
        "d_model": 512,
        "num_layers": 6,
        "num_heads": 8,
        "num_iterations_per_layer": 5,
        "feedforward_dim": 2048,
    },
    "medium": {
        "d_model": 768,
        "num_layers": 12,
        "num_heads": 12,
        "num_iterations_per_layer": 7,
        "feedforward_dim": 3072,
    },
    "large": {
        "d_model": 1024,
        "num_layers": 24,
        "num_heads": 16,
        "num_iterations_per_layer": 10,
        "feedforward_dim": 4096,
    },
}

# INLConfig field -> the INLLLMConfig field it comes from (for error messages).
_INL_FIELDS: dict[str, str] = {
    "d_model": "d_model",
    "variant": "inl_variant",
    "num_iterations": "num_iterations_per_layer",
    "dt": "inl_dt",
    "controller_hidden": "inl_controller_hidden",
    "mu_mode": "inl_mu_mode",
    "group_size": "hierarchical_group_size",
    "alpha_max": "inl_alpha_max",
    "p_margin": "inl_p_margin",
    "output_gate_init": "inl_output_gate_init",
    "halt_eps": "adaptive_convergence_threshold",
    "min_iterations": "inl_min_iterations",
    "excitation_sparsity": "excitation_sparsity",
    "compat": "inl_compat",
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "inl_variant": ("hierarchical", "full"),
    "inl_placement": ("between", "replace_ffn"),
    "inl_compat": ("none", "reference"),
    "inl_mu_mode": ("group", "per_dim"),
    "norm": ("rmsnorm", "layernorm"),
    "position": ("rope", "sinusoidal"),
    "mlp": ("swiglu", "gelu"),
}


class INLLLMConfig(PreTrainedConfig):  # type: ignore[no-untyped-call]  # transformers' hook
    r"""Configuration of :class:`~inl_llm.INLForCausalLM` (``model_type="inl-llm"``).

    The first block of fields are the original ones, with the original defaults except
    ``use_gradient_checkpointing`` (False: the original default was ignored by its code).

    Attributes:
        vocab_size: V, the number of token ids.
        d_model: D, the residual width (alias ``hidden_size``).
        num_layers: L, decoder blocks (alias ``num_hidden_layers``).
        num_heads: query heads (alias ``num_attention_heads``); D must be divisible by it.
        num_iterations_per_layer: T, integrator steps of every INL sub-layer.
        feedforward_dim: F, the FFN width (alias ``intermediate_size``).
        max_seq_len: the context length the model is meant for (alias
            ``max_position_embeddings``). Positions are computed on the fly (RoPE or sinusoidal), so
            it is not enforced.
        dropout: residual dropout after attention, INL and FFN, and attention-probability dropout.
        use_lowrank_embeddings: factorise the token embedding as Embedding(V, r) → Linear(r → D)
            with r = max(64, int(lowrank_ratio·D)) (the original formula, kept also when r ≥ D in
            tiny models).
        lowrank_ratio: see ``use_lowrank_embeddings``.
        use_gradient_checkpointing: checkpoint every decoder block in training (same as
            ``model.gradient_checkpointing_enable()``).
        use_shared_controllers: one :class:`~inl_llm.SharedINLController` for all layers
            (``controller_scope="shared"``), per-layer FiLM; else one controller per layer.
        use_adaptive_stopping: per-token halting (``halting="threshold"``), in training and eval.
        adaptive_convergence_threshold: the threshold of halting on the step relative to the
            token's input, ‖x_t − x_{t−1}‖ / ‖x₀‖
            (``halt_eps``); the original used an absolute threshold that never fired.
        hierarchical_group_size: channels per μ offset (``group_size``).
        excitation_sparsity: fraction of excited channels; excitation is on only with
            ``inl_variant="full"``.
        num_kv_heads: key/value heads for grouped-query attention (alias ``num_key_value_heads``);
            None means ``num_heads``. ``num_heads`` must be divisible by it.
        inl_variant: ``"hierarchical"`` (the original LM layer) or ``"full"`` (v_cand term and
            sparse excitation).
        inl_placement: ``"between"`` (attention → INL → FFN) or ``"replace_ffn"`` (attention →
            INL, no FFN).
        norm: ``"rmsnorm"`` or ``"layernorm"`` (pre-norm everywhere, plus a final norm).
        norm_eps: epsilon of the norms.
        position: ``"rope"`` (rotary, on queries and keys) or ``"sinusoidal"`` (absolute, added to
            the embeddings, as the original).
        rope_theta: the RoPE base.
        mlp: ``"swiglu"`` (three bias-free maps) or ``"gelu"`` (two maps with bias, as the
            original).
        tie_word_embeddings: the head reuses the embedding: logits = (h·Pᵀ)·Eᵀ with low-rank
            embeddings, h·Eᵀ without.
        initializer_range: std of the normal init of embeddings, attention, FFN and head.
        use_cache: return a KV cache by default.
        inl_compat: ``"reference"`` reproduces the shipped layer's numerics (the block then adds
            x_T itself to the residual).
        inl_min_iterations: steps every token runs before it may halt.
        inl_random_depth_training: sample T uniformly in [inl_min_iterations, T] per training call.
        inl_alpha_max: bound on the momentum coefficient α.
        inl_p_margin: fraction of the stability bound 2(1 + α) used by p = dt·g·β.
        inl_dt: the integrator step size.
        inl_controller_hidden: hidden width of the controller.
        inl_mu_mode: ``"group"`` or ``"per_dim"`` equilibrium μ.
        inl_output_gate_init: initial per-channel output gate (0: every INL sub-layer starts as a
            zero update).
        inl_checkpoint_iterations: recompute each integrator step in the backward pass.

    Example:
        >>> config = INLLLMConfig.from_preset("tiny", vocab_size=4096)
        >>> config.hidden_size, config.num_hidden_layers
        (128, 4)
    """

    model_type = "inl-llm"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_heads",
        "intermediate_size": "feedforward_dim",
        "max_position_embeddings": "max_seq_len",
        "num_key_value_heads": "num_kv_heads",
    }

    # --- the original fields (spec §2)
    vocab_size: int = 50261
    d_model: int = 1728
    num_layers: int = 25
    num_heads: int = 32
    num_iterations_per_layer: int = 5
    feedforward_dim: int = 6912
    max_seq_len: int = 2048
    dropout: float = 0.1
    use_lowrank_embeddings: bool = True
    lowrank_ratio: float = 0.125
    use_gradient_checkpointing: bool = False
    use_shared_controllers: bool = True
    use_adaptive_stopping: bool = True
    adaptive_convergence_threshold: float = 1e-3
    hierarchical_group_size: int = 64
    excitation_sparsity: float = 0.1
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = 50256
    # --- architecture
    num_kv_heads: int | None = None
    inl_variant: Literal["hierarchical", "full"] = "hierarchical"
    inl_placement: Literal["between", "replace_ffn"] = "between"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-6
    position: Literal["rope", "sinusoidal"] = "rope"
    rope_theta: float = 10000.0
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    use_cache: bool = True
    # --- INL knobs beyond the original fields (INLConfig, spec §3.1)
    inl_compat: Literal["none", "reference"] = "none"
    inl_min_iterations: int = 1
    inl_random_depth_training: bool = False
    inl_alpha_max: float = 0.95
    inl_p_margin: float = 0.9
    inl_dt: float = 0.1
    inl_controller_hidden: int = 64
    inl_mu_mode: Literal["group", "per_dim"] = "group"
    inl_output_gate_init: float = 0.0
    inl_checkpoint_iterations: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        for key in _LEGACY_KEYS:
            kwargs.pop(key, None)
        # Aliases given as keywords (hidden_size=…) reach here as extra kwargs; the base class sets
        # them through attribute_map. Resolve them first so validation sees the final values.
        for alias, target in type(self).attribute_map.items():
            if alias in kwargs:
                setattr(self, target, kwargs.pop(alias))
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        super().__post_init__(**kwargs)  # type: ignore[no-untyped-call]
        self._check()

    # ------------------------------------------------------------------ validation

    def _check(self) -> None:
        for name in (
            "vocab_size",
            "d_model",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "num_iterations_per_layer",
            "feedforward_dim",
            "max_seq_len",
            "hierarchical_group_size",
            "inl_controller_hidden",
            "inl_min_iterations",
        ):
            _positive_int(name, getattr(self, name))
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"INLLLMConfig.{name} must be one of {choices}, got {value!r}")
        for name in (
            "use_lowrank_embeddings",
            "use_gradient_checkpointing",
            "use_shared_controllers",
            "use_adaptive_stopping",
            "tie_word_embeddings",
            "use_cache",
            "inl_random_depth_training",
            "inl_checkpoint_iterations",
        ):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"INLLLMConfig.{name} must be a bool, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"INLLLMConfig.d_model ({self.d_model}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        assert self.num_kv_heads is not None  # set in __post_init__
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"INLLLMConfig.num_kv_heads ({self.num_kv_heads}) must divide num_heads "
                f"({self.num_heads})"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(
                f"INLLLMConfig: position='rope' needs an even head_dim = d_model / num_heads, "
                f"got {self.head_dim}"
            )
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ValueError(
                f"INLLLMConfig.d_model must be even with position='sinusoidal', got {self.d_model}"
            )
        if not _finite(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"INLLLMConfig.dropout must lie in [0, 1), got {self.dropout!r}")
        if not _finite(self.lowrank_ratio) or self.lowrank_ratio <= 0.0:
            raise ValueError(
                f"INLLLMConfig.lowrank_ratio must be a finite float > 0, got {self.lowrank_ratio!r}"
            )
        for name in ("norm_eps", "rope_theta", "initializer_range"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0.0:
                raise ValueError(f"INLLLMConfig.{name} must be a finite float > 0, got {value!r}")
        if self.inl_min_iterations > self.num_iterations_per_layer:
            raise ValueError(
                f"INLLLMConfig.inl_min_iterations ({self.inl_min_iterations}) must not exceed "
                f"num_iterations_per_layer ({self.num_iterations_per_layer})"
            )
        # The remaining INL values (thresholds, margins, …) are checked by INLConfig itself; build
        # it once here so a bad value fails at configuration time, naming both fields.
        try:
            self.inl_config()
        except ValueError as err:
            field = next((f for f in _INL_FIELDS if f"INLConfig.{f} " in str(err)), None)
            ours = f"INLLLMConfig.{_INL_FIELDS[field]}" if field else "INLLLMConfig"
            raise ValueError(f"{ours}: {err}") from err

    # ------------------------------------------------------------------ derived quantities

    @property
    def head_dim(self) -> int:
        """Width of one attention head, d_model / num_heads."""
        return self.d_model // self.num_heads

    @property
    def embedding_rank(self) -> int:
        """r = max(64, int(lowrank_ratio·D)) of the low-rank embedding (spec §2); D without it."""
        if not self.use_lowrank_embeddings:
            return self.d_model
        return max(64, int(self.lowrank_ratio * self.d_model))

    def inl_config(self) -> INLConfig:
        """The :class:`~inl_llm.INLConfig` of every INL sub-layer of the model.

        ``use_shared_controllers`` → ``controller_scope="shared"``; ``use_adaptive_stopping`` →
        ``halting="threshold"`` with ``halt_eps=adaptive_convergence_threshold`` (relative);
        ``hierarchical_group_size`` → ``group_size``; ``num_iterations_per_layer`` →
        ``num_iterations``; sparse excitation only for ``inl_variant="full"``.
        """
        return INLConfig(
            d_model=self.d_model,
            variant=self.inl_variant,
            num_iterations=self.num_iterations_per_layer,
            dt=self.inl_dt,
            controller_hidden=self.inl_controller_hidden,
            controller_scope="shared" if self.use_shared_controllers else "layer",
            mu_mode=self.inl_mu_mode,
            group_size=self.hierarchical_group_size,
            alpha_max=self.inl_alpha_max,
            p_margin=self.inl_p_margin,
            output_gate_init=self.inl_output_gate_init,
            halting="threshold" if self.use_adaptive_stopping else "none",
            halt_eps=self.adaptive_convergence_threshold,
            min_iterations=self.inl_min_iterations,
            random_depth_training=self.inl_random_depth_training,
            excitation="sparse" if self.inl_variant == "full" else "none",
            excitation_sparsity=self.excitation_sparsity,
            checkpoint_iterations=self.inl_checkpoint_iterations,
            compat=self.inl_compat,
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "INLLLMConfig":
        """A configuration of a named size, with any field overridden.

        Args:
            name: ``"tiny"`` (d 128, 4 layers, 4 heads, T 3, ff 512, max_seq_len 512; sized for
                CPU runs with a 4k–8k vocabulary, 2.26 M parameters at V = 6000),
                ``"small"`` (512/6/8/5/2048), ``"medium"`` (768/12/12/7/3072) or ``"large"``
                (1024/24/16/10/4096) — d_model / num_layers / num_heads /
                num_iterations_per_layer / feedforward_dim.
            **overrides: further fields, e.g. ``vocab_size=4096``.

        Raises:
            ValueError: for an unknown preset name.
        """
        if name not in _PRESETS:
            raise ValueError(
                f"INLLLMConfig.from_preset: name must be one of {tuple(_PRESETS)}, got {name!r}"
            )
        return cls(**{**_PRESETS[name], **overrides})

    def expected_num_parameters(self) -> int:
        """Closed-form number of parameters of :class:`~inl_llm.INLForCausalLM` for this config.

        Embedding V·r + r·D (low-rank) or V·D; per layer attention D·(2·H·hd + 2·KV·hd) with
        hd = D/H, INL (``INLLayer.expected_num_parameters``), FFN (SwiGLU 3·D·F; GELU 2·D·F + F +
        D; none with ``replace_ffn``) and its norms; the shared controller once; the final norm;
        the head V·D unless tied.
        """
        from .inl_layer import INLLayer, SharedINLController

        d, v = self.d_model, self.vocab_size
        r = self.embedding_rank
        embedding = v * r + r * d if self.use_lowrank_embeddings else v * d
        assert self.num_kv_heads is not None
        hd = self.head_dim
        attention = d * self.num_heads * hd * 2 + d * self.num_kv_heads * hd * 2
        inl_cfg = self.inl_config()
        inl = INLLayer.expected_num_parameters(inl_cfg)
        f = self.feedforward_dim
        if self.inl_placement == "replace_ffn":
            ffn, norms_per_layer = 0, 2
        else:
            ffn = 3 * d * f if self.mlp == "swiglu" else 2 * d * f + f + d
            norms_per_layer = 3
        norm = d if self.norm == "rmsnorm" else 2 * d
        per_layer = attention + inl + ffn + norms_per_layer * norm
        shared = (
            SharedINLController.expected_num_parameters(inl_cfg)
            if self.use_shared_controllers
            else 0
        )
        head = 0 if self.tie_word_embeddings else v * d
        return embedding + self.num_layers * per_layer + shared + norm + head


# save_pretrained writes auto_map["AutoConfig"] and copies this file (trust_remote_code).
INLLLMConfig.register_for_auto_class()  # type: ignore[no-untyped-call]


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"INLLLMConfig.{name} must be an int >= 1, got {value!r}")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
