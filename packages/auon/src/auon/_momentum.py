"""EMA momentum with the Nesterov look-ahead, on tensor lists (``torch.optim.Muon``'s form)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from auon._list_ops import _lerp_, _lerp_into


def _momentum(
    ps: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    *,
    beta: float,
    nesterov: bool,
    skip: bool,
    foreach: bool,
    workspace: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """EMA momentum ``m ← lerp(m, g, 1−β)`` and the update ``lerp(g, m, β)`` (or ``m``).

    With ``skip`` the new buffers are returned out of place (commit them with
    :func:`_keep_finite_`); otherwise ``ms`` are updated in place and returned. ``workspace``
    (one pair of buffers like ``ms`` per tensor) receives the new buffers and the update instead
    of fresh allocations; the values are the same.
    """
    out_m = [w[0] for w in workspace] if workspace is not None else None
    out_g = [w[1] for w in workspace] if workspace is not None else None
    if skip:
        m_new = _lerp_into(ms, gs, 1.0 - beta, out_m, foreach)
    else:
        _lerp_(ms, gs, 1.0 - beta, foreach)
        m_new = ms
    G = _lerp_into(gs, m_new, beta, out_g, foreach) if nesterov else m_new
    return G, m_new
