"""The INL causal language model as a native transformers model (spec §3.2).

A pre-norm decoder: token embedding (optionally low-rank), then L blocks of

    a = Attn(norm_a(x));  x ← x + drop(a)
    "between":     x ← x + drop(INL(x₀ = norm_i(x), h = a));  x ← x + drop(FFN(norm_f(x)))
    "replace_ffn": x ← x + drop(INL(x₀ = norm_i(x), h = x₀))

then a final norm and the head. Attention is PyTorch SDPA (causal plus padding mask, grouped-query,
rotary positions) over a transformers :class:`~transformers.DynamicCache` (``Cache.update`` per
layer); the INL state is per token and never cached. :class:`INLForCausalLM` mixes in
:class:`~transformers.GenerationMixin`, so greedy, sampling and beam search work with the cache.

This file is copied next to a saved checkpoint (``save_pretrained`` with ``register_for_auto_class``)
and loaded with ``trust_remote_code=True``, so it imports nothing but torch, transformers, the
standard library and sibling modules, relatively.
"""

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_inl import INLLLMConfig
from .inl_controller import INLController
from .inl_layer import INLLayer, SharedINLController

__all__ = [
    "INLCausalLMOutputWithPast",
    "INLDecoderLayer",
    "INLForCausalLM",
    "INLModel",
    "INLModelOutputWithPast",
    "INLPreTrainedModel",
]

# Base of the sinusoidal absolute positions (Vaswani et al., 2017, §3.5), as the original model.
_SINUSOID_BASE = 10000.0


# ---------------------------------------------------------------------------- outputs


@dataclass
class INLModelOutputWithPast(BaseModelOutputWithPast):
    """:class:`~transformers.modeling_outputs.BaseModelOutputWithPast` plus INL statistics.

    Attributes:
        inl_iterations: mean integrator steps per real token in each layer, (L,) float, on the
            device (read it when you choose; no host synchronisation).
    """

    inl_iterations: Tensor | None = None


@dataclass
class INLCausalLMOutputWithPast(CausalLMOutputWithPast):
    """:class:`~transformers.modeling_outputs.CausalLMOutputWithPast` plus INL statistics.

    Attributes:
        inl_iterations: mean integrator steps per real token in each layer, (L,) float.
    """

    inl_iterations: Tensor | None = None


# ---------------------------------------------------------------------------- building blocks


