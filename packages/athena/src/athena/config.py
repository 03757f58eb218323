"""`PolyAdapterConfig`: which modules get a PolyAdapter and what each branch looks like.

The LoRA fields carry PEFT's `LoraConfig` names and defaults (`r=8`, `lora_alpha=8`,
`lora_dropout=0.0`, ...), so a PEFT user's config reads the same here; `use_lora`, `use_ia3` and
`use_moe` switch the three branches of `athena.PolyAdapter`, and the MoE fields size the mixture of
LoRA experts. A config holding only the LoRA branch is saved as a PEFT `LORA` adapter, one holding
only IA³ as a PEFT `IA3` adapter, anything else as `ATHENA_POLY` (see `athena.peft_format`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._checks import check_dropout, check_mixture, check_moe_impl, check_switches

__all__ = ["ATHENA_VERSION", "DEFAULT_TARGETS", "PeftType", "PolyAdapterConfig"]

ATHENA_VERSION = "0.1.0"
CONFIG_NAME = "adapter_config.json"
PeftType = Literal["LORA", "IA3", "ATHENA_POLY"]

#: Per-architecture default targets (`config.model_type` → names), the same choices PEFT makes:
#: LoRA on the query and value projections; IA³ on key, value and the feed-forward output, the
#: last one scaled on its input ("feedforward" modules).
DEFAULT_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "lora": {
        "bert": ("query", "value"),
        "roberta": ("query", "value"),
        "xlm-roberta": ("query", "value"),
        "electra": ("query", "value"),
        "deberta-v2": ("query_proj", "value_proj"),
        "llama": ("q_proj", "v_proj"),
        "mistral": ("q_proj", "v_proj"),
        "qwen2": ("q_proj", "v_proj"),
        "opt": ("q_proj", "v_proj"),
    },
    "ia3": {
        "bert": ("key", "value", "output.dense"),
        "roberta": ("key", "value", "output.dense"),
        "deberta-v2": ("key_proj", "value_proj", "output.dense"),
        "llama": ("k_proj", "v_proj", "down_proj"),
        "mistral": ("k_proj", "v_proj", "down_proj"),
        "opt": ("q_proj", "k_proj", "fc2"),
    },
    "ia3_feedforward": {
        "bert": ("output.dense",),
        "roberta": ("output.dense",),
        "deberta-v2": ("output.dense",),
        "llama": ("down_proj",),
        "mistral": ("down_proj",),
        "opt": ("fc2",),
    },
}

Targets = str | Sequence[str] | None  # lists as in PEFT; stored as a tuple


def _as_targets(name: str, value: object) -> Targets:
    """Normalise a target field to `None`, a regex string, or a tuple of names."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Sequence | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if not all(isinstance(v, str) and v for v in items):
            raise ValueError(f"{name} must hold non-empty strings, got {value!r}")
        return tuple(items)
    raise TypeError(
        f"{name} must be None, a string or a list of strings, got {type(value).__name__}"
    )


