"""``TrajectoryTracker``: on-device ring buffers of weight snapshots and their τ/κ statistics.

Every ``interval`` steps the tracked tensors are copied, in place and without a host sync, into a
preallocated ``(window, numel)`` ring buffer (``storage="full"``, default bfloat16), or projected
to ``sketch_dim`` numbers by a seeded CountSketch (``storage="sketch"``: a sparse random
projection that preserves inner products in expectation, at O(numel) memory instead of a dense
Gaussian's O(sketch_dim·numel)). Full snapshots are stored as differences from a float32 anchor
(the first snapshot after a :meth:`~TrajectoryTracker.clear`), so bfloat16 rounds the motion
rather than the weights: a norm weight near 1 moving by 1e-3 would otherwise round to no motion
at all. Statistics come from the T×T velocity Grams (see
:mod:`aiether._metrics`); under FSDP/DTensor each rank holds a shard, computes the Gram of its
shard, and only those small Grams are all-reduced (a sum). Replicated tensors (DDP) need no
communication.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.distributed import ProcessGroup

from adaptnn_core.dist import all_reduce_coalesced_, is_initialized, rank
from aiether._metrics import EPS, gram_tau_kappa, normalise_tau_kappa, velocity_gram

Storage = Literal["full", "sketch"]


@dataclass(frozen=True)
class TrajectoryMetrics:
    """τ, κ and their window-normalised values τ̃ = τ/√T, κ̃ = κ/√(T−1), as 0-d tensors on the
    tracker's device; ``num_velocities`` is T."""

    tau: Tensor
    kappa: Tensor
    tau_norm: Tensor
    kappa_norm: Tensor
    num_velocities: int

    def as_floats(self) -> dict[str, float]:
        """The four statistics as Python floats (one host sync)."""
        values = torch.stack([self.tau, self.kappa, self.tau_norm, self.kappa_norm]).tolist()
        return dict(zip(("tau", "kappa", "tau_norm", "kappa_norm"), values, strict=True))


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor, or the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _is_sharded(t: Tensor) -> bool:
    return callable(getattr(t, "to_local", None))


