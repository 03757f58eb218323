"""Private helpers shared by the auon optimisers: validation, shape factors, list ops, DTensor shards.

Nothing here is public API. The list helpers run either ``torch._foreach_*`` kernels or a plain
per-tensor loop with the same formulas, so the two paths agree; the DTensor helpers expose the local
shard of a sharded parameter and the process groups over which its per-tensor scalars must be summed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor

from adaptnn_core import all_reduce_coalesced_, matrix_shape

AdjustLrFn = Literal["original", "unit", "match_muon", "match_rms_adamw"]
NonFinite = Literal["skip", "propagate"]

_ADJUST_LR_FNS: tuple[str | None, ...] = (None, "original", "unit", "match_muon", "match_rms_adamw")
_HELPER_HINT = "vectors and scalars belong to AdamW; see auon.param_groups"

_DTensor: Any
try:  # torch.distributed may be unavailable on some builds.
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # pragma: no cover - platform dependent
    _DTensor = None


# ---------------------------------------------------------------------------------------------
# optimiser base
# ---------------------------------------------------------------------------------------------


class _ValidatedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that validates every param group as it is added.

    The constructor adds the first groups through :meth:`add_param_group` too, so no group ever
    bypasses :meth:`_validate_group`; an invalid group is removed again before the error leaves,
    leaving the optimiser as it was.
    """

    def _validate_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group after validating its hyperparameters and parameters."""
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1])
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _lr_value(lr: object, name: str = "lr") -> float | Tensor:
    """Check a learning rate: a float ≥ 0 or a 1-element tensor (checked without a host sync)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(
                f"{name} as a tensor must have exactly 1 element, got shape {tuple(lr.shape)}"
            )
        if not lr.is_floating_point():
            raise TypeError(f"{name} as a tensor must be floating point, got {lr.dtype}")
        return lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"{name} must be a float or a 1-element tensor, got {type(lr).__name__}")
    if not (math.isfinite(lr) and lr >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {lr!r}")
    return float(lr)


def _check_float(
    value: object,
    name: str,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check that ``value`` is a real number in the interval given; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = True if high is None else (v < high if high_open else v <= high)
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lo = "(" if low_open else "["
        hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{name} must be in {lo}{low}, {hi}, got {value!r}")
    return v


def _check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)!r}, got {value!r}")


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_param(p: Tensor, opt: str, *, min_ndim: int) -> None:
    """Reject complex parameters and, when ``min_ndim`` is 2, vectors and scalars."""
    if not isinstance(p, Tensor):
        raise TypeError(f"{opt}: params must be tensors, got {type(p).__name__}")
    if torch.is_complex(p):
        raise ValueError(f"{opt}: complex parameters are not supported, got dtype {p.dtype}")
    if not p.is_floating_point():
        raise ValueError(f"{opt}: parameters must be floating point, got dtype {p.dtype}")
    if p.ndim < min_ndim:
        raise ValueError(
            f"{opt}: params must have ndim >= {min_ndim}, got a parameter of shape "
            f"{tuple(p.shape)}; {_HELPER_HINT}"
        )


# ---------------------------------------------------------------------------------------------
# shape factors
# ---------------------------------------------------------------------------------------------


def _auon_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """Learning-rate multiplier of a unit-Frobenius AuON update for a parameter of ``shape``.

    None/"original": ``sqrt(max(1, rows/cols))``; "unit": 1; "match_muon": ``sqrt(min(rows, cols))
    · sqrt(max(1, rows/cols))`` (the Frobenius norm of a Muon update); "match_rms_adamw":
    ``0.2·sqrt(rows·cols)`` (update RMS 0.2). ``(rows, cols) = adaptnn_core.matrix_shape``.
    """
    rows, cols = matrix_shape(list(shape))
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "unit":
        return 1.0
    if adjust_lr_fn == "match_muon":
        return math.sqrt(min(rows, cols)) * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(rows * cols)
    raise ValueError(f"adjust_lr_fn must be one of {list(_ADJUST_LR_FNS)!r}, got {adjust_lr_fn!r}")


def _muon_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """Learning-rate multiplier of an orthogonalised (Muon-like) update, as ``torch.optim.Muon``.

    None/"original": ``sqrt(max(1, rows/cols))``; "unit": 1; "match_rms_adamw":
    ``0.2·sqrt(max(rows, cols))``.
    """
    rows, cols = matrix_shape(list(shape))
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "unit":
        return 1.0
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(
        f"adjust_lr_fn must be one of [None, 'original', 'unit', 'match_rms_adamw'], got {adjust_lr_fn!r}"
    )


# ---------------------------------------------------------------------------------------------
# list ops: foreach or loop with the same formulas
# ---------------------------------------------------------------------------------------------


def _neg(xs: list[Tensor], foreach: bool) -> list[Tensor]:
    return list(torch._foreach_neg(xs)) if foreach else [torch.neg(x) for x in xs]


