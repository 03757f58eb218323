"""Which modules of a model a `PolyAdapterConfig` targets: PEFT's matching rules, made inspectable.

Rules (the same as PEFT's, so a config means the same thing in both libraries):

* `exclude_modules` is checked first, with the same rules as `target_modules`;
* a string `target_modules` is a regular expression that must match the whole module name
  (`re.fullmatch`); a list matches a name equal to an entry or ending in `"." + entry`;
* `"all-linear"` targets every `nn.Linear` except the output head and `modules_to_save`;
* `layers_to_transform` keeps only modules inside those layer indices (the integer after
  `layers_pattern`, or after the first `name.<int>.` segment when no pattern is given);
* `rank_pattern` / `alpha_pattern` keys match a name as `(.*\\.)?key$`.

A target that matches nothing raises `ValueError` ("Target modules ... not found"); with
`strict_targets=True`, so does any single list entry that matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from .config import PolyAdapterConfig, Targets

__all__ = ["TargetReport", "inspect_targets", "layer_index", "pattern_value"]


@dataclass(frozen=True)
class TargetReport:
    """The outcome of matching a config against a model.

    Attributes:
        matched: targeted module names, in `named_modules()` order.
        shapes: name → (in_features, out_features) of each matched module.
        unmatched: entries of a list `target_modules` (or the regex) that matched no module.
    """

    matched: tuple[str, ...]
    shapes: dict[str, tuple[int, int]]
    unmatched: tuple[str, ...]


def _matches(name: str, targets: Targets) -> str | None:
    """The entry of `targets` that matches `name` (the regex itself for a string), else None."""
    if targets is None:
        return None
    if isinstance(targets, str):
        return targets if re.fullmatch(targets, name) else None
    for entry in targets:
        if name == entry or name.endswith("." + entry):
            return entry
    return None


def layer_index(name: str, layers_pattern: str | tuple[str, ...] | None = None) -> int | None:
    """The layer index in a module name (`encoder.layer.3.attention` → 3), or None."""
    if layers_pattern is None:
        found = re.match(r"(?:.*\.)?[^.]+\.(\d+)(?:\.|$)", name)
    else:
        patterns = (layers_pattern,) if isinstance(layers_pattern, str) else layers_pattern
        found = None
        for pattern in patterns:
            found = re.match(rf"(?:.*\.)?{re.escape(pattern)}\.(\d+)(?:\.|$)", name)
            if found:
                break
    return int(found.group(1)) if found else None


def pattern_value(
    name: str, pattern: Mapping[str, int] | Mapping[str, float]
) -> int | float | None:
    """The `rank_pattern`/`alpha_pattern` value for module `name` (first matching key), or None."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return None


def _shape(module: nn.Module, fan_in_fan_out: bool) -> tuple[int, int] | None:
    """(in, out) of a linear-like module: `nn.Linear`, a wrapped PolyAdapter, or a (in, out)
    weight layer when `fan_in_fan_out` (GPT-2's `Conv1D`)."""
    from .poly_adapter import PolyAdapter

    if isinstance(module, PolyAdapter):
        return module.in_features, module.out_features
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if fan_in_fan_out and isinstance(weight, nn.Parameter) and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def _output_head_names(model: nn.Module) -> set[str]:
    """Names of the output-embedding module (the LM head), which `"all-linear"` never targets."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if head is None:
        return set()
    return {name for name, module in model.named_modules() if module is head}


def _candidates(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """Named modules, skipping the inside of PolyAdapters (their `base_layer`, experts, ...)."""
    from .poly_adapter import PolyAdapter

    inside: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, PolyAdapter):
            inside.append(name)
        yield name, module


def inspect_targets(model: nn.Module, config: PolyAdapterConfig) -> TargetReport:
    """Match `config` against `model` without changing it.

    Args:
        model: any module; names are relative to it.
        config: a config whose `target_modules` is set (see `PolyAdapterConfig.with_defaults_for`).

    Raises:
        ValueError: `target_modules` is None, nothing matches, a matched module is not linear, or
            (with `config.strict_targets`) a list entry matches nothing.
    """
    targets = config.target_modules
    if targets is None:
        raise ValueError("target_modules is None: resolve it with config.with_defaults_for(...)")
    save = config.modules_to_save or ()
    all_linear = targets == "all-linear"
    heads = _output_head_names(model) if all_linear else set()
    hit_entries: set[str] = set()
    matched: list[str] = []
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in _candidates(model):
        if _matches(name, config.exclude_modules) is not None:
            continue
        if any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in save):
            continue
        if all_linear:
            if not isinstance(module, nn.Linear) or name in heads:
                continue
            entry = "all-linear"
        else:
            found = _matches(name, targets)
            if found is None:
                continue
            entry = found
        if config.layers_to_transform is not None:
            wanted = config.layers_to_transform
            wanted = (wanted,) if isinstance(wanted, int) else wanted
            if layer_index(name, config.layers_pattern) not in wanted:
                continue
        shape = _shape(module, config.fan_in_fan_out)
        if shape is None:
            raise ValueError(
                f"target module {name!r} is a {type(module).__name__}; PolyAdapter wraps linear "
                "layers only (nn.Linear, or an (in, out) weight layer with fan_in_fan_out=True)"
            )
        hit_entries.add(entry)
        matched.append(name)
        shapes[name] = shape
    listed = (targets,) if isinstance(targets, str) else targets
    unmatched = tuple(t for t in listed if t not in hit_entries)
    if not matched:
        raise ValueError(
            f"Target modules {sorted(listed)} not found in the base model "
            f"({type(model).__name__}); check target_modules, exclude_modules and "
            "layers_to_transform against [name for name, _ in model.named_modules()]"
        )
    if config.strict_targets and unmatched:
        raise ValueError(
            f"strict_targets=True and these target_modules matched nothing: {unmatched}"
        )
    return TargetReport(tuple(matched), shapes, unmatched)