class INLRMSNorm(nn.Module):
    """Root-mean-square norm ``w ⊙ x / sqrt(mean(x²) + eps)`` (Zhang & Sennrich, 2019), in fp32.

    Args:
        dim: D, the normalised width.
        eps: the epsilon under the square root.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) → (..., D)."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _make_norm(config: INLLLMConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return INLRMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


class INLEmbedding(nn.Module):
    """Token embedding, optionally low-rank: Embedding(V, r) → Linear(r → D, no bias) (spec §2).

    Args:
        config: uses vocab_size, d_model, use_lowrank_embeddings and lowrank_ratio
            (r = max(64, int(lowrank_ratio·D)); kept as the original even when r ≥ D).
    """

    def __init__(self, config: INLLLMConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.embedding_rank)
        self.proj = (
            nn.Linear(config.embedding_rank, config.d_model, bias=False)
            if config.use_lowrank_embeddings
            else None
        )

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, S) int → (B, S, D)."""
        e: Tensor = self.token(input_ids)
        return self.proj(e) if self.proj is not None else e

    def tied_logits(self, h: Tensor) -> Tensor:
        """The tied head: (h·Pᵀ)·Eᵀ with P the (r → D) projection, or h·Eᵀ; (B, S, D) → (B, S, V)."""
        if self.proj is not None:
            h = h @ self.proj.weight.to(h.dtype)
        return h @ self.token.weight.to(h.dtype).t()


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class INLRotaryEmbedding(nn.Module):
    """Rotary position angles (Su et al., 2021, RoFormer eq. 34) from integer positions.

    The inverse frequencies are recomputed in every call (hd/2 numbers) rather than kept in a
    non-persistent buffer, so a model materialised from the meta device by ``from_pretrained`` needs
    no re-initialisation of them.

    Args:
        head_dim: hd, even.
        theta: the base.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Positions (B, S) → (cos, sin), each (B, S, hd) in ``dtype`` (computed in fp32)."""
        device = position_ids.device
        exponent = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32)
        inv_freq = 1.0 / (self.theta ** (exponent / self.head_dim))
        angles = position_ids.float()[..., None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _sinusoidal_positions(position_ids: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Absolute sinusoidal encodings: PE[p, 2i] = sin(p·ω_i), PE[p, 2i+1] = cos(p·ω_i),
    ω_i = 10000^(−2i/D) (Vaswani et al., 2017, §3.5); (B, S) → (B, S, D)."""
    exponent = torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32)
    freq = torch.exp(exponent * (-math.log(_SINUSOID_BASE) / dim))
    angles = position_ids.float()[..., None] * freq
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)


class INLAttention(nn.Module):
    """Causal multi-head attention with grouped-query heads, RoPE and a KV cache (SDPA).

    Args:
        config: uses d_model, num_heads, num_kv_heads, position and dropout.
        layer_idx: the index passed to ``Cache.update``.
    """

    def __init__(self, config: INLLLMConfig, layer_idx: int) -> None:
        super().__init__()
        assert config.num_kv_heads is not None
        self.layer_idx = layer_idx
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.use_rope = config.position == "rope"
        self.dropout = config.dropout
        d, hd = config.d_model, config.head_dim
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=False)

    def forward(
        self,
        x: Tensor,
        *,
        rotary: tuple[Tensor, Tensor] | None,
        attn_mask: Tensor | None,
        past_key_values: Cache | None,
    ) -> Tensor:
        """Attend.

        Args:
            x: the normalised input, (B, S, D).
            rotary: (cos, sin), each (B or 1, S, hd), or None without RoPE.
            attn_mask: bool, True = may attend, broadcastable to (B, 1, S, K) with K the cached
                plus current length; None means plain causal over the S current tokens (no cache
                content before them).
            past_key_values: the cache to extend with this layer's keys and values, or None.

        Returns:
            (B, S, D), the attention output after the output projection.
        """
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rotary is not None:
            cos, sin = rotary[0].unsqueeze(1), rotary[1].unsqueeze(1)  # (B, 1, S, hd)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return cast(Tensor, self.o_proj(out.transpose(1, 2).reshape(b, s, -1)))


class INLMLP(nn.Module):
    """The feed-forward sub-layer: SwiGLU ``W_d(silu(W_g x) ⊙ W_u x)`` (Shazeer, 2020; no bias)
    or GELU ``W_2 gelu(W_1 x + b_1) + b_2`` (the original FFN, with biases).

    Args:
        config: uses d_model, feedforward_dim and mlp.
    """

    def __init__(self, config: INLLLMConfig) -> None:
        super().__init__()
        d, f = config.d_model, config.feedforward_dim
        self.kind = config.mlp
        swiglu = config.mlp == "swiglu"
        self.gate_proj = nn.Linear(d, f, bias=False) if swiglu else None
        self.up_proj = nn.Linear(d, f, bias=not swiglu)
        self.down_proj = nn.Linear(f, d, bias=not swiglu)

    def forward(self, x: Tensor) -> Tensor:
        """(B, S, D) → (B, S, D)."""
        if self.gate_proj is not None:
            hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)
        else:
            hidden = F.gelu(self.up_proj(x))
        return cast(Tensor, self.down_proj(hidden))


class INLDecoderLayer(GradientCheckpointingLayer):  # type: ignore[no-untyped-call]
    """One pre-norm block: attention, then INL, then (``"between"``) the FFN.

    Args:
        config: the model configuration.
        layer_idx: position of the block (its KV-cache slot).
        shared: the model's shared INL controller when ``use_shared_controllers``, else None.
    """

    def __init__(
        self, config: INLLLMConfig, layer_idx: int, shared: SharedINLController | None
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = _make_norm(config)
        self.self_attn = INLAttention(config, layer_idx)
        self.inl_norm = _make_norm(config)
        self.inl = INLLayer(config.inl_config(), shared=shared)
        self.replace_ffn = config.inl_placement == "replace_ffn"
        self.ffn_norm = None if self.replace_ffn else _make_norm(config)
        self.mlp = None if self.replace_ffn else INLMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: Tensor,
        attn_mask: Tensor | None = None,
        token_mask: Tensor | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        """Run the block.

        Args:
            hidden_states: the residual stream, (B, S, D).
            attn_mask: see :meth:`INLAttention.forward`.
            token_mask: (B, S) bool, True for real tokens (padding gets a zero INL update), or None.
            rotary: (cos, sin) of RoPE, or None.
            past_key_values: the KV cache, or None.
            **kwargs: ignored (``use_cache`` and friends, for the checkpointing wrapper).

        Returns:
            The new residual stream (B, S, D) and the mean INL iterations per real token, () float.
        """
        x = hidden_states
        a = self.self_attn(
            self.attn_norm(x), rotary=rotary, attn_mask=attn_mask, past_key_values=past_key_values
        )
        x = x + self.dropout(a)
        x0 = self.inl_norm(x)
        update, stats = self.inl(
            x0, x0 if self.replace_ffn else a, mask=token_mask, return_stats=True
        )
        x = x + self.dropout(update)
        if self.mlp is not None:
            assert self.ffn_norm is not None
            x = x + self.dropout(self.mlp(self.ffn_norm(x)))
        iterations = stats.iterations.to(torch.float32)
        if token_mask is None:
            mean_iterations = iterations.mean()
        else:
            mean_iterations = iterations.sum() / token_mask.sum().clamp_min(1).to(torch.float32)
        return x, mean_iterations


# ---------------------------------------------------------------------------- pretrained base


@torch.no_grad()
def _reset_keeping_loaded(module: INLLayer | INLController) -> None:
    """``module.reset_parameters()``, then put back every tensor transformers marked as loaded.

    ``from_pretrained`` flags loaded tensors with ``_is_hf_initialized`` and guards only the
    ``torch.nn.init`` functions; the INL modules also initialise with in-place ``fill_``/``copy_``,
    so the loaded values are saved and restored around the reset.
    """
    tensors = [*module.parameters(), *module.buffers()]
    loaded = [(t, t.detach().clone()) for t in tensors if getattr(t, "_is_hf_initialized", False)]
    module.reset_parameters()
    for tensor, value in loaded:
        tensor.copy_(value)


class INLPreTrainedModel(PreTrainedModel):  # type: ignore[no-untyped-call]
    """Weight initialisation and class attributes shared by :class:`INLModel` and
    :class:`INLForCausalLM`."""

    config_class = INLLLMConfig
    config: INLLLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["INLDecoderLayer"]  # noqa: RUF012  (transformers' class attribute)
    _skip_keys_device_placement = ["past_key_values"]  # noqa: RUF012
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _can_compile_fullgraph = False  # per-token halting is eager (data-dependent shapes)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """N(0, initializer_range) for embeddings, attention, FFN and head; norms at 1/0.

        The INL modules keep their own init: an :class:`~inl_llm.INLLayer` or controller is reset
        with its ``reset_parameters()`` (tensors already loaded by ``from_pretrained`` are kept),
        and a controller Linear marked ``_inl_owned`` never gets the normal init; it triggers the
        reset of its controller instead (transformers does not visit, in custom code, a module
        without parameters of its own, such as the controller).
        """
        std = self.config.initializer_range
        if isinstance(module, INLLayer | INLController):
            _reset_keeping_loaded(module)
        elif isinstance(module, nn.Linear):
            if getattr(module, "_inl_owned", False):
                owner = self._inl_owner(module)
                if owner is not None:
                    _reset_keeping_loaded(owner)
                return
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, INLRMSNorm | nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            bias = getattr(module, "bias", None)
            if isinstance(bias, Tensor):
                nn.init.zeros_(bias)

    def _inl_owner(self, linear: nn.Linear) -> INLController | None:
        """The INL controller whose child ``linear`` is."""
        for m in self.modules():
            if isinstance(m, INLController) and any(c is linear for c in m.children()):
                return m
        return None

    def _apply_config_checkpointing(self) -> None:
        if self.config.use_gradient_checkpointing:
            enable = getattr(self, "activation_checkpointing_enable", None)
            if enable is not None:  # transformers >= 5.x name
                enable({"use_reentrant": False})
            else:
                self.gradient_checkpointing_enable({"use_reentrant": False})  # type: ignore[no-untyped-call]

    def num_parameters_by_component(self) -> dict[str, int]:
        """Parameter counts: embedding, attention, inl_controller (the shared controller counted
        once), inl_other (gates, μ, FiLM, excitation), ffn, norms, lm_head (0 when tied or for the
        bare :class:`INLModel`). The values sum to the number of distinct parameters."""
        base = self if isinstance(self, INLModel) else cast(INLModel, self.model)
        counts = dict.fromkeys(
            ("embedding", "attention", "inl_controller", "inl_other", "ffn", "norms", "lm_head"), 0
        )
        counts["embedding"] = _numel(base.embed_tokens.parameters())
        if base.inl_controller is not None:
            counts["inl_controller"] = _numel(base.inl_controller.parameters())
        counts["norms"] = _numel(base.norm.parameters())
        for layer in base.layers:
            block = cast(INLDecoderLayer, layer)
            counts["attention"] += _numel(block.self_attn.parameters())
            counts["inl_controller"] += _numel(block.inl.controller_parameters())
            counts["inl_other"] += _numel(block.inl.other_parameters())
            norms = [block.attn_norm, block.inl_norm, block.ffn_norm]
            counts["norms"] += sum(_numel(n.parameters()) for n in norms if n is not None)
            if block.mlp is not None:
                counts["ffn"] += _numel(block.mlp.parameters())
        head = getattr(self, "lm_head", None)
        if isinstance(head, nn.Module):
            counts["lm_head"] = _numel(head.parameters())
        return counts


def _numel(params: Any) -> int:
    return sum(int(p.numel()) for p in params)


# ---------------------------------------------------------------------------- the models


class INLModel(INLPreTrainedModel):  # type: ignore[no-untyped-call]
    """The decoder stack without a head: embeddings, L :class:`INLDecoderLayer`, final norm.

    Owns the :class:`~inl_llm.SharedINLController` (``inl_controller``) when
    ``use_shared_controllers``; every layer calls it by reference.

    Args:
        config: the model configuration.
    """

    def __init__(self, config: INLLLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = INLEmbedding(config)
        inl_cfg = config.inl_config()
        self.inl_controller = (
            SharedINLController(inl_cfg) if inl_cfg.controller_scope == "shared" else None
        )
        self.layers = nn.ModuleList(
            [INLDecoderLayer(config, i, self.inl_controller) for i in range(config.num_layers)]
        )
        self.norm = _make_norm(config)
        self.rotary = (
            INLRotaryEmbedding(config.head_dim, config.rope_theta)
            if config.position == "rope"
            else None
        )
        self.gradient_checkpointing = False
        self.post_init()  # type: ignore[no-untyped-call]
        self._apply_config_checkpointing()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> INLModelOutputWithPast:
        """Run the decoder.

        Args:
            input_ids: (B, S) token ids; exactly one of this and ``inputs_embeds``.
            attention_mask: (B, K) with 1 for real tokens and 0 for padding, K = cached + S
                (``generate`` extends it every step); left or right padding.
            position_ids: (B, S) or (1, S) positions; by default the attention-mask cumulative sum
                minus one (so left padding starts every row at 0), else cache length + arange(S).
            past_key_values: a :class:`~transformers.Cache` to continue; with ``use_cache`` and
                none given, a new :class:`~transformers.DynamicCache` is created.
            inputs_embeds: (B, S, D) input embeddings instead of ids.
            use_cache: return the cache (default ``config.use_cache`` in eval mode, False in
                training).
            **kwargs: ``output_hidden_states``; others are accepted and ignored.

        Returns:
            :class:`INLModelOutputWithPast` with ``last_hidden_state`` (B, S, D) after the final
            norm, ``past_key_values``, ``hidden_states`` when asked (L + 1 tensors) and
            ``inl_iterations`` (L,).

        Raises:
            ValueError: both or neither of input_ids/inputs_embeds, wrong ranks or widths, an
                attention mask or positions of the wrong shape, or ``output_attentions=True``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "INLModel: pass exactly one of input_ids and inputs_embeds, got "
                f"{'both' if input_ids is not None else 'neither'}"
            )
        if kwargs.get("output_attentions"):
            raise ValueError("INLModel: output_attentions=True is not supported (SDPA attention)")
        d = self.config.d_model
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(
                    f"INLModel: input_ids must be (B, S), got {tuple(input_ids.shape)}"
                )
            hidden = self.embed_tokens(input_ids)
        else:
            assert inputs_embeds is not None
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != d:
                raise ValueError(
                    f"INLModel: inputs_embeds must be (B, S, {d}), got {tuple(inputs_embeds.shape)}"
                )
            hidden = inputs_embeds
        b, s = hidden.shape[:2]
        if use_cache is None:  # a cache is for inference; training asks for one explicitly
            use_cache = self.config.use_cache and not self.training
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        key_mask = self._key_mask(attention_mask, b, past + s)
        token_mask = key_mask[:, past:] if key_mask is not None else None
        position_ids = self._positions(position_ids, key_mask, b, s, past, hidden.device)
        rotary = None
        if self.rotary is not None:
            rotary = self.rotary(position_ids, hidden.dtype)
        else:
            hidden = hidden + _sinusoidal_positions(position_ids, d, hidden.dtype)
        attn_mask = _attention_mask(key_mask, s, past, hidden.device)

        want_hidden = kwargs.get("output_hidden_states")
        if want_hidden is None:
            want_hidden = bool(self.config.output_hidden_states)
        all_hidden: list[Tensor] = []
        iterations: list[Tensor] = []
        for layer in self.layers:
            if want_hidden:
                all_hidden.append(hidden)
            hidden, mean_it = layer(
                hidden,
                attn_mask=attn_mask,
                token_mask=token_mask,
                rotary=rotary,
                past_key_values=past_key_values,
                use_cache=use_cache,
            )
            iterations.append(mean_it)
        hidden = self.norm(hidden)
        if want_hidden:
            all_hidden.append(hidden)
        return INLModelOutputWithPast(
            last_hidden_state=hidden,
            past_key_values=past_key_values,
            hidden_states=tuple(all_hidden) if want_hidden else None,
            inl_iterations=torch.stack(iterations),
        )

    @staticmethod
    def _key_mask(attention_mask: Tensor | None, batch: int, keys: int) -> Tensor | None:
        if attention_mask is None:
            return None
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, keys):
            raise ValueError(
                "INLModel: attention_mask must be (B, cached + S) = "
                f"{(batch, keys)} with 1 for real tokens, got {tuple(attention_mask.shape)}"
            )
        return attention_mask.bool()

    @staticmethod
    def _positions(
        position_ids: Tensor | None,
        key_mask: Tensor | None,
        batch: int,
        seq: int,
        past: int,
        device: torch.device,
    ) -> Tensor:
        if position_ids is not None:
            if (
                position_ids.dim() != 2
                or position_ids.shape[-1] != seq
                or position_ids.shape[0] not in (1, batch)
            ):
                raise ValueError(
                    f"INLModel: position_ids must be (B, S) or (1, S) with S = {seq}, "
                    f"got {tuple(position_ids.shape)}"
                )
            return position_ids
        if key_mask is not None:
            # Left padding: every row counts its own real tokens, as generate() does.
            return (key_mask.long().cumsum(-1) - 1).clamp_min(0)[:, past:]
        return torch.arange(past, past + seq, device=device).unsqueeze(0)