def _lerp(a: list[Tensor], b: list[Tensor], w: float, foreach: bool) -> list[Tensor]:
    return (
        list(torch._foreach_lerp(a, b, w))
        if foreach
        else [torch.lerp(x, y, w) for x, y in zip(a, b, strict=True)]
    )


def _lerp_into(
    a: list[Tensor], b: list[Tensor], w: float, out: list[Tensor] | None, foreach: bool
) -> list[Tensor]:
    """``lerp(a_i, b_i, w)``, written into ``out_i`` when given (no allocation)."""
    if out is None:
        return _lerp(a, b, w, foreach)
    return [torch.lerp(x, y, w, out=o) for x, y, o in zip(a, b, out, strict=True)]


def _mul_into(
    xs: list[Tensor], cs: Sequence[Tensor], out: list[Tensor] | None, foreach: bool
) -> list[Tensor]:
    """``x_i * c_i`` with 0-D tensors ``c_i``, written into ``out_i`` when given."""
    if out is None:
        return _mul(xs, cs, foreach)
    return [torch.mul(x, c, out=o) for x, c, o in zip(xs, cs, out, strict=True)]


def _sums(xs: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Stacked sums ``Σ x_i`` accumulated in ``dtype``, shape ``(len(xs),)``."""
    return torch.stack([x.sum(dtype=dtype) for x in xs])


def _lerp_(a: list[Tensor], b: list[Tensor], w: float, foreach: bool) -> None:
    if foreach:
        torch._foreach_lerp_(a, b, w)
    else:
        for x, y in zip(a, b, strict=True):
            x.lerp_(y, w)


def _lerp_weighted_(a: list[Tensor], b: list[Tensor], ws: Sequence[Tensor], foreach: bool) -> None:
    """``a_i ← lerp(a_i, b_i, w_i)`` with 0-D tensor weights ``w_i``."""
    if foreach:
        torch._foreach_lerp_(a, b, list(ws))
    else:
        for x, y, w in zip(a, b, ws, strict=True):
            x.lerp_(y, w)


def _norms(xs: list[Tensor], foreach: bool, ord: float = 2.0) -> Tensor:
    """Stacked fp32 (float64 for float64 input) vector norms, shape ``(len(xs),)``."""
    acc = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    if foreach:
        return torch.stack(torch._foreach_norm(xs, ord, dtype=acc))
    return torch.stack([torch.linalg.vector_norm(x, ord, dtype=acc) for x in xs])


def _mul(xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> list[Tensor]:
    """``x_i * c_i`` with 0-D tensors ``c_i``."""
    if foreach:
        return list(torch._foreach_mul(xs, list(cs)))
    return [x * c for x, c in zip(xs, cs, strict=True)]


def _mul_(xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> None:
    if foreach:
        torch._foreach_mul_(xs, list(cs))
    else:
        for x, c in zip(xs, cs, strict=True):
            x.mul_(c)


def _addcmul_(ps: list[Tensor], xs: list[Tensor], cs: Sequence[Tensor], foreach: bool) -> None:
    """``p_i += x_i * c_i`` with 0-D tensors ``c_i``."""
    if foreach:
        torch._foreach_addcmul_(ps, xs, list(cs))
    else:
        for p, x, c in zip(ps, xs, cs, strict=True):
            p.addcmul_(x, c)


def _unary_(xs: list[Tensor], name: str, foreach: bool) -> None:
    if foreach:
        getattr(torch, f"_foreach_{name}_")(xs)
    else:
        for x in xs:
            getattr(x, f"{name}_")()


def _keep_finite_(old: list[Tensor], new: list[Tensor], finite: Sequence[Tensor]) -> None:
    """``old_i ← new_i`` where ``finite_i`` (0-D bool), else unchanged; no host sync."""
    for o, n, f in zip(old, new, finite, strict=True):
        torch.where(f, n, o, out=o)


def _zero_nonfinite_(xs: list[Tensor], finite: Sequence[Tensor]) -> None:
    """Zero every tensor whose flag is False, so that ``0·x`` below stays finite."""
    for x, f in zip(xs, finite, strict=True):
        x.masked_fill_(f.logical_not(), 0.0)


def _use_foreach(foreach: bool | None, tensors: Iterable[Tensor]) -> bool:
    """``None`` → foreach for CUDA tensors (as torch.optim), else the given flag."""
    if foreach is None:
        return all(t.is_cuda for t in tensors)
    return foreach


def _buckets(n: int, keys: Callable[[int], Any]) -> list[list[int]]:
    """Indices grouped by ``keys(i)`` in first-seen order."""
    out: dict[Any, list[int]] = {}
    for i in range(n):
        out.setdefault(keys(i), []).append(i)
    return list(out.values())


# ---------------------------------------------------------------------------------------------
# DTensor shards
# ---------------------------------------------------------------------------------------------


def _is_dtensor(t: Tensor) -> bool:
    return _DTensor is not None and isinstance(t, _DTensor)


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (shares storage; in-place ops update the DTensor), else ``t``."""
    if _is_dtensor(t):
        local: Tensor = cast(Any, t).to_local()
        return local
    return t


def _reduce_key(p: Tensor) -> tuple[Any, ...] | None:
    """Process groups over which the local per-tensor sums of ``p`` must be summed (None: none).

    ``Shard`` mesh dims need a SUM; ``Replicate`` dims need nothing; ``Partial`` parameters are
    rejected.
    """
    if not _is_dtensor(p):
        return None
    dp: Any = p
    mesh = dp.device_mesh
    groups = []
    for dim, placement in enumerate(dp.placements):
        if placement.is_shard():
            groups.append(mesh.get_group(dim))
        elif placement.is_partial():
            raise ValueError(
                f"params: a DTensor with a Partial placement is not supported ({dp.placements})"
            )
    return tuple(groups) if groups else None


def _all_reduce_by_key(
    stacked: Tensor, keys: Sequence[tuple[Any, ...] | None], op: Literal["sum", "max"]
) -> Tensor:
    """Reduce entry ``i`` of the 1-D ``stacked`` over the groups ``keys[i]``; one collective per group.

    Returns the reduced tensor (``stacked`` itself, reduced in place, in the common case where every
    entry has the same key).
    """
    distinct = {k for k in keys if k is not None}
    if not distinct:
        return stacked
    if len(distinct) == 1 and all(k is not None for k in keys):
        (key,) = distinct
        for group in key:
            all_reduce_coalesced_([stacked], op=op, group=group)
        return stacked
    out = stacked.clone()
    for key in distinct:
        idx = [i for i, k in enumerate(keys) if k == key]
        sub = out[idx].contiguous()
        for group in key:
            all_reduce_coalesced_([sub], op=op, group=group)
        out[idx] = sub
    return out


def _full_tensor(local: Tensor, like: Tensor) -> Tensor:
    """The full tensor whose local shard is ``local``, sharded like the DTensor ``like`` (gathers)."""
    if not _is_dtensor(like):
        return local
    from torch.distributed.tensor import DTensor

    lk: Any = like
    dt = DTensor.from_local(
        local,
        lk.device_mesh,
        lk.placements,
        shape=like.shape,
        stride=like.stride(),
    )
    return dt.full_tensor()


def _local_shard_of(full: Tensor, like: Tensor) -> Tensor:
    """The local shard of ``full`` (identical on every rank) under ``like``'s placements; no comms."""
    if not _is_dtensor(like):
        return full
    from torch.distributed.tensor import DTensor, Replicate

    lk: Any = like
    mesh = lk.device_mesh
    dt = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    local: Tensor = dt.redistribute(mesh, lk.placements).to_local()
    return local


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


def _collect_group(
    state: Any, group: dict[str, Any], name: str
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[float]]:
    """Parameters with gradients, their gradients, momentum buffers, counters and ``wd_mul``s.

    Creates ``"momentum_buffer"`` (zeros like ``p``) and ``"nonfinite_steps"`` (int64 0-D) lazily.
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    bufs: list[Tensor] = []
    counters: list[Tensor] = []
    wd_muls: list[float] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        st = state[p]
        if len(st) == 0:
            st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["nonfinite_steps"] = torch.zeros((), dtype=torch.int64, device=_local(p).device)
        params.append(p)
        grads.append(p.grad)
        bufs.append(st["momentum_buffer"])
        counters.append(st["nonfinite_steps"])
        wd_muls.append(float(getattr(p, "wd_mul", 1.0)))
    return params, grads, bufs, counters, wd_muls


def _cpu_workspace(
    owner: object, params: list[Tensor], dtype: torch.dtype | None
) -> list[tuple[Tensor, Tensor]] | None:
    """Two persistent scratch buffers per CPU parameter for :func:`auon.auon_step`, else ``None``.

    The CPU allocator returns large freed blocks to the operating system, so a fresh temporary
    per step costs page faults that can exceed the arithmetic; GPU caching allocators do not,
    hence CPU only. The buffers live in ``owner._auon_workspace`` (not in the optimiser state, so
    never in a checkpoint) and are rebuilt when a parameter's local shape or the dtype changes.
    ``dtype=None`` gives each parameter buffers of its own dtype.
    """
    locals_ = [_local(p) for p in params]
    if not locals_ or any(t.device.type != "cpu" for t in locals_):
        return None
    cache: dict[int, tuple[Tensor, Tensor, Tensor]] = owner.__dict__.setdefault(
        "_auon_workspace", {}
    )
    out = []
    for p, t in zip(params, locals_, strict=True):
        want = t.dtype if dtype is None else dtype
        entry = cache.get(id(p))
        if (
            entry is None
            or entry[0] is not p
            or entry[1].shape != t.shape
            or entry[1].dtype != want
        ):
            fresh = [torch.empty(t.shape, dtype=want) for _ in range(2)]
            entry = (p, fresh[0], fresh[1])
            cache[id(p)] = entry
        out.append((entry[1], entry[2]))
    return out


def _check_ns(steps: object, name: str = "ns_steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"{name} must be an int, got {type(steps).__name__}")
    if not 1 <= steps <= 99:
        raise ValueError(f"{name} must be in [1, 99], got {steps}")
    return steps
