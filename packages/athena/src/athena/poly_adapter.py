"""`PolyAdapter`: LoRA, IA³ and a sparse mixture of LoRA experts around one frozen linear layer.

For a frozen wrapped layer `Wx + b` and each active adapter,

    y = IA3(Wx + b) + s·B·A·drop(x) + Σ_{e ∈ TopK(x)} p̃_e(x)·s_e·B_e·A_e·drop(x)

* IA³ ("Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
  Learning") scales the base path only: `g ⊙ (Wx + b)` in output mode, `W(g ⊙ x) + b` in input
  mode (PEFT's "feedforward" modules); g = 1 at init.
* LoRA ("LoRA: Low-Rank Adaptation of Large Language Models"): A (r, in) Kaiming-uniform,
  B (out, r) zeros, s = alpha / r, or alpha / √r with rsLoRA.
* The mixture: a router `softmax(R·x)` picks the top-k of E rank-`moe_rank` experts per token
  (`athena.routing`); B_e = 0 at init.

So the module is exactly the wrapped layer at init, for every combination of switches. Parameter
names are PEFT's (`base_layer`, `lora_A.<adapter>.weight`, `lora_B.<adapter>.weight`,
`ia3_l.<adapter>`) plus `moe_A.<adapter>` (E, r, in), `moe_B.<adapter>` (E, out, r) and
`router.<adapter>.weight` (E, in). Adapter weights are float32 whatever the base dtype.

Merging folds LoRA and IA³ into the base weight: `W' = diag(g)·W + s·B·A`, `b' = g ⊙ b` (output
mode) or `W' = W·diag(g) + s·B·A` (input mode). The mixture depends on the input through the
router and cannot be merged: a merged adapter keeps running its MoE branch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor, nn

from ._checks import check_dropout, check_mixture, check_moe_impl, check_switches
from .routing import (
    Routing,
    balance_loss,
    expert_mix_dense,
    expert_mix_gather,
    route,
    routing_entropy,
)

__all__ = ["AdapterSpec", "PolyAdapter"]

Ia3Mode = Literal["output", "input"]
MoeImpl = Literal["dense", "gather"]


@dataclass(frozen=True)
class AdapterSpec:
    """The shape and scaling of one adapter inside a PolyAdapter (validated on creation)."""

    rank: int
    alpha: float
    dropout: float
    use_lora: bool
    use_ia3: bool
    use_moe: bool
    ia3_mode: Ia3Mode = "output"
    num_experts: int = 4
    top_k: int = 1
    moe_rank: int = 8
    moe_alpha: float = 8.0
    renormalize: bool = True
    router_jitter: float = 0.0
    use_rslora: bool = False
    moe_impl: MoeImpl = "dense"

    def __post_init__(self) -> None:
        check_switches(self.use_lora, self.use_ia3, self.use_moe)
        if self.use_lora and self.rank < 1:
            raise ValueError(
                f"rank must be >= 1 with use_lora=True, got {self.rank} "
                "(rank 0 means: do not target this module)"
            )
        check_dropout(self.dropout, "dropout")
        if self.ia3_mode not in ("output", "input"):
            raise ValueError(f"ia3_mode must be 'output' or 'input', got {self.ia3_mode!r}")
        if self.use_moe:
            check_mixture(
                num_experts=self.num_experts,
                top_k=self.top_k,
                moe_rank=self.moe_rank,
                router_jitter=self.router_jitter,
                k_name="k",
            )
            check_moe_impl(self.moe_impl)

    @property
    def scaling(self) -> float:
        """LoRA scale s = alpha / r (alpha / √r with rsLoRA)."""
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    @property
    def moe_scaling(self) -> float:
        """Expert scale s_e = moe_alpha / moe_rank (/ √moe_rank with rsLoRA)."""
        return self.moe_alpha / (math.sqrt(self.moe_rank) if self.use_rslora else self.moe_rank)


def _weight_of(base: nn.Module) -> Tensor:
    weight = getattr(base, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(f"base_layer must have a weight tensor, got {type(base).__name__}")
    return weight


class PolyAdapter(nn.Module):
    """LoRA + IA³ + top-k mixture of LoRA experts around a frozen linear layer.

    The positional order is the original project's, ``PolyAdapter(in_features, out_features,
    rank, num_experts, k, dropout, use_lora, use_ia3, use_moe)``; everything new is keyword-only.

    Args:
        in_features: input size; taken from `base_layer` when it is given (and then checked
            against it).
        out_features: output size; likewise.
        rank: LoRA rank r.
        num_experts: E, experts in the mixture.
        k: experts per token (1 ≤ k ≤ E).
        dropout: dropout on the adapter input (LoRA and experts), in [0, 1).
        use_lora: the LoRA branch (at least one of the three branches on).
        use_ia3: the IA³ branch.
        use_moe: the mixture of LoRA experts.
        alpha: LoRA alpha (s = alpha / r), keyword-only. The original project fixed it at 32.
        base_layer: the frozen layer to wrap (`nn.Linear`, or a (in, out)-weight layer with
            `fan_in_fan_out=True`). Without it a frozen randomly initialised `nn.Linear` is
            created, which only makes sense in demos: wrap your model's layer instead.
        ia3_mode: `"output"` scales `Wx + b`, `"input"` scales x.
        moe_rank: rank of each expert (default `rank`).
        moe_alpha: alpha of each expert (default `alpha`).
        renormalize: renormalise the selected experts' probabilities to sum to 1.
        router_jitter: ε of the multiplicative U(1 − ε, 1 + ε) router-input noise in training.
        use_rslora: scale by alpha / √r.
        adapter_name: name of the first adapter.
        init_lora_weights: `False` draws B (and B_e) at random instead of zeros (tests only).
        fan_in_fan_out: the base weight is stored (in, out).
        moe_impl: `"dense"` or `"gather"` (see `athena.routing`).

    Shapes: input (..., in_features) → output (..., out_features).

    Raises:
        ValueError: shapes disagree with `base_layer`, rank 0 with LoRA, all switches off,
            k outside [1, num_experts], dropout outside [0, 1).
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        rank: int = 8,
        num_experts: int = 4,
        k: int = 1,
        dropout: float = 0.1,
        use_lora: bool = True,
        use_ia3: bool = True,
        use_moe: bool = True,
        *,
        alpha: float = 32.0,
        base_layer: nn.Module | None = None,
        ia3_mode: Ia3Mode = "output",
        moe_rank: int | None = None,
        moe_alpha: float | None = None,
        renormalize: bool = True,
        router_jitter: float = 0.0,
        use_rslora: bool = False,
        adapter_name: str = "default",
        init_lora_weights: bool = True,
        fan_in_fan_out: bool = False,
        moe_impl: MoeImpl = "dense",
    ) -> None:
        super().__init__()
        if base_layer is None:
            if in_features is None or out_features is None:
                raise ValueError("pass in_features and out_features, or base_layer=")
            base_layer = nn.Linear(in_features, out_features)
            base_layer.requires_grad_(False)
            fan_in_fan_out = False
        weight = _weight_of(base_layer)
        if weight.dim() != 2:
            raise ValueError(f"base_layer weight must be 2-D, got shape {tuple(weight.shape)}")
        if fan_in_fan_out:
            base_in, base_out = int(weight.shape[0]), int(weight.shape[1])
        else:
            base_out, base_in = int(weight.shape[0]), int(weight.shape[1])
        if (in_features is not None and in_features != base_in) or (
            out_features is not None and out_features != base_out
        ):
            raise ValueError(
                f"base_layer is ({base_in} → {base_out}) but in_features={in_features}, "
                f"out_features={out_features} were given"
            )
        self.base_layer = base_layer
        self.in_features = base_in
        self.out_features = base_out
        self.fan_in_fan_out = fan_in_fan_out
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.ia3_l = nn.ParameterDict()
        self.moe_A = nn.ParameterDict()
        self.moe_B = nn.ParameterDict()
        self.router = nn.ModuleDict()
        self.specs: dict[str, AdapterSpec] = {}
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disable_adapters = False
        self._aux: dict[str, Tensor] = {}
        self.add_adapter(
            adapter_name,
            AdapterSpec(
                rank=rank,
                alpha=alpha,
                dropout=dropout,
                use_lora=use_lora,
                use_ia3=use_ia3,
                use_moe=use_moe,
                ia3_mode=ia3_mode,
                num_experts=num_experts,
                top_k=k,
                moe_rank=moe_rank if moe_rank is not None else rank,
                moe_alpha=moe_alpha if moe_alpha is not None else alpha,
                renormalize=renormalize,
                router_jitter=router_jitter,
                use_rslora=use_rslora,
                moe_impl=moe_impl,
            ),
            init_lora_weights=init_lora_weights,
        )

    # -- adapters ------------------------------------------------------------------------------

    def add_adapter(self, name: str, spec: AdapterSpec, *, init_lora_weights: bool = True) -> None:
        """Create adapter `name` (float32, on the base weight's device) and make it active."""
        if not name or "." in name:
            raise ValueError(f"adapter name must be non-empty without '.', got {name!r}")
        if name in self.specs:
            raise ValueError(f"adapter {name!r} already exists in this PolyAdapter")
        device = _weight_of(self.base_layer).device
        d_in, d_out = self.in_features, self.out_features
        f32 = torch.float32
        if spec.use_lora:
            lora_a = nn.Linear(
                d_in, spec.rank, bias=False, device=device, dtype=f32
            )  # Kaiming-uniform, a = √5
            lora_b = nn.Linear(spec.rank, d_out, bias=False, device=device, dtype=f32)
            if init_lora_weights:
                # redraw A after creating B, then zero B: the random stream is consumed exactly as
                # PEFT consumes it, so the same seed gives PEFT's initial adapter
                nn.init.kaiming_uniform_(lora_a.weight, a=math.sqrt(5))
                nn.init.zeros_(lora_b.weight)
            self.lora_A[name] = lora_a
            self.lora_B[name] = lora_b
        if spec.use_lora or spec.use_moe:
            self.lora_dropout[name] = (
                nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
            )
        if spec.use_ia3:
            shape = (d_out, 1) if spec.ia3_mode == "output" else (1, d_in)
            # drawn then set to 1, as PEFT does, so both consume the random stream alike;
            # init_lora_weights=False keeps the draw (a non-identity start, for tests)
            g = torch.randn(shape, device=device, dtype=f32)
            if init_lora_weights:
                g.fill_(1.0)
            self.ia3_l[name] = nn.Parameter(g)
        if spec.use_moe:
            e, r = spec.num_experts, spec.moe_rank
            bound = 1.0 / math.sqrt(d_in)  # what Kaiming-uniform (a = √5) gives each A_e
            self.moe_A[name] = nn.Parameter(
                torch.empty(e, r, d_in, device=device, dtype=f32).uniform_(-bound, bound)
            )
            moe_b = torch.zeros(e, d_out, r, device=device, dtype=f32)
            if not init_lora_weights:
                moe_b.uniform_(-1.0 / math.sqrt(r), 1.0 / math.sqrt(r))
            self.moe_B[name] = nn.Parameter(moe_b)
            router = nn.Linear(d_in, e, bias=False, device=device, dtype=f32)
            nn.init.normal_(router.weight, std=0.02)
            self.router[name] = router
            self.register_buffer(f"_load_{name}", torch.zeros(e, device=device), persistent=False)
            self.register_buffer(
                f"_entropy_{name}", torch.zeros((), device=device), persistent=False
            )
            self.register_buffer(
                f"_tokens_{name}", torch.zeros((), device=device), persistent=False
            )
        self.specs[name] = spec
        self.active_adapters.append(name)

    def delete_adapter(self, name: str) -> None:
        """Remove adapter `name` (unmerged first if merged)."""
        if name not in self.specs:
            raise ValueError(f"no adapter {name!r}; have {sorted(self.specs)}")
        if name in self.merged_adapters:
            self.unmerge()
        for container in (self.lora_A, self.lora_B, self.lora_dropout, self.router):
            if name in container:
                del container[name]
        for params in (self.ia3_l, self.moe_A, self.moe_B):
            if name in params:
                del params[name]
        for prefix in ("_load_", "_entropy_", "_tokens_"):
            if hasattr(self, prefix + name):
                delattr(self, prefix + name)
        del self.specs[name]
        self.active_adapters = [a for a in self.active_adapters if a != name]
        self._aux.pop(name, None)

    def set_adapter(self, names: str | Sequence[str]) -> None:
        """Activate `names` (one or several; their outputs add up), deactivate the rest."""
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if n not in self.specs]
        if unknown:
            raise ValueError(f"unknown adapters {unknown}; have {sorted(self.specs)}")
        self.active_adapters = wanted

    def adapter_parameters(self, name: str) -> Iterable[tuple[str, nn.Parameter]]:
        """(attribute path, parameter) of adapter `name`, e.g. `("lora_A.default.weight", p)`."""
        for prefix, container in (
            ("lora_A", self.lora_A),
            ("lora_B", self.lora_B),
            ("router", self.router),
        ):
            if name in container:
                yield (
                    f"{prefix}.{name}.weight",
                    cast(nn.Parameter, cast(nn.Linear, container[name]).weight),
                )
        for prefix, params in (("ia3_l", self.ia3_l), ("moe_A", self.moe_A), ("moe_B", self.moe_B)):
            if name in params:
                yield f"{prefix}.{name}", cast(nn.Parameter, params[name])

    # -- forward -------------------------------------------------------------------------------

    def _ia3_product(self, mode: Ia3Mode) -> Tensor | None:
        """Product of the active, unmerged adapters' IA³ vectors of `mode`, flattened."""
        scale: Tensor | None = None
        for name in self.active_adapters:
            spec = self.specs[name]
            if spec.use_ia3 and spec.ia3_mode == mode and name not in self.merged_adapters:
                g = self.ia3_l[name].flatten()
                scale = g if scale is None else scale * g
        return scale

    def _moe(self, name: str, x: Tensor, dropped: Tensor) -> Tensor:
        spec = self.specs[name]
        router = cast(nn.Linear, self.router[name])
        flat_x = x.reshape(-1, self.in_features).to(router.weight.dtype)
        if self.training and spec.router_jitter > 0:
            noise = torch.empty_like(flat_x).uniform_(
                1.0 - spec.router_jitter, 1.0 + spec.router_jitter
            )
            flat_x = flat_x * noise
        routing = route(router(flat_x), spec.top_k, spec.renormalize)
        self._record(name, routing)
        flat_d = dropped.reshape(-1, self.in_features)
        moe_a, moe_b = self.moe_A[name], self.moe_B[name]
        if spec.moe_impl == "gather":
            mixed = expert_mix_gather(flat_d, moe_a, moe_b, routing)
        else:
            mixed = expert_mix_dense(flat_d, moe_a, moe_b, routing.gates)
        return (mixed * spec.moe_scaling).view(*x.shape[:-1], self.out_features)

    def _record(self, name: str, routing: Routing) -> None:
        """Keep the balance loss (with its graph) and accumulate routing statistics."""
        self._aux[name] = balance_loss(routing)
        with torch.no_grad():
            load = getattr(self, f"_load_{name}")
            load.add_(
                torch.zeros_like(load).scatter_add_(
                    0,
                    routing.indices.reshape(-1),
                    torch.ones_like(routing.indices.reshape(-1), dtype=load.dtype),
                )
            )
            getattr(self, f"_entropy_{name}").add_(routing_entropy(routing.probs).sum())
            getattr(self, f"_tokens_{name}").add_(routing.probs.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """Apply the wrapped layer and the active adapters; (..., in) → (..., out)."""
        if self.disable_adapters:
            if self.merged_adapters:
                self.unmerge()
            return cast(Tensor, self.base_layer(x))
        previous_dtype = x.dtype
        g_in = self._ia3_product("input")
        if g_in is not None:
            result = self.base_layer((x.to(g_in.dtype) * g_in).to(previous_dtype))
        else:
            result = self.base_layer(x)
        g_out = self._ia3_product("output")
        if g_out is not None:
            result = (result * g_out).to(result.dtype)
        for name in self.active_adapters:
            spec = self.specs[name]
            merged = name in self.merged_adapters
            if not (spec.use_moe or (spec.use_lora and not merged)):
                continue
            dropout = self.lora_dropout[name]
            dropped = dropout(x.to(torch.float32))
            if spec.use_lora and not merged:
                lora_a, lora_b = self.lora_A[name], self.lora_B[name]
                result = result + cast(Tensor, lora_b(lora_a(dropped))) * spec.scaling
            if spec.use_moe:
                result = result + self._moe(name, x, dropped)
        return cast(Tensor, result).to(previous_dtype)

    # -- statistics ----------------------------------------------------------------------------

    def aux_loss(self) -> Tensor | None:
        """Sum of the balance losses of the active MoE adapters from the last forward, or None."""
        losses = [self._aux[n] for n in self.active_adapters if n in self._aux]
        return torch.stack(losses).sum() if losses else None

    def get_routing_stats(self, name: str = "default") -> dict[str, Tensor]:
        """Routing since the last reset: `load` (E,) share of assignments per expert,
        `entropy` mean router entropy (nats), `tokens` routed tokens."""
        if name not in self.specs or not self.specs[name].use_moe:
            raise ValueError(f"adapter {name!r} has no mixture of experts")
        load = getattr(self, f"_load_{name}")
        tokens = getattr(self, f"_tokens_{name}")
        return {
            "load": load / load.sum().clamp_min(1.0),
            "entropy": getattr(self, f"_entropy_{name}") / tokens.clamp_min(1.0),
            "tokens": tokens.clone(),
        }

    def reset_routing_stats(self) -> None:
        """Zero the routing statistics of every adapter."""
        for name, spec in self.specs.items():
            if spec.use_moe:
                for prefix in ("_load_", "_entropy_", "_tokens_"):
                    getattr(self, prefix + name).zero_()

    # -- merging -------------------------------------------------------------------------------

    def _delta(self, name: str) -> tuple[Tensor | None, Tensor | None]:
        """(g, s·B·A) of adapter `name` in float32, each None when the branch is off."""
        spec = self.specs[name]
        g = self.ia3_l[name].detach().flatten() if spec.use_ia3 else None
        delta = None
        if spec.use_lora:
            a = cast(nn.Linear, self.lora_A[name]).weight.detach()
            b = cast(nn.Linear, self.lora_B[name]).weight.detach()
            delta = (b @ a) * spec.scaling  # (out, in)
        return g, delta

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        """Fold the LoRA and IA³ branches of `adapter_names` (default: the active ones) into the
        base weight. A mixture branch stays unmerged and keeps running.

        Args:
            safe_merge: compute the merged weight on a copy and raise `ValueError` if it is not
                finite, leaving the layer unchanged.
        """
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        for name in names:
            if name not in self.specs:
                raise ValueError(f"unknown adapter {name!r}")
            if name in self.merged_adapters:
                continue
            if self.specs[name].use_ia3 and any(
                self.specs[m].use_lora for m in self.merged_adapters
            ):
                raise ValueError(
                    f"cannot merge IA³ adapter {name!r} on top of merged LoRA adapters "
                    f"{self.merged_adapters}: IA³ would rescale their updates; unmerge first"
                )
            weight = _weight_of(self.base_layer)
            bias = getattr(self.base_layer, "bias", None)
            w = weight.detach().float()
            w = w.t() if self.fan_in_fan_out else w  # (out, in)
            b = bias.detach().float() if isinstance(bias, Tensor) else None
            g, delta = self._delta(name)
            mode = self.specs[name].ia3_mode
            if g is not None:
                w = w * (g.unsqueeze(1) if mode == "output" else g.unsqueeze(0))
                if b is not None and mode == "output":
                    b = b * g
            if delta is not None:
                w = w + delta
            if safe_merge and not (
                torch.isfinite(w).all() and (b is None or torch.isfinite(b).all())
            ):
                raise ValueError(f"merging adapter {name!r} gives non-finite weights; not merged")
            with torch.no_grad():
                weight.copy_((w.t() if self.fan_in_fan_out else w).to(weight.dtype))
                if isinstance(bias, Tensor) and b is not None:
                    bias.copy_(b.to(bias.dtype))
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Undo `merge`, last merged first. Dividing by IA³ vectors is exact only up to rounding;
        entries with |g| < 1e-8 are divided by ±1e-8 (with a warning)."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight = _weight_of(self.base_layer)
            bias = getattr(self.base_layer, "bias", None)
            w = weight.detach().float()
            w = w.t() if self.fan_in_fan_out else w
            b = bias.detach().float() if isinstance(bias, Tensor) else None
            g, delta = self._delta(name)
            mode = self.specs[name].ia3_mode
            if delta is not None:
                w = w - delta
            if g is not None:
                small = g.abs() < 1e-8
                if bool(small.any()):
                    warnings.warn(
                        f"unmerging IA³ adapter {name!r}: {int(small.sum())} scales below 1e-8 "
                        "in magnitude; the unmerged weights are inexact",
                        UserWarning,
                        stacklevel=2,
                    )
                safe = torch.where(small, torch.full_like(g, 1e-8).copysign(g), g)
                w = w / (safe.unsqueeze(1) if mode == "output" else safe.unsqueeze(0))
                if b is not None and mode == "output":
                    b = b / safe
            with torch.no_grad():
                weight.copy_((w.t() if self.fan_in_fan_out else w).to(weight.dtype))
                if isinstance(bias, Tensor) and b is not None:
                    bias.copy_(b.to(bias.dtype))

    def __getstate__(self) -> dict[str, object]:
        # the last balance losses hold autograd graphs, which cannot be deep-copied or pickled
        state = self.__dict__.copy()
        state["_aux"] = {}
        return state

    def extra_repr(self) -> str:
        parts = [f"in={self.in_features}, out={self.out_features}"]
        for name, spec in self.specs.items():
            branches = [
                f"lora(r={spec.rank})" if spec.use_lora else "",
                f"ia3({spec.ia3_mode})" if spec.use_ia3 else "",
                f"moe(E={spec.num_experts}, k={spec.top_k}, r={spec.moe_rank})"
                if spec.use_moe
                else "",
            ]
            parts.append(f"{name}: " + " + ".join(b for b in branches if b))
        return ", ".join(parts)
