"""``param_groups``: optimiser parameter groups per block, so growth can set per-block learning rates.

Every parameter of the model goes into the optimiser from the start, active or not: an inactive
block has ``grad is None`` and AdamW (like every ``torch.optim`` optimiser) skips it, which needs
``optimizer.zero_grad(set_to_none=True)`` (the default). Groups are named ``"block.{i}"`` and
``"block.{i}.no_decay"`` for the stack's slot ``i``, ``"other"`` and ``"other.no_decay"`` for the
rest (embeddings, head, final norm); matrices decay, vectors (biases, norm weights, gates) do
not. Each group carries ``lr_mult`` (1.0), which :class:`~aiether.schedule.GrowthAwareLR`
multiplies into its learning rate and the controller lowers during an isolated warm-up.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from aiether.adapters import StackAdapter, for_model


def param_groups(
    model: nn.Module, weight_decay: float, adapter: StackAdapter | None = None
) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim`` constructors (see the module docstring).

    Raises:
        ValueError: a negative ``weight_decay``.
    """
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    adapter = adapter or for_model(model)
    blocks = adapter.blocks(model)
    owner: dict[int, int] = {}
    for i in range(len(blocks)):
        for p in blocks[i].parameters():
            owner[id(p)] = i
    groups: dict[str, dict[str, Any]] = {}

    def group(name: str, block: int | None, decay: bool) -> dict[str, Any]:
        if name not in groups:
            groups[name] = {
                "params": [],
                "name": name,
                "block": block,
                "weight_decay": weight_decay if decay else 0.0,
                "lr_mult": 1.0,
            }
        return groups[name]

    seen: set[int] = set()
    for p in model.parameters():  # model order; tied parameters appear once
        if id(p) in seen:
            continue
        seen.add(id(p))
        block = owner.get(id(p))
        decay = p.ndim >= 2
        base = "other" if block is None else f"block.{block}"
        group(base if decay else f"{base}.no_decay", block, decay)["params"].append(p)
    return list(groups.values())