def _attention_mask(
    key_mask: Tensor | None, seq: int, past: int, device: torch.device
) -> Tensor | None:
    """The boolean SDPA mask (True = may attend), (B, 1, S, K) or (S, K), or None for plain causal.

    Query i sits at cache position past + i; it sees keys at positions ≤ its own that are real
    tokens. A padding query also sees itself, so that no row is empty (SDPA would return NaN); its
    output is never used (the INL update and the loss are masked for it).
    """
    if key_mask is None and past == 0:
        return None
    q_pos = torch.arange(past, past + seq, device=device)
    k_pos = torch.arange(past + seq, device=device)
    causal = k_pos[None, :] <= q_pos[:, None]  # (S, K)
    if key_mask is None:
        return causal
    allowed = causal[None] & key_mask[:, None, :]
    allowed = allowed | (k_pos[None, None, :] == q_pos[None, :, None])
    return allowed[:, None]


class INLForCausalLM(INLPreTrainedModel, GenerationMixin):  # type: ignore[no-untyped-call]
    """:class:`INLModel` with a language-model head, a shifted cross-entropy loss and
    :class:`~transformers.GenerationMixin` (greedy, sampling, beam search, with the KV cache).

    Args:
        config: the model configuration. With ``tie_word_embeddings`` the head reuses the (low-rank)
            embedding; otherwise ``lm_head`` is Linear(D → V, no bias), N(0, initializer_range).

    Example:
        >>> config = INLLLMConfig.from_preset("tiny", vocab_size=256, num_layers=1)
        >>> model = INLForCausalLM(config).eval()
        >>> model(torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 3, 256])
    """

    def __init__(self, config: INLLLMConfig) -> None:
        super().__init__(config)
        self.model = INLModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        self.post_init()  # type: ignore[no-untyped-call]

    def get_output_embeddings(self) -> nn.Module | None:
        """The untied head, or None when the head is tied to the (low-rank) embedding."""
        head: nn.Module | None = self.lm_head
        return head

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> INLCausalLMOutputWithPast | tuple[Any, ...]:
        """Logits and, with labels, the next-token loss.

        Args:
            input_ids: as :meth:`INLModel.forward`.
            attention_mask: as :meth:`INLModel.forward`.
            position_ids: as :meth:`INLModel.forward`.
            past_key_values: as :meth:`INLModel.forward`.
            inputs_embeds: as :meth:`INLModel.forward`.
            use_cache: as :meth:`INLModel.forward`.
            labels: (B, S) target ids aligned with the inputs (shifted inside); −100 is ignored.
                The loss is the mean over counted tokens, or their sum divided by
                ``num_items_in_batch`` when that keyword is given (gradient accumulation).
            logits_to_keep: compute logits for the last ``logits_to_keep`` positions only (0: all),
                or for the positions of a 1-D index tensor.
            **kwargs: ``return_dict``, ``output_hidden_states``, ``num_items_in_batch``.

        Returns:
            :class:`INLCausalLMOutputWithPast` (a tuple with ``return_dict=False``): ``loss``,
            ``logits`` (B, S_kept, V), ``past_key_values``, ``hidden_states``,
            ``inl_iterations`` (L,).

        Raises:
            ValueError: as :meth:`INLModel.forward`; labels not shaped like the inputs, or labels
                with ``logits_to_keep`` ≠ 0.
        """
        return_dict = kwargs.pop("return_dict", None)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            if logits_to_keep < 0:
                raise ValueError(
                    f"INLForCausalLM: logits_to_keep must be >= 0, got {logits_to_keep}"
                )
            if logits_to_keep:
                hidden = hidden[:, -logits_to_keep:]
        else:
            hidden = hidden[:, logits_to_keep]
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            logits = self.model.embed_tokens.tied_logits(hidden)

        loss = None
        if labels is not None:
            if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
                raise ValueError("INLForCausalLM: labels need all logits; use logits_to_keep=0")
            if tuple(labels.shape) != tuple(logits.shape[:2]):
                raise ValueError(
                    f"INLForCausalLM: labels must be (B, S) = {tuple(logits.shape[:2])}, "
                    f"got {tuple(labels.shape)}"
                )
            loss = _shifted_cross_entropy(logits, labels, num_items_in_batch)

        result = INLCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=None,
            inl_iterations=outputs.inl_iterations,
        )
        if return_dict is False:
            return result.to_tuple()
        return result


def _shifted_cross_entropy(logits: Tensor, labels: Tensor, num_items_in_batch: Any) -> Tensor:
    """Token t predicts labels[t + 1]; −100 is ignored; fp32; mean over counted tokens."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    mean: Tensor = total / num_items_in_batch
    return mean


INLModel.register_for_auto_class("AutoModel")  # type: ignore[no-untyped-call]
INLForCausalLM.register_for_auto_class("AutoModelForCausalLM")  # type: ignore[no-untyped-call]
