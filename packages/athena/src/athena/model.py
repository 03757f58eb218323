"""`AthenaModel`: a model with PolyAdapters, with PEFT's `PeftModel` API and file layout.

`get_athena_model(model, config)` wraps the model as `athena_model.base_model.model`, so
parameter names start with `base_model.model.` exactly as under PEFT and saved adapters load in
either library. The base model is frozen; adapters and `modules_to_save` copies train.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .config import CONFIG_NAME, PolyAdapterConfig
from .injection import (
    inject_polyadapter,
    mark_only_adapters_trainable,
    resolve_config,
    set_submodule,
)
from .modules_to_save import ModulesToSaveWrapper
from .peft_format import (
    WEIGHTS_NAME,
    adapter_key_to_file,
    config_from_json_dict,
    config_to_json_dict,
    file_key_to_adapter,
    load_adapter_file,
    save_adapter_file,
)
from .poly_adapter import PolyAdapter

__all__ = ["AthenaModel", "get_athena_model"]


class _AdapterHost(nn.Module):
    """Holds the user's model as `.model` (the `base_model.model.` path of PEFT's keys)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


class AthenaModel(nn.Module):
    """A model carrying one or more named PolyAdapter adapters.

    Args:
        model: the base model (changed in place: target layers are wrapped).
        config: the first adapter.
        adapter_name: its name.

    Attributes:
        base_model: holds the model as `base_model.model`.
        peft_config: adapter name → resolved `PolyAdapterConfig`.
        active_adapters: the adapters whose outputs the forward pass adds.
    """

    def __init__(
        self, model: nn.Module, config: PolyAdapterConfig, adapter_name: str = "default"
    ) -> None:
        super().__init__()
        self.base_model = _AdapterHost(model)
        self.peft_config: dict[str, PolyAdapterConfig] = {}
        self.active_adapters: list[str] = []
        self.add_adapter(adapter_name, config)
        self.set_adapter(adapter_name)

    # -- delegation ----------------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The wrapped model."""
        return self.base_model.model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped model."""
        return self.base_model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model.model, name)

    @property
    def active_adapter(self) -> str:
        """The single active adapter (error when several are active)."""
        if len(self.active_adapters) != 1:
            raise ValueError(f"several adapters are active: {self.active_adapters}")
        return self.active_adapters[0]

    def _poly_layers(self) -> Iterator[tuple[str, PolyAdapter]]:
        for name, module in self.base_model.model.named_modules():
            if isinstance(module, PolyAdapter):
                yield name, module

    def _wrappers(self) -> Iterator[ModulesToSaveWrapper]:
        for module in self.base_model.model.modules():
            if isinstance(module, ModulesToSaveWrapper):
                yield module

    # -- adapters ------------------------------------------------------------------------------

    def add_adapter(self, adapter_name: str, config: PolyAdapterConfig) -> None:
        """Add adapter `adapter_name` (fresh weights). The active adapters stay as they were."""
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} exists; delete_adapter it first")
        model = self.base_model.model
        config = resolve_config(model, config)
        inject_polyadapter(model, config, adapter_name)
        self.peft_config[adapter_name] = config
        if self.active_adapters:
            self.set_adapter(self.active_adapters)

    def set_adapter(self, adapter_name: str | Sequence[str]) -> None:
        """Activate one adapter or several (their outputs add up); only those train.

        Build the optimiser after this call: it decides which parameters require grad.
        """
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown or not names:
            raise ValueError(
                f"unknown adapters {unknown or names}; have {sorted(self.peft_config)}"
            )
        for _, layer in self._poly_layers():
            layer.set_adapter([n for n in names if n in layer.specs])
        for wrapper in self._wrappers():
            wrapper.set_adapter(names)
        self.active_adapters = names
        mark_only_adapters_trainable(
            self.base_model.model, [n for n in names if not self.peft_config[n].inference_mode]
        )

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter (not the last one)."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"no adapter {adapter_name!r}; have {sorted(self.peft_config)}")
        if len(self.peft_config) == 1:
            raise ValueError("cannot delete the only adapter; use unload() to get the base model")
        for _, layer in self._poly_layers():
            if adapter_name in layer.specs:
                layer.delete_adapter(adapter_name)
        for wrapper in self._wrappers():
            wrapper.delete_adapter(adapter_name)
        del self.peft_config[adapter_name]
        remaining = [n for n in self.active_adapters if n != adapter_name]
        self.set_adapter(remaining or next(iter(self.peft_config)))

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context in which the model computes as the base model (merged adapters unmerged)."""
        modules: list[PolyAdapter | ModulesToSaveWrapper] = [m for _, m in self._poly_layers()]
        modules += list(self._wrappers())
        for module in modules:
            module.disable_adapters = True
        try:
            yield
        finally:
            for module in modules:
                module.disable_adapters = False

    # -- parameters ----------------------------------------------------------------------------

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts; the total counts each base weight once."""
        trainable = total = 0
        for _, param in self.named_parameters():
            total += param.numel()
            if param.requires_grad:
                trainable += param.numel()
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print `trainable params: N || all params: M || trainable%: P` (PEFT's line)."""
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} "
            f"|| trainable%: {100 * trainable / total:.4f}"
        )

    def athena_aux_loss(self) -> Tensor:
        """Σ over PolyAdapters of the active MoE adapters' balance losses × `aux_loss_coef`,
        from the last forward pass (a 0-dim tensor; zero when no adapter has experts)."""
        total: Tensor | None = None
        for _, layer in self._poly_layers():
            for name in layer.active_adapters:
                loss = layer._aux.get(name)
                if loss is not None:
                    term = loss * self.peft_config[name].aux_loss_coef
                    total = term if total is None else total + term
        if total is None:
            param = next(self.parameters())
            return torch.zeros((), device=param.device)
        return total

    def get_routing_stats(self) -> dict[str, dict[str, Tensor]]:
        """Module name → routing statistics of the active adapter (MoE layers only)."""
        out: dict[str, dict[str, Tensor]] = {}
        for name, layer in self._poly_layers():
            for adapter in layer.active_adapters:
                if layer.specs[adapter].use_moe:
                    out[name if len(layer.active_adapters) == 1 else f"{name}[{adapter}]"] = (
                        layer.get_routing_stats(adapter)
                    )
        return out

    # -- merging -------------------------------------------------------------------------------

    def merge_adapter(
        self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False
    ) -> None:
        """Fold the LoRA/IA³ branches of the active adapters into the base weights."""
        for _, layer in self._poly_layers():
            names = [n for n in (adapter_names or self.active_adapters) if n in layer.specs]
            layer.merge(safe_merge=safe_merge, adapter_names=names)

    def unmerge_adapter(self) -> None:
        """Undo `merge_adapter`."""
        for _, layer in self._poly_layers():
            layer.unmerge()

    def _replace_layers(self, merge: bool, safe_merge: bool, merge_moe: str) -> nn.Module:
        model = self.base_model.model
        has_moe = [
            n for n, c in self.peft_config.items() if c.use_moe and n in self.active_adapters
        ]
        if merge and has_moe and merge_moe != "keep":
            raise ValueError(
                f"adapters {has_moe} have a mixture of experts, which depends on the input and "
                "cannot be merged into a weight; pass merge_moe='keep' to merge LoRA/IA³ and keep "
                "the experts as PolyAdapters"
            )
        for name, layer in list(self._poly_layers()):
            if merge:
                layer.merge(safe_merge=safe_merge, adapter_names=layer.active_adapters)
                keep = [n for n in layer.active_adapters if layer.specs[n].use_moe]
                if keep:
                    for other in [n for n in layer.specs if n not in keep]:
                        if other not in layer.merged_adapters:
                            layer.delete_adapter(other)
                    continue
            else:
                layer.unmerge()
            set_submodule(model, name, layer.base_layer)
        for name, module in list(model.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):
                set_submodule(
                    model, name, module.active_module if merge else module.original_module
                )
        return model

    def merge_and_unload(
        self, safe_merge: bool = False, merge_moe: Literal["raise", "keep"] = "raise"
    ) -> nn.Module:
        """Merge the active adapters and return the plain base model (heads: the trained copy).

        Raises:
            ValueError: an active adapter has experts and `merge_moe != "keep"`; `safe_merge`
                found non-finite merged weights.
        """
        return self._replace_layers(True, safe_merge, merge_moe)

    def unload(self) -> nn.Module:
        """Remove every adapter without merging; return the original base model."""
        return self._replace_layers(False, False, "raise")

    # -- files ---------------------------------------------------------------------------------

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        """The tensors of `adapter_name` under their file keys (PEFT's layout)."""
        out: dict[str, Tensor] = {}
        for key, value in self.state_dict(keep_vars=False).items():
            file_key = adapter_key_to_file(key, adapter_name)
            if file_key is not None:
                out[file_key] = value
        return out

    def save_pretrained(
        self, save_directory: str | os.PathLike[str], selected_adapters: Sequence[str] | None = None
    ) -> None:
        """Write each selected adapter (default: all) in PEFT's layout: the `default` adapter
        at the root of `save_directory`, others in subfolders named after them.

        Raises:
            ValueError: unknown adapter, or a tensor with no elements (gather ZeRO-3 first).
        """
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise ValueError(f"unknown adapters {unknown}; have {sorted(self.peft_config)}")
        for name in names:
            folder = (
                os.fspath(save_directory)
                if name == "default"
                else os.path.join(save_directory, name)
            )
            os.makedirs(folder, exist_ok=True)
            tensors = self.adapter_state_dict(name)
            save_adapter_file(tensors, os.path.join(folder, WEIGHTS_NAME))
            payload = config_to_json_dict(self.peft_config[name])
            with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=2, sort_keys=True)
                fh.write("\n")

    def load_adapter(
        self, directory: str | os.PathLike[str], adapter_name: str, is_trainable: bool = False
    ) -> None:
        """Add adapter `adapter_name` from a saved folder (ours or PEFT's LORA / IA3).

        Raises:
            ValueError: the file's keys do not match the model's adapter (names are listed).
        """
        with open(os.path.join(directory, CONFIG_NAME), encoding="utf-8") as fh:
            config = config_from_json_dict(json.load(fh))
        config = config.replace(inference_mode=not is_trainable)
        active = list(self.active_adapters)
        self.add_adapter(adapter_name, config)
        try:
            self._load_weights(directory, adapter_name)
        except ValueError:
            self.delete_adapter(adapter_name)
            raise
        self.set_adapter(active if active else adapter_name)

    def _load_weights(self, directory: str | os.PathLike[str], adapter_name: str) -> None:
        """Load a saved adapter file into the (already created) adapter `adapter_name`."""
        tensors = load_adapter_file(os.path.join(directory, WEIGHTS_NAME))
        saved = {n for n, m in self.named_modules() if isinstance(m, ModulesToSaveWrapper)}
        state = {file_key_to_adapter(k, adapter_name, saved): v for k, v in tensors.items()}
        expected = {
            k for k in self.state_dict() if adapter_key_to_file(k, adapter_name) is not None
        }
        unexpected, missing = sorted(set(state) - expected), sorted(expected - set(state))
        if unexpected or missing:
            raise ValueError(
                f"adapter file in {os.fspath(directory)!r} does not match the model: "
                f"unexpected keys {unexpected[:5]}, missing keys {missing[:5]}"
            )
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike[str],
        adapter_name: str = "default",
        is_trainable: bool = False,
    ) -> AthenaModel:
        """Wrap `model` with the adapter saved in `model_id` (a folder; ours or PEFT's).

        Args:
            model: the base model the adapter was trained on.
            model_id: the adapter folder.
            adapter_name: name to load it under.
            is_trainable: keep the adapter trainable (default: frozen for inference).
        """
        with open(os.path.join(model_id, CONFIG_NAME), encoding="utf-8") as fh:
            config = config_from_json_dict(json.load(fh))
        config = config.replace(inference_mode=not is_trainable)
        athena = cls(model, config, adapter_name)
        athena._load_weights(model_id, adapter_name)
        if not is_trainable:
            athena.eval()
        return athena


def get_athena_model(
    model: nn.Module, config: PolyAdapterConfig, adapter_name: str = "default"
) -> AthenaModel:
    """Wrap `model` (in place) with PolyAdapters as `config` says; freeze the base.

    Example:
        >>> from torch import nn
        >>> from athena import PolyAdapterConfig, get_athena_model
        >>> net = nn.Sequential()
        >>> net.add_module("proj", nn.Linear(8, 8))
        >>> m = get_athena_model(net, PolyAdapterConfig(r=2, target_modules=["proj"]))
        >>> m.get_nb_trainable_parameters()[0]
        32
    """
    return AthenaModel(model, config, adapter_name)
