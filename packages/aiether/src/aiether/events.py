"""``GrowthEvent``: the record of one growth, as saved in ``growth_state.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class GrowthEvent:
    """One growth.

    Attributes:
        step: the global step after whose optimiser step the block was added.
        slot: the activated slot; ``source``: the slot it was initialised from.
        operator, preserve, state_transfer: how it was initialised, kept neutral, and given
            optimiser state.
        parameters: the operator's parameters (gains, subspace sizes).
        tau, kappa, tau_norm, kappa_norm: the source block's aggregate trajectory statistics at
            the growth (``None`` without a tracker or before 2 snapshots).
        val_loss: the validation loss that triggered it (``None`` for a scheduled growth).
        probe_loss_before, probe_loss_after: the loss of a fixed probe batch just before and
            just after the insertion (equal under an exact ``preserve``), or ``None``.
        active_layers: the active slots after the growth.
    """

    step: int
    slot: int
    source: int
    operator: str
    preserve: str
    state_transfer: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tau: float | None = None
    kappa: float | None = None
    tau_norm: float | None = None
    kappa_norm: float | None = None
    val_loss: float | None = None
    probe_loss_before: float | None = None
    probe_loss_after: float | None = None
    active_layers: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrowthEvent:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown GrowthEvent fields {sorted(extra)}")
        return cls(**data)
