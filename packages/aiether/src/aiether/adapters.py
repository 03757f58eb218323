"""Where a model keeps its blocks: ``StackAdapter``, ``for_model``, ``make_growable``, ``export_compact``.

A :class:`StackAdapter` names the block list (a dotted attribute path), the submodules of a
block that write into the residual stream (zeroed by ``preserve="zero_out"``) and the config
attribute holding the layer count. :func:`for_model` knows our :class:`~aiether.model.AIetherGPT`,
Hugging Face GPT-2 (``transformer.h``; ``attn.c_proj``, ``mlp.c_proj``) and the Llama family
(``model.layers``; ``self_attn.o_proj``, ``mlp.down_proj``); any other stack is one
``StackAdapter(path, out_proj_names)`` away. Nothing here imports transformers: models are
recognised by their structure.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from aiether.model import OUT_PROJ_NAMES, AIetherGPT
from aiether.stack import GrowableStack, Preserve, SlotOrder

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass(frozen=True, kw_only=True)
class StackAdapter:
    """How to find and grow a model's blocks.

    Attributes:
        path: dotted attribute path of the block list (``"transformer.h"``).
        out_proj_names: per-block submodules whose output enters the residual stream.
        layer_count_attr: the config attribute with the number of layers (updated by
            :func:`export_compact`), or ``None``.
        cache_guard: whether block calls can carry ``use_cache`` (Hugging Face models).
    """

    path: str
    out_proj_names: tuple[str, ...]
    layer_count_attr: str | None = None
    cache_guard: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must name the block list, got ''")
        object.__setattr__(self, "out_proj_names", tuple(self.out_proj_names))

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The block list of ``model``.

        Raises:
            ValueError: nothing at ``path``, or not an ``nn.ModuleList``.
        """
        try:
            found = model.get_submodule(self.path)
        except AttributeError as err:
            raise ValueError(f"{type(model).__name__} has no submodule {self.path!r}") from err
        if not isinstance(found, nn.ModuleList):
            raise ValueError(f"{self.path!r} is a {type(found).__name__}, not an nn.ModuleList")
        return found


GPT2_PROJ = ("attn.c_proj", "mlp.c_proj")
LLAMA_PROJ = ("self_attn.o_proj", "mlp.down_proj")


def _has(model: nn.Module, path: str) -> bool:
    try:
        return isinstance(model.get_submodule(path), nn.ModuleList)
    except AttributeError:
        return False


def _block_has(blocks: nn.ModuleList, names: Sequence[str]) -> bool:
    block = blocks[0] if not isinstance(blocks, GrowableStack) else blocks._block(0)
    try:
        for n in names:
            block.get_submodule(n)
    except AttributeError:
        return False
    return True


def for_model(model: nn.Module) -> StackAdapter:
    """The adapter for a known model family.

    Raises:
        TypeError: the model is none of the known layouts (pass a :class:`StackAdapter`).
    """
    if isinstance(model, AIetherGPT):
        return StackAdapter(path="h", out_proj_names=OUT_PROJ_NAMES, layer_count_attr=None)
    hf = callable(getattr(getattr(model, "config", None), "to_dict", None))
    candidates = (
        ("transformer.h", GPT2_PROJ, "n_layer"),
        ("h", GPT2_PROJ, "n_layer"),
        ("model.layers", LLAMA_PROJ, "num_hidden_layers"),
        ("layers", LLAMA_PROJ, "num_hidden_layers"),
        ("model.h", OUT_PROJ_NAMES, "n_layer"),
    )
    for path, proj, attr in candidates:
        if _has(model, path) and _block_has(model.get_submodule(path), proj):  # type: ignore[arg-type]
            return StackAdapter(
                path=path, out_proj_names=proj, layer_count_attr=attr, cache_guard=hf
            )
    raise TypeError(
        f"no known block layout in {type(model).__name__}: pass "
        "StackAdapter(path='…', out_proj_names=(…)) for it"
    )


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def _set_config(model: nn.Module, **fields: Any) -> None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "__dict__"):
        return
    try:
        for key, value in fields.items():
            setattr(config, key, value)
    except (AttributeError, TypeError):  # a frozen dataclass config (AIetherGPT's own)
        return


def make_growable(
    model: nn.Module,
    adapter: StackAdapter | None = None,
    *,
    initial_active: int = 1,
    slot_order: SlotOrder | Sequence[int] = "top_down",
    preserve: Preserve = "zero_out",
    ramp_steps: int = 200,
) -> GrowableStack:
    """Replace ``model``'s block list by a :class:`GrowableStack` of the same blocks (state-dict
    keys unchanged) and return it. An already growable stack is returned as it is.

    On a Hugging Face model it also records ``aiether_max_layers`` and ``aiether_active_layers``
    in the config and sets ``config.use_cache = False`` (a cache cannot skip inactive layers;
    :func:`export_compact` turns it back on).
    """
    adapter = adapter or for_model(model)
    blocks = adapter.blocks(model)
    if isinstance(blocks, GrowableStack):
        return blocks
    stack = GrowableStack(
        list(blocks),
        initial_active=initial_active,
        slot_order=slot_order,
        preserve=preserve,
        out_proj_names=adapter.out_proj_names,
        ramp_steps=ramp_steps,
        cache_guard=adapter.cache_guard,
    )
    first = next(iter(blocks.parameters()), None)
    if first is not None:
        stack.to(first.device)
    _set_submodule(model, adapter.path, stack)
    record_active(model, stack)
    if adapter.cache_guard and not stack.is_full:
        _set_config(model, use_cache=False)
    return stack


def record_active(model: nn.Module, stack: GrowableStack) -> None:
    """Write the active set into ``model.config`` (``aiether_active_layers``, ``aiether_max_layers``)."""
    _set_config(
        model, aiether_active_layers=stack.active_slots, aiether_max_layers=stack.max_layers
    )


def export_compact(model: ModelT, adapter: StackAdapter | None = None) -> ModelT:
    """A deep copy of ``model`` whose block list holds only the active blocks (a plain
    ``nn.ModuleList``), with the config's layer count set to the active depth, the aiether
    fields removed and, for Hugging Face models, ``use_cache`` restored to True."""
    adapter = adapter or for_model(model)
    stack = adapter.blocks(model)
    if not isinstance(stack, GrowableStack):
        raise ValueError(f"{adapter.path!r} is not a GrowableStack: nothing to export")
    out = copy.deepcopy(model)
    compact = stack.export_compact()
    _set_submodule(out, adapter.path, compact)
    config = getattr(out, "config", None)
    if config is not None and adapter.layer_count_attr is not None:
        _set_config(out, **{adapter.layer_count_attr: len(compact)})
        for key in ("aiether_active_layers", "aiether_max_layers"):
            if hasattr(config, key):
                delattr(config, key)
        if adapter.cache_guard:
            _set_config(out, use_cache=True)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) != len(compact):
            _set_config(out, layer_types=[layer_types[s] for s in stack.active_slots])
    return out
