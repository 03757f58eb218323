"""``sync_stats``: the once-per-step reduction of deferred AION statistics.

With ``sync_stats="deferred"`` every training forward of an :class:`~aion_torch.AionResidual`
only adds its (ratio sum, token count) to the module's ``pending`` buffer and uses the EMA as it
stands, so the forward never waits on a collective. Once per optimiser step, :func:`sync_stats`
stacks the ``pending`` pairs of every deferred layer, reduces them with **one** all-reduce, and
updates each layer's EMA from the global token-weighted mean (NaN-safe), then clears ``pending``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from adaptnn_core import all_reduce_, ema_update_
from aion_torch._residual import AionResidual

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["sync_stats"]


def _deferred_modules(model: nn.Module) -> list[AionResidual]:
    return [
        m for m in model.modules() if isinstance(m, AionResidual) and m.sync_stats == "deferred"
    ]


def sync_stats(model: nn.Module, process_group: ProcessGroup | None = None) -> int:
    """Reduce and apply the pending statistics of every deferred ``AionResidual`` in ``model``.

    Call it once per optimiser step (after the backward passes of the step, before or after
    ``optimizer.step()``), on every rank. Without torch.distributed the update is local. No host
    synchronisation: the EMA update is a masked ``lerp`` on device.

    Per layer: ``stat = Σ sum / Σ count`` over ranks; if ``count > 0`` and ``stat`` is finite,
    ``ratio_ema ← γ·ratio_ema + (1−γ)·stat`` (γ = 1: ``ratio_ema ← stat``); a non-finite ``stat``
    with tokens counts in ``num_skipped``; a layer that saw no token is left unchanged.
    ``pending`` is zeroed.

    Args:
        model: Module containing ``AionResidual`` layers (those with ``sync_stats != "deferred"``
            are ignored).
        process_group: Group of the single all-reduce; ``None`` uses the layers' common
            ``process_group`` (the default group if they have none).

    Returns:
        The number of layers updated.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``process_group`` is None and the deferred layers name different groups.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    mods = _deferred_modules(model)
    if not mods:
        return 0
    group = process_group
    if group is None:
        groups = {id(m.process_group): m.process_group for m in mods}
        if len(groups) > 1:
            raise ValueError(
                "process_group is None but the deferred AionResidual layers use different "
                "process groups; pass process_group explicitly"
            )
        group = next(iter(groups.values()))
    with torch.no_grad():
        pending = torch.stack([m.pending.to(torch.float32) for m in mods])  # (L, 2)
        all_reduce_(pending, "sum", group)  # the one collective of the step
        total, count = pending.unbind(-1)
        stat = total / count
        has = count > 0
        finite = torch.isfinite(stat)
        emas = torch.stack([m.ratio_ema for m in mods])
        by_gamma: dict[float, list[int]] = {}
        for i, m in enumerate(mods):
            g = 0.0 if m.ema_gamma == 1.0 else m.ema_gamma
            by_gamma.setdefault(g, []).append(i)
        for g, idx in by_gamma.items():
            if len(idx) == len(mods):
                ema_update_(emas, stat, g, valid=has)
            else:
                sel = torch.tensor(idx, device=emas.device)
                sub = emas.index_select(0, sel)
                ema_update_(sub, stat.index_select(0, sel), g, valid=has.index_select(0, sel))
                emas.index_copy_(0, sel, sub)
        skipped = (has & ~finite).to(torch.int64)
        ema_bufs: list[Tensor] = [m.ratio_ema for m in mods]
        torch._foreach_copy_(ema_bufs, list(emas.unbind(0)))
        torch._foreach_add_([m.num_skipped for m in mods], list(skipped.unbind(0)))
        torch._foreach_zero_([m.pending for m in mods])
    return len(mods)