class TrajectoryTracker:
    """Snapshots of named tensors and the trajectory statistics of each.

    Args:
        named_params: ``(name, tensor)`` pairs (or a mapping) to track, e.g. a block's
            ``named_parameters()``.
        window: snapshots kept (S ≤ window; T = S − 1 velocities). At least 3.
        interval: :meth:`maybe_snapshot` records on steps divisible by it.
        storage: ``"full"`` keeps the snapshots (needed by the geometric operator);
            ``"sketch"`` keeps CountSketch projections (statistics only).
        dtype: storage dtype of full snapshots (sketches are float32).
        device: where the buffers live (default: each tensor's device).
        sketch_dim: sketch length per snapshot.
        seed: seeds the sketch hashing (rank-offset under torch.distributed).
        process_group: the group over which sharded (DTensor) Grams are summed.

    Raises:
        ValueError: ``window < 3``, ``interval < 1``, ``sketch_dim < 1``, an unknown ``storage``,
            no tensors, or a repeated name.
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, Tensor]] | Mapping[str, Tensor],
        *,
        window: int = 15,
        interval: int = 100,
        storage: Storage = "full",
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
        sketch_dim: int = 2048,
        seed: int = 0,
        process_group: ProcessGroup | None = None,
    ) -> None:
        if isinstance(window, bool) or int(window) < 3:
            raise ValueError(f"window must be an integer >= 3, got {window!r}")
        if isinstance(interval, bool) or int(interval) < 1:
            raise ValueError(f"interval must be a positive integer, got {interval!r}")
        if storage not in ("full", "sketch"):
            raise ValueError(f"storage must be 'full' or 'sketch', got {storage!r}")
        if isinstance(sketch_dim, bool) or int(sketch_dim) < 1:
            raise ValueError(f"sketch_dim must be a positive integer, got {sketch_dim!r}")
        self.window = int(window)
        self.interval = int(interval)
        self.storage: Storage = storage
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.sketch_dim = int(sketch_dim)
        self.seed = int(seed)
        self.process_group = process_group
        self._params: dict[str, Tensor] = {}
        self._buffers: dict[str, Tensor] = {}
        self._hash: dict[str, tuple[Tensor, Tensor]] = {}
        self.retarget(named_params)

    # -- what is tracked ---------------------------------------------------------------------
    def retarget(self, named_params: Iterable[tuple[str, Tensor]] | Mapping[str, Tensor]) -> None:
        """Track other tensors (e.g. the new frontier block after a growth); clears history."""
        items = list(named_params.items() if isinstance(named_params, Mapping) else named_params)
        if not items:
            raise ValueError("named_params: nothing to track")
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"named_params: repeated names in {names}")
        self._params = {n: p for n, p in items}
        self._buffers.clear()
        self._anchors: dict[str, Tensor] = {}
        self._hash.clear()
        offset = rank(self.process_group) if is_initialized() else 0
        for i, (name, p) in enumerate(items):
            local = _local(p)
            device = self.device or local.device
            if self.storage == "full":
                self._buffers[name] = torch.zeros(
                    self.window, local.numel(), dtype=self.dtype, device=device
                )
                self._anchors[name] = torch.zeros(local.numel(), dtype=torch.float32, device=device)
            else:
                gen = torch.Generator().manual_seed(self.seed + 1_000_003 * offset + 7919 * i)
                bucket = torch.randint(0, self.sketch_dim, (local.numel(),), generator=gen)
                sign = (
                    torch.randint(0, 2, (local.numel(),), generator=gen, dtype=torch.int8) * 2 - 1
                )
                self._hash[name] = (bucket.to(device), sign.to(device))
                self._buffers[name] = torch.zeros(
                    self.window, self.sketch_dim, dtype=torch.float32, device=device
                )
        self._count = 0

    @property
    def names(self) -> list[str]:
        return list(self._params)

    @property
    def num_snapshots(self) -> int:
        """Snapshots held (S), at most ``window``."""
        return min(self._count, self.window)

    def numel(self, name: str) -> int:
        """Global element count of a tracked tensor (the aggregation weight)."""
        return self._params[name].numel()

    # -- recording ---------------------------------------------------------------------------
    @torch.no_grad()
    def snapshot(self) -> None:
        """Record the current values (in-place copies into the ring; no host sync)."""
        row = self._count % self.window
        for name, p in self._params.items():
            flat = _local(p).detach().reshape(-1)
            buf = self._buffers[name]
            if self.storage == "full":
                anchor = self._anchors[name]
                if self._count == 0:
                    anchor.copy_(flat)
                buf[row].copy_(flat.float() - anchor)
            else:
                bucket, sign = self._hash[name]
                buf[row].zero_().index_add_(0, bucket, flat.float() * sign)
        self._count += 1

    def maybe_snapshot(self, step: int) -> bool:
        """Snapshot when ``step`` is a multiple of ``interval``; returns whether it did."""
        if step % self.interval:
            return False
        self.snapshot()
        return True

    def clear(self) -> None:
        """Forget every snapshot (the buffers stay allocated)."""
        self._count = 0

    # -- reading -----------------------------------------------------------------------------
    def _ordered(self, name: str) -> Tensor:
        buf = self._buffers[name]
        s = self.num_snapshots
        if self._count <= self.window:
            return buf[:s]
        start = self._count % self.window
        return torch.cat([buf[start:], buf[:start]])

    def history(self, name: str) -> Tensor:
        """``(S, *shape)`` snapshots of one tensor in time order (its local shard under FSDP).

        Raises:
            ValueError: with ``storage="sketch"`` (there are no weights to return).
        """
        if self.storage != "full":
            raise ValueError("history() needs storage='full'; a sketch holds no weights")
        shape = _local(self._params[name]).shape
        return (self._ordered(name).float() + self._anchors[name]).reshape(-1, *shape)

    def grams(self) -> dict[str, Tensor]:
        """Float32 ``(T, T)`` velocity Grams of every tensor; sharded tensors' local Grams are
        summed over ``process_group`` in one coalesced all-reduce."""
        out = {name: velocity_gram(self._ordered(name)) for name in self._params}
        sharded = [out[n] for n, p in self._params.items() if _is_sharded(p)]
        if sharded and is_initialized():
            all_reduce_coalesced_(sharded, group=self.process_group)
        return out

    def gram(self, name: str) -> Tensor:
        """The velocity Gram of one tensor (see :meth:`grams`)."""
        return (
            self.grams()[name]
            if _is_sharded(self._params[name])
            else velocity_gram(self._ordered(name))
        )

    def metrics(self) -> dict[str, TrajectoryMetrics]:
        """τ, κ, τ̃, κ̃ per tracked tensor (device tensors; nothing is synchronised)."""
        t = max(self.num_snapshots - 1, 0)
        out = {}
        for name, g in self.grams().items():
            tau, kappa = gram_tau_kappa(g, EPS)
            tau_n, kappa_n = normalise_tau_kappa(tau, kappa, t)
            out[name] = TrajectoryMetrics(tau, kappa, tau_n, kappa_n, t)
        return out

    def aggregate(
        self, metrics: Mapping[str, TrajectoryMetrics] | None = None, *, weighted: bool = True
    ) -> TrajectoryMetrics:
        """One value per statistic over the tracked tensors: the numel-weighted mean (default),
        or the unweighted mean of the original trigger (``weighted=False``)."""
        per = dict(metrics) if metrics is not None else self.metrics()
        weights = torch.tensor(
            [float(self.numel(n)) if weighted else 1.0 for n in per],
            device=next(iter(per.values())).tau.device,
        )
        weights = weights / weights.sum()

        def mean(field: str) -> Tensor:
            return (torch.stack([getattr(m, field) for m in per.values()]) * weights).sum()

        t = next(iter(per.values())).num_velocities
        return TrajectoryMetrics(
            mean("tau"), mean("kappa"), mean("tau_norm"), mean("kappa_norm"), t
        )

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Snapshot buffers (by tensor name) and the counter, for exact resume."""
        buffers = {n: b.clone() for n, b in self._buffers.items()}
        buffers.update({f"{n}/anchor": a.clone() for n, a in self._anchors.items()})
        return {"count": self._count, "buffers": buffers}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the tracked names and shapes must match.

        Raises:
            ValueError: different names or buffer shapes.
        """
        buffers = state["buffers"]
        mine = {**self._buffers, **{f"{n}/anchor": a for n, a in self._anchors.items()}}
        if set(buffers) != set(mine):
            raise ValueError(
                f"tracker state names {sorted(buffers)} do not match the tracked {sorted(mine)}"
            )
        for name, buf in buffers.items():
            if buf.shape != mine[name].shape:
                raise ValueError(
                    f"tracker state {name!r}: shape {tuple(buf.shape)} != {tuple(mine[name].shape)}"
                )
            mine[name].copy_(buf)
        self._count = int(state["count"])
