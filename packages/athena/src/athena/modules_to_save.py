"""`ModulesToSaveWrapper`: a fully trained copy of a module (a classification head) per adapter.

The wrapper keeps the frozen `original_module` and one trainable deep copy per adapter in
`modules_to_save.<adapter>`, the same attribute names as PEFT, so the head's weights sit under
`classifier.modules_to_save.default.weight` in memory and under `classifier.weight` in the saved
adapter file — and a head trained with PEFT loads here, and the other way round.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["ModulesToSaveWrapper"]


class ModulesToSaveWrapper(nn.Module):
    """Route calls to the active adapter's copy of `module_to_save` (the original when disabled).

    Args:
        module_to_save: the module to copy (left frozen as `original_module`).
        adapter_name: the first adapter.
    """

    def __init__(self, module_to_save: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.original_module = module_to_save
        self.original_module.requires_grad_(False)
        self.modules_to_save = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.disable_adapters = False
        self.add_adapter(adapter_name)

    def add_adapter(self, adapter_name: str) -> None:
        """Add a trainable copy of the original module for `adapter_name` and activate it."""
        if adapter_name in self.modules_to_save:
            raise ValueError(f"adapter {adapter_name!r} already has a copy of this module")
        clone = copy.deepcopy(self.original_module)
        clone.requires_grad_(True)
        self.modules_to_save[adapter_name] = clone
        self.active_adapters = [adapter_name]

    def delete_adapter(self, adapter_name: str) -> None:
        """Drop the copy of `adapter_name`."""
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]

    def set_adapter(self, names: str | Sequence[str]) -> None:
        """Use the copy of the first of `names` that has one (a head cannot be summed)."""
        wanted = [names] if isinstance(names, str) else list(names)
        have = [n for n in wanted if n in self.modules_to_save]
        if len(have) > 1:
            raise ValueError(f"several active adapters {have} each have a copy of this module")
        self.active_adapters = have

    @property
    def active_module(self) -> nn.Module:
        """The module calls go to."""
        if self.disable_adapters or not self.active_adapters:
            return self.original_module
        return self.modules_to_save[self.active_adapters[0]]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the active copy."""
        return self.active_module(*args, **kwargs)
