"""`inject_polyadapter`: wrap a model's target layers in PolyAdapters, in place.

Works on any `nn.Module`. Each module the config matches (`athena.matching`) is replaced by a
`PolyAdapter` around it, or — when it is already one — gets one more adapter. Modules named in
`modules_to_save` are wrapped so each adapter trains its own copy (`ModulesToSaveWrapper`). Then
only adapter parameters and the copies stay trainable, as in PEFT.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from .config import PolyAdapterConfig
from .matching import TargetReport, _matches, inspect_targets, pattern_value
from .modules_to_save import ModulesToSaveWrapper
from .poly_adapter import AdapterSpec, PolyAdapter

__all__ = [
    "adapter_spec_for",
    "inject_polyadapter",
    "mark_only_adapters_trainable",
    "resolve_config",
    "set_submodule",
]

_SEQ_CLS_HEADS = ("classifier", "score")


def resolve_config(model: nn.Module, config: PolyAdapterConfig) -> PolyAdapterConfig:
    """Fill architecture defaults (targets) and the task's heads (`SEQ_CLS` saves the head)."""
    hf_config = getattr(model, "config", None)
    config = config.with_defaults_for(getattr(hf_config, "model_type", None))
    if config.task_type == "SEQ_CLS":
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        heads = tuple(h for h in _SEQ_CLS_HEADS if h in names)
        saved = tuple(config.modules_to_save or ())
        extra = tuple(h for h in heads if h not in saved)
        if extra:
            config = config.replace(modules_to_save=saved + extra)
    return config


def adapter_spec_for(name: str, config: PolyAdapterConfig) -> AdapterSpec | None:
    """The adapter that `config` puts on module `name`, or None when its LoRA rank is 0 and it
    has no other branch (rank 0 means: do not adapt this module)."""
    rank = pattern_value(name, config.rank_pattern)
    rank = config.r if rank is None else int(rank)
    alpha = pattern_value(name, config.alpha_pattern)
    alpha = config.lora_alpha if alpha is None else float(alpha)
    use_lora = config.use_lora and rank > 0
    if not (use_lora or config.use_ia3 or config.use_moe):
        return None
    feedforward = config.use_ia3 and _matches(name, config.feedforward_modules) is not None
    return AdapterSpec(
        rank=max(rank, 1) if not use_lora else rank,
        alpha=alpha,
        dropout=config.lora_dropout,
        use_lora=use_lora,
        use_ia3=config.use_ia3,
        use_moe=config.use_moe,
        ia3_mode="input" if feedforward else "output",
        num_experts=config.num_experts,
        top_k=config.top_k,
        moe_rank=config.expert_rank,
        moe_alpha=config.expert_alpha,
        renormalize=config.renormalize,
        router_jitter=config.router_jitter,
        use_rslora=config.use_rslora,
        moe_impl=config.moe_impl,
    )


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted path) of `model` by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def mark_only_adapters_trainable(model: nn.Module, adapter_names: list[str]) -> None:
    """Freeze everything except the parameters of `adapter_names` (adapters and saved copies)."""
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, PolyAdapter):
            for name in adapter_names:
                if name in module.specs:
                    for _, param in module.adapter_parameters(name):
                        param.requires_grad_(True)
        elif isinstance(module, ModulesToSaveWrapper):
            for name in adapter_names:
                if name in module.modules_to_save:
                    module.modules_to_save[name].requires_grad_(True)


def inject_polyadapter(
    model: nn.Module, config: PolyAdapterConfig, adapter_name: str = "default"
) -> TargetReport:
    """Add adapter `adapter_name` described by `config` to `model`, in place.

    Args:
        model: any module (a Hugging Face model gets its architecture's default targets when
            `config.target_modules` is None).
        config: the adapter.
        adapter_name: its name (no dots).

    Returns:
        The matching report (which modules were wrapped, which list entries matched nothing).

    Raises:
        ValueError: nothing matched, a match is not linear, or the adapter name is taken.
    """
    config = resolve_config(model, config)
    report = inspect_targets(model, config)
    for name in report.matched:
        module = model.get_submodule(name)
        spec = adapter_spec_for(name, config)
        if spec is None:
            continue
        if isinstance(module, PolyAdapter):
            module.add_adapter(adapter_name, spec, init_lora_weights=config.init_lora_weights)
            continue
        wrapped = PolyAdapter(
            base_layer=module,
            rank=spec.rank,
            alpha=spec.alpha,
            dropout=spec.dropout,
            use_lora=spec.use_lora,
            use_ia3=spec.use_ia3,
            use_moe=spec.use_moe,
            num_experts=spec.num_experts,
            k=spec.top_k,
            ia3_mode=spec.ia3_mode,
            moe_rank=spec.moe_rank,
            moe_alpha=spec.moe_alpha,
            renormalize=spec.renormalize,
            router_jitter=spec.router_jitter,
            use_rslora=spec.use_rslora,
            adapter_name=adapter_name,
            init_lora_weights=config.init_lora_weights,
            fan_in_fan_out=config.fan_in_fan_out,
            moe_impl=spec.moe_impl,
        )
        set_submodule(model, name, wrapped)
    for name in _modules_to_save(model, config):
        module = model.get_submodule(name)
        if isinstance(module, ModulesToSaveWrapper):
            module.add_adapter(adapter_name)
        else:
            set_submodule(model, name, ModulesToSaveWrapper(module, adapter_name))
    mark_only_adapters_trainable(model, [adapter_name])
    return report


def _modules_to_save(model: nn.Module, config: PolyAdapterConfig) -> list[str]:
    """Names of the modules `config.modules_to_save` selects (outermost matches only)."""
    wanted = config.modules_to_save or ()
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f + ".") for f in found):
            continue
        if isinstance(cast(object, module), PolyAdapter):
            continue
        if any(name == w or name.endswith("." + w) for w in wanted):
            found.append(name)
    missing = [w for w in wanted if not any(n == w or n.endswith("." + w) for n in found)]
    if missing:
        raise ValueError(f"modules_to_save {missing} not found in {type(model).__name__}")
    return found
