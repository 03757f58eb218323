"""Optimiser-state transfer from the source block to a newly grown one.

A new block's parameters have no optimiser state (they never had a gradient). Starting AdamW
from empty moments makes its first updates full-size sign steps, exactly when the block should
move gently. Modes, per parameter pair matched by name inside the block:

- ``"none"``: the new parameter starts with no state (the optimiser creates it lazily);
- ``"second_moment"``: copy the second moments (``exp_avg_sq``, ``max_exp_avg_sq``) and ``step``,
  zero every other tensor (first moments, momentum buffers): the update scale of the source,
  none of its direction;
- ``"full"``: copy every state entry (``exp_avg``, ``momentum_buffer``, …).

Works for any optimiser whose state is a dict of tensors per parameter (AdamW, SGD with momentum,
the auon optimisers).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

StateTransfer = Literal["none", "second_moment", "full"]
STATE_TRANSFER_MODES: tuple[str, ...] = ("none", "second_moment", "full")
_SECOND_MOMENT_KEYS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "step"})


@torch.no_grad()
def transfer_state(
    optimizer: torch.optim.Optimizer, source: nn.Module, new: nn.Module, mode: StateTransfer
) -> int:
    """Give ``new``'s parameters optimiser state derived from ``source``'s; returns how many
    parameters received state.

    Raises:
        ValueError: an unknown mode, or blocks whose parameter names or shapes differ.
    """
    if mode not in STATE_TRANSFER_MODES:
        raise ValueError(f"state_transfer must be one of {STATE_TRANSFER_MODES}, got {mode!r}")
    src = dict(source.named_parameters())
    dst = dict(new.named_parameters())
    if src.keys() != dst.keys():
        raise ValueError("source and new blocks have different parameter names")
    moved = 0
    for name, p_new in dst.items():
        p_src = src[name]
        if p_src.shape != p_new.shape:
            raise ValueError(
                f"{name}: source shape {tuple(p_src.shape)} != new {tuple(p_new.shape)}"
            )
        optimizer.state.pop(p_new, None)
        state = optimizer.state.get(p_src)
        if mode == "none" or not state:
            continue
        fresh = {}
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                fresh[key] = value
            elif mode == "full" or key in _SECOND_MOMENT_KEYS:
                fresh[key] = value.clone()
            else:
                fresh[key] = torch.zeros_like(value)
        optimizer.state[p_new] = fresh
        moved += 1
    return moved