@dataclass(frozen=True, kw_only=True)
class PolyAdapterConfig:
    """Where PolyAdapters go and how each is built.

    Args:
        r: LoRA rank (PEFT default 8); must be ≥ 1 when `use_lora`.
        lora_alpha: LoRA scale numerator: s = lora_alpha / r (or / √r with `use_rslora`).
        lora_dropout: dropout on the adapter input of the LoRA and MoE branches.
        target_modules: module names to adapt: a string is matched with `re.fullmatch` against the
            full module name, a list by exact name or `.`-suffix; `"all-linear"` targets every
            `nn.Linear` but the output head. `None` takes the architecture's default.
        exclude_modules: names never adapted (same matching rules), checked first.
        layers_to_transform: only adapt modules in these layer indices.
        layers_pattern: the container name before the layer index (`"layer"`, `"layers"`, `"h"`).
        rank_pattern: per-module rank overrides; keys match `(.*\\.)?key$`.
        alpha_pattern: per-module `lora_alpha` overrides, same keys.
        use_rslora: scale by lora_alpha / √r ("A Rank Stabilization Scaling Factor for
            Fine-Tuning with LoRA").
        init_lora_weights: `True` puts B = 0 (identity at init); `False` draws B too (tests only).
        modules_to_save: extra modules (heads) trained in full and saved with the adapter.
        bias: only `"none"` (biases stay frozen) is supported.
        fan_in_fan_out: the wrapped layer stores its weight as (in, out) (GPT-2's `Conv1D`).
        task_type: PEFT task type (`"SEQ_CLS"`, `"CAUSAL_LM"`, ...); `SEQ_CLS` adds the head
            (`classifier` or `score`) to `modules_to_save`.
        inference_mode: loaded adapters are frozen.
        base_model_name_or_path: the base model, recorded in the saved config.
        revision: the base model's revision, recorded in the saved config.
        use_lora: the LoRA branch (at least one of the three branches must be on).
        use_ia3: the IA³ branch.
        use_moe: the mixture of LoRA experts.
        feedforward_modules: targets whose IA³ vector scales the input instead of the output.
        num_experts: how many LoRA experts the mixture has.
        top_k: how many experts serve each token (`top_k == num_experts` is soft merging of all
            experts).
        moe_rank: rank of each expert (default: `r`).
        moe_alpha: alpha of each expert (default: `lora_alpha`).
        renormalize: renormalise the selected experts' router probabilities to sum to one.
        router_jitter: multiplicative uniform noise on the router input while training.
        aux_loss_coef: weight of the Switch balance loss returned by `athena_aux_loss()`.
        moe_impl: `"dense"` computes all experts' low-rank factors in two matmuls and zeroes the
            unselected ones; `"gather"` gathers only the selected experts' factors per token.
        strict_targets: raise when any entry of a list `target_modules` matches nothing.
        athena_version: the version that wrote the config.
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: Targets = None
    exclude_modules: Targets = None
    layers_to_transform: int | tuple[int, ...] | None = None
    layers_pattern: str | tuple[str, ...] | None = None
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    init_lora_weights: bool = True
    modules_to_save: tuple[str, ...] | None = None
    bias: Literal["none"] = "none"
    fan_in_fan_out: bool = False
    task_type: str | None = None
    inference_mode: bool = False
    base_model_name_or_path: str | None = None
    revision: str | None = None
    use_lora: bool = True
    use_ia3: bool = False
    use_moe: bool = False
    feedforward_modules: Targets = None
    num_experts: int = 4
    top_k: int = 1
    moe_rank: int | None = None
    moe_alpha: float | None = None
    renormalize: bool = True
    router_jitter: float = 0.0
    aux_loss_coef: float = 0.01
    moe_impl: Literal["dense", "gather"] = "dense"
    strict_targets: bool = False
    athena_version: str = ATHENA_VERSION

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("target_modules", "exclude_modules", "feedforward_modules"):
            set_(self, name, _as_targets(name, getattr(self, name)))
        if self.modules_to_save is not None:
            mts = _as_targets("modules_to_save", self.modules_to_save)
            set_(self, "modules_to_save", (mts,) if isinstance(mts, str) else mts)
        if isinstance(self.layers_to_transform, Sequence):
            set_(self, "layers_to_transform", tuple(int(i) for i in self.layers_to_transform))
        if isinstance(self.layers_pattern, list):
            set_(self, "layers_pattern", tuple(self.layers_pattern))
        set_(self, "rank_pattern", dict(self.rank_pattern))
        set_(self, "alpha_pattern", dict(self.alpha_pattern))
        self._validate()

    def _validate(self) -> None:
        check_switches(self.use_lora, self.use_ia3, self.use_moe)
        if self.use_lora and (not isinstance(self.r, int) or self.r < 1):
            raise ValueError(
                f"r must be a positive int when use_lora=True, got {self.r!r} "
                "(rank 0 means: do not target this module; use exclude_modules)"
            )
        for key, rank in self.rank_pattern.items():
            if not isinstance(rank, int) or rank < 0:
                raise ValueError(f"rank_pattern[{key!r}] must be an int >= 0, got {rank!r}")
        check_dropout(self.lora_dropout, "lora_dropout")
        if self.bias != "none":
            raise ValueError(f"bias={self.bias!r} is not supported: only 'none' (frozen biases)")
        if self.use_moe:
            check_mixture(
                num_experts=self.num_experts,
                top_k=self.top_k,
                moe_rank=self.moe_rank,
                router_jitter=self.router_jitter,
                k_name="top_k",
            )
        check_moe_impl(self.moe_impl)
        if self.aux_loss_coef < 0:
            raise ValueError(f"aux_loss_coef must be >= 0, got {self.aux_loss_coef!r}")
        if self.feedforward_modules is not None and not self.use_ia3:
            raise ValueError("feedforward_modules only applies with use_ia3=True")

    # -- derived -------------------------------------------------------------------------------

    @property
    def peft_type(self) -> PeftType:
        """`"LORA"` or `"IA3"` when the config is exactly that PEFT method, else `"ATHENA_POLY"`."""
        if self.use_lora and not self.use_ia3 and not self.use_moe:
            return "LORA"
        if self.use_ia3 and not self.use_lora and not self.use_moe:
            return "IA3"
        return "ATHENA_POLY"

    @property
    def expert_rank(self) -> int:
        """Rank of each MoE expert."""
        return self.moe_rank if self.moe_rank is not None else self.r

    @property
    def expert_alpha(self) -> float:
        """Alpha of each MoE expert."""
        return self.moe_alpha if self.moe_alpha is not None else self.lora_alpha

    def replace(self, **changes: Any) -> PolyAdapterConfig:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def with_defaults_for(self, model_type: str | None) -> PolyAdapterConfig:
        """Fill `target_modules` (and IA³ `feedforward_modules`) from `DEFAULT_TARGETS`.

        Raises:
            ValueError: `target_modules` is None and the architecture has no default.
        """
        if self.target_modules is not None:
            return self
        table = "lora" if (self.use_lora or self.use_moe) else "ia3"
        targets = DEFAULT_TARGETS[table].get(model_type or "")
        if targets is None:
            raise ValueError(
                f"target_modules=None and no default targets for model_type={model_type!r}; "
                "pass target_modules explicitly (a list of module names, a regex, or 'all-linear')"
            )
        changes: dict[str, Any] = {"target_modules": targets}
        if table == "ia3" and self.feedforward_modules is None:
            changes["feedforward_modules"] = DEFAULT_TARGETS["ia3_feedforward"].get(
                model_type or ""
            )
        return self.replace(**changes)

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus `peft_type`; lists where the dataclass holds tuples."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["peft_type"] = self.peft_type
        return out

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write `adapter_config.json` (the layout of `athena.peft_format`)."""
        from .peft_format import config_to_json_dict

        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as fh:
            json.dump(config_to_json_dict(self), fh, indent=2, sort_keys=True)
            fh.write("\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolyAdapterConfig:
        """Build from a saved dict (ours or PEFT's LORA/IA3); unknown keys dropped with a warning."""
        from .peft_format import config_from_json_dict

        return config_from_json_dict(data)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> PolyAdapterConfig:
        """Read `adapter_config.json` from `directory`."""
        path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {CONFIG_NAME} in {os.fspath(directory)!r}")
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))
