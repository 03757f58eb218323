"""Functional AuON: the cosh factor, the opt-in RMS brake and the multi-tensor AuON step.

The AuON update (paper "AuON: A Linear-time Alternative to Orthogonal Momentum Updates") for a
parameter with momentum look-ahead ``G`` is

    X = G / (‖G‖_F + eps),   r = sqrt(mean_i cosh²(γ·X_i)),   U = X / (r + eps_rms),

applied as ``p ← p·(1 − lr·wd) − lr·s·U`` with a shape factor ``s``. Because ``Σ_i (γX_i)² = γ²``,
``1 + γ²/N ≲ r² ≤ 1 + sinh²(γ)/N`` for ``N`` entries, so ``r − 1 = O(1/N)``: on realistic matrices
the update is Frobenius-normalised Nesterov momentum to better than 1e-5. :func:`cosh_factor`
exposes ``r`` so this can be checked; :func:`rms_brake_factor` is the opt-in extension that does act.

:func:`auon_step` is the whole optimiser step on lists of tensors, with no host synchronisation
(no ``.item()``, no data-dependent Python branch). It compiles with
``torch.compile(fullgraph=True)``. For DTensor (FSDP2) parameters it works on local shards and
sums the per-tensor scalars with one coalesced all-reduce per phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from auon._device_scalars import _scalar, _vector
from auon._dtensor import _all_reduce_by_key, _local, _reduce_key
from auon._list_ops import (
    _addcmul_,
    _buckets,
    _lerp,
    _lerp_,
    _lerp_into,
    _mul,
    _mul_,
    _mul_into,
    _neg,
    _norms,
    _sums,
    _unary_,
    _use_foreach,
)
from auon._nonfinite import _count_nonfinite_, _keep_finite_, _zero_nonfinite_
from auon._scales import _auon_scale
from auon._state import _GroupTensors

__all__ = ["auon_step", "brake_reference_rms", "cosh_factor", "rms_brake_factor"]

_LOG2 = math.log(2.0)


def cosh_factor(
    G: Tensor, gamma: float = 1.0, *, eps: float = 1e-7, compute_dtype: torch.dtype = torch.float32
) -> Tensor:
    """The AuON cosh factor ``r = sqrt(mean_i cosh²(γ·G_i/(‖G‖_F + eps)))`` of one tensor.

    Args:
        G: Update tensor of any shape ``(...)`` with at least one entry.
        gamma: Temperature ``γ > 0`` (1.0 in the paper, 1.5 in the refactored repository).
        eps: Added to the Frobenius norm.
        compute_dtype: Dtype of the elementwise work (``torch.bfloat16`` reproduces the original
            script's rounding, where ``r`` is exactly 1 for realistic sizes). Sums accumulate in fp32.

    Returns:
        0-D fp32 tensor (float64 for float64 compute) ``r ≥ 1``; ``cosh(γ)`` for a single entry.
    """
    acc = torch.float64 if compute_dtype == torch.float64 else torch.float32
    Gc = G.to(compute_dtype)
    norm = torch.linalg.vector_norm(Gc, dtype=acc)
    Y = Gc * (gamma / (norm + eps)).to(compute_dtype)
    Y.cosh_()
    csum = Y.double().square().sum()  # float64 sum: r − 1 = O(1/N) is below fp32 resolution
    return torch.sqrt(csum / G.numel()).to(acc)


def brake_reference_rms(temperature: float) -> float:
    """``r_ref = sqrt((1 + e^{2/τ²})/2)``: ``sqrt(E cosh²(z))`` for Gaussian ``z`` of std ``1/τ``."""
    return math.sqrt((1.0 + math.exp(2.0 / temperature**2)) / 2.0)


def _log_brake_reference(temperature: float) -> float:
    """``log r_ref`` without overflow for small temperatures."""
    a = 2.0 / temperature**2
    return 0.5 * (a + math.log1p(math.exp(-a)) - _LOG2)


def _two_logcosh(z: Tensor) -> Tensor:
    """``2·log cosh z`` without overflow: ``2|z| + 2·log1p(e^{−2|z|}) − 2 log 2``."""
    a = z.abs()
    return 2.0 * a + 2.0 * torch.log1p(torch.exp(-2.0 * a)) - 2.0 * _LOG2


def rms_brake_factor(X: Tensor, temperature: float = 3.0) -> Tensor:
    """The opt-in "RMS brake" factor ``min(1, r_ref / sqrt(mean cosh²(z)))`` with ``z = X·√N/τ``.

    Not part of the AuON paper. Entries are measured in units of their own RMS (so the factor is
    scale free), divided by the temperature ``τ``; ``log mean cosh²`` is evaluated as a
    log-mean-exp of ``2·log cosh`` so it never overflows. A Gaussian-like update gives a factor
    close to 1; an update concentrated on a few entries (a spike) gives a factor far below 1.

    Args:
        X: Update tensor ``(...)`` with ``N`` entries (any scale; zeros give factor 1).
        temperature: ``τ > 0``; larger means a softer brake.

    Returns:
        0-D fp32 tensor in ``(0, 1]``.
    """
    Xf = X.float()
    n = X.numel()
    rms = torch.linalg.vector_norm(Xf) / math.sqrt(n)
    z = Xf / (rms * temperature + 1e-30)
    t = _two_logcosh(z)
    m = t.amax()
    log_mean = m + torch.log(torch.exp(t - m).sum() / n)
    return torch.exp(_log_brake_reference(temperature) - 0.5 * log_mean).clamp(max=1.0)


def auon_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    nonfinite_steps: Sequence[Tensor] | None = None,
    *,
    lr: float | Tensor,
    momentum: float = 0.95,
    weight_decay: float = 0.0,
    variant: Literal["paper", "repo"] = "paper",
    gamma: float = 1.0,
    nesterov: bool = True,
    eps: float = 1e-7,
    eps_rms: float = 1e-8,
    compute_dtype: torch.dtype = torch.float32,
    adjust_lr_fn: str | None = None,
    brake: Literal["none", "rms"] = "none",
    brake_temperature: float = 3.0,
    maximize: bool = False,
    nonfinite: Literal["skip", "propagate"] = "skip",
    foreach: bool | None = None,
    wd_muls: Sequence[float] | None = None,
    workspace: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> None:
    """One AuON step on lists of tensors, in place (parameters, momentum buffers, counters).

    Hyperparameters are not validated here (:class:`auon.AuON` does that). ``grads`` are read only.

    Paper variant, per parameter ``p`` with gradient ``g``:
    ``m ← lerp(m, g, 1−β)``; ``G = lerp(g, m, β)`` (Nesterov) or ``m``; ``U`` as in the module
    docstring (elementwise work in ``compute_dtype``); ``p ← p·(1 − lr·wd) − lr·s·U`` with ``s``
    from ``adjust_lr_fn`` and ``adaptnn_core.matrix_shape(p)``; with ``brake="rms"`` ``U`` is also
    multiplied by :func:`rms_brake_factor`.

    Repo variant (the refactored repository's ``AuON``, reproduced bit for bit in fp32):
    ``p ← p·(1 − lr·wd·wd_mul)``; ``m ← β·m + (1−β)·g``; ``G = (1−β)·g + β·m``;
    ``X = γ·G/(‖G‖_F + eps)``; ``r = sqrt(mean cosh²(X))``; ``p ← p − lr·(G/(r + eps_rms))``.

    Args:
        params: Parameters (plain tensors or DTensors), any shapes (≥ 2-D for the paper variant).
        grads: Their gradients (same shapes); never written.
        momentum_buffers: Momentum buffers, same shapes and dtypes as ``params``.
        nonfinite_steps: Optional int64 0-D counters incremented when a step is skipped.
        lr: Learning rate (float or 1-element tensor).
        momentum: ``β`` in ``[0, 1]``.
        weight_decay: Decoupled decay ``λ``.
        variant: ``"paper"`` or ``"repo"``.
        gamma: cosh temperature ``γ``.
        nesterov: Use the look-ahead ``lerp(g, m, β)`` (paper variant only; repo is always Nesterov).
        eps: Added to ``‖G‖_F``.
        eps_rms: Added to ``r``.
        compute_dtype: Dtype of the normalised update and the cosh (paper variant).
        adjust_lr_fn: Shape factor rule (paper variant).
        brake: ``"none"`` or ``"rms"`` (paper variant).
        brake_temperature: ``τ`` of the brake.
        maximize: Ascend instead of descend.
        nonfinite: ``"skip"`` leaves a parameter and its momentum unchanged when its update norm is
            not finite; ``"propagate"`` follows PyTorch (NaN spreads).
        foreach: Use ``torch._foreach_*`` kernels; ``None`` → on for CUDA tensors.
        wd_muls: Per-parameter decay multipliers (repo variant; ``wd_mul`` attributes).
        workspace: Optional pair of preallocated buffers per parameter (shape of its local
            tensor, dtype ``compute_dtype``) that receive the look-ahead ``G`` and the cosh work
            (paper variant, fp32/fp64 compute equal to the parameter dtype; ignored otherwise).
            The result is identical; on CPU, where large freed tensors go back to the operating
            system, it saves two page-faulting allocations per parameter and step.
    """
    n = len(params)
    if n == 0:
        return
    if not (len(grads) == n and len(momentum_buffers) == n):
        raise ValueError("params, grads and momentum_buffers must have the same length")
    counters = list(nonfinite_steps) if nonfinite_steps is not None else None
    if workspace is not None and len(workspace) != n:
        raise ValueError(
            f"workspace must hold one buffer pair per parameter ({n}), got {len(workspace)}"
        )
    muls = [1.0] * n if wd_muls is None else [float(w) for w in wd_muls]
    tensors = _GroupTensors(list(params), list(grads), list(momentum_buffers), counters, muls)
    use_foreach = _use_foreach(foreach, (_local(p) for p in params))
    key_fn = (
        (lambda i: (_local(params[i]).device, params[i].dtype))
        if use_foreach
        else (lambda i: _local(params[i]).device)
    )
    kw: dict[str, Any] = {
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "gamma": gamma,
        "eps": eps,
        "eps_rms": eps_rms,
        "skip": nonfinite == "skip",
        "maximize": maximize,
        "foreach": use_foreach,
    }
    for idx in _buckets(n, key_fn):
        if variant == "repo":
            _repo_bucket(tensors.subset(idx), **kw)
            continue
        _paper_bucket(
            tensors.subset(idx),
            nesterov=nesterov,
            adjust_lr_fn=adjust_lr_fn,
            compute_dtype=compute_dtype,
            brake=brake,
            brake_temperature=brake_temperature,
            workspace=[workspace[i] for i in idx] if workspace is not None else None,
            **kw,
        )


def _paper_bucket(
    tensors: _GroupTensors,
    *,
    lr: float | Tensor,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    gamma: float,
    eps: float,
    eps_rms: float,
    adjust_lr_fn: str | None,
    compute_dtype: torch.dtype,
    brake: str,
    brake_temperature: float,
    skip: bool,
    maximize: bool,
    foreach: bool,
    workspace: list[tuple[Tensor, Tensor]] | None,
) -> None:
    params, counters = tensors.params, tensors.counters
    keys = [_reduce_key(p) for p in params]
    numels = [p.numel() for p in params]  # global sizes (DTensor.numel is global)
    scales = [_auon_scale(p.shape, adjust_lr_fn) for p in params]
    ps, gs, ms = tensors.local()
    device = ps[0].device
    acc = torch.float64 if compute_dtype == torch.float64 else torch.float32

    if maximize:
        gs = _neg(gs, foreach)
    # Momentum (EMA form). With "skip" the buffers are committed below, only where the update norm
    # is finite; the Nesterov look-ahead is then formed from the old buffer in one op:
    # lerp(g, lerp(m, g, 1−β), β) = lerp(g, m, β²).
    # Low-precision buffers keep the direct form (a bf16 lerp weight 1/(1+β) would be rounded).
    direct = skip and ms[0].dtype not in (torch.float32, torch.float64)
    # Preallocated outputs for G and the cosh work, where G is computed in the compute dtype.
    use_ws = (
        workspace is not None
        and not direct
        and compute_dtype.itemsize >= 4
        and all(t.dtype == compute_dtype for t in ms)
    )
    out_g = [w[0] for w in workspace] if use_ws and workspace is not None else None
    out_e = [w[1] for w in workspace] if use_ws and workspace is not None else None
    m_new: list[Tensor] = []
    if direct:
        m_new = _lerp(ms, gs, 1.0 - momentum, foreach)
        G = _lerp(gs, m_new, momentum, foreach) if nesterov else [t.clone() for t in m_new]
    elif skip:
        G = (
            _lerp_into(gs, ms, momentum * momentum, out_g, foreach)
            if nesterov
            else _lerp_into(ms, gs, 1.0 - momentum, out_g, foreach)
        )
    else:
        _lerp_(ms, gs, 1.0 - momentum, foreach)
        G = _lerp_into(gs, ms, momentum, out_g, foreach) if nesterov else ms

    # Phase 1: Frobenius norms (local sums of squares, summed over shards), accumulated in the
    # compute precision (fp32 unless float64). A finite fp32 G with ‖G‖ > ~1.8e19 overflows ‖G‖²
    # and is treated as non-finite (skipped and counted): the documented limit. A float64
    # accumulation would lift it but made the whole CPU step about twice as slow (fp64
    # reductions of fp32 data are not vectorised there), for gradients no training survives.
    sq = _all_reduce_by_key(_norms(G, foreach).square(), keys, "sum")
    finite = torch.isfinite(sq)
    norm = sq.sqrt().to(acc)
    inv = 1.0 / (norm + eps)
    if skip:
        flags = finite.unbind(0)
        _zero_nonfinite_(G, flags)
        inv = torch.where(finite, inv, torch.zeros_like(inv))  # 0·(1/NaN) would stay NaN
        # m_new = lerp(m, G, 1/(1+β)) (Nesterov) or G; weight 0 where not finite keeps m exactly.
        if direct:
            _keep_finite_(ms, m_new, flags)
        else:
            w = (1.0 / (1.0 + momentum)) if nesterov else 1.0
            _lerp_(ms, G, (finite.to(ms[0].dtype) * w).unbind(0), foreach)

    # Phase 2: r² = mean cosh²(γX) with X = G/(‖G‖ + eps), elementwise work in compute_dtype.
    Gc = G if G[0].dtype == compute_dtype else [t.to(compute_dtype) for t in G]
    n_t = _vector(numels, acc, device)
    if compute_dtype.itemsize >= 4:
        # cosh²(y) = 1/2 + (e^{2y} + e^{−2y})/4: torch's CPU cosh is not vectorised while exp
        # is (≈20× faster); |y| ≤ γ, so e^{±2y} cannot overflow before cosh² does.
        E = _mul_into(Gc, (inv * (2.0 * gamma)).to(compute_dtype).unbind(0), out_e, foreach)
        _unary_(E, "exp", foreach)
        s_pos = _sums(E, acc)  # E > 0: a plain sum, much faster than norm(ord=1) on CPU
        _unary_(E, "reciprocal", foreach)
        s_neg = _sums(E, acc)
        local_n = _vector([t.numel() for t in Gc], acc, device)
        csum = _all_reduce_by_key(0.5 * local_n + 0.25 * (s_pos + s_neg), keys, "sum")
    else:
        # Low precision (the original bf16 script): cosh itself, so its rounding is reproduced.
        Y = _mul(Gc, (inv * gamma).to(compute_dtype).unbind(0), foreach)
        _unary_(Y, "cosh", foreach)
        csum = _all_reduce_by_key(_norms(Y, foreach).square(), keys, "sum")
    r = torch.sqrt(csum / n_t)

    # Update coefficient: p += base · U, U = X/(r + eps_rms); base = −lr·s(·brake)(·finite).
    base = _vector(scales, acc, device).neg_()
    base = base * (_scalar(lr, acc, device) if isinstance(lr, Tensor) else lr)
    if brake == "rms":
        base = base * _brake_factors(Gc, inv, n_t, keys, brake_temperature, foreach)
    if skip:
        base = torch.where(finite, base, torch.zeros_like(base))

    if weight_decay != 0.0:
        decay = 1.0 - lr * weight_decay
        if isinstance(decay, Tensor):
            decay_t = torch.ones((len(ps),), dtype=acc, device=device) * _scalar(decay, acc, device)
        else:
            decay_t = torch.full((len(ps),), decay, dtype=acc, device=device)
        if skip:
            decay_t = torch.where(finite, decay_t, torch.ones_like(decay_t))
        _mul_(ps, decay_t.unbind(0), foreach)

    if compute_dtype.itemsize < G[0].dtype.itemsize:
        # Materialise U in compute_dtype to reproduce its rounding (e.g. the original bf16 script).
        X = _mul(Gc, inv.to(compute_dtype).unbind(0), foreach)
        U = _mul(X, (1.0 / (r + eps_rms)).to(compute_dtype).unbind(0), foreach)
        _addcmul_(ps, U, base.unbind(0), foreach)
    else:
        # Folded: U = Gc · inv/(r + eps_rms), one fused multiply-add per parameter.
        _addcmul_(ps, Gc, (base * inv / (r + eps_rms)).unbind(0), foreach)
    _count_nonfinite_(counters, finite)


def _brake_factors(
    Gc: list[Tensor],
    inv: Tensor,
    n_t: Tensor,
    keys: list[Any],
    temperature: float,
    foreach: bool,
) -> Tensor:
    """Per-tensor RMS-brake factors (see :func:`rms_brake_factor`), one MAX and one SUM reduction."""
    acc = n_t.dtype
    zc = (inv * n_t.sqrt() / temperature).to(Gc[0].dtype)
    z = _mul(Gc, zc.unbind(0), foreach)
    t = [_two_logcosh(zi.to(acc)) for zi in z]
    local_max = torch.stack(
        [
            ti.amax() if ti.numel() > 0 else torch.full((), -math.inf, dtype=acc, device=inv.device)
            for ti in t
        ]
    )
    m = _all_reduce_by_key(local_max, keys, "max")
    s = torch.stack([torch.exp(ti - mi).sum() for ti, mi in zip(t, m.unbind(0), strict=True)])
    s = _all_reduce_by_key(s, keys, "sum")
    log_mean = m + torch.log(s / n_t)
    return torch.exp(_log_brake_reference(temperature) - 0.5 * log_mean).clamp(max=1.0)


def _repo_bucket(
    tensors: _GroupTensors,
    *,
    lr: float | Tensor,
    momentum: float,
    weight_decay: float,
    gamma: float,
    eps: float,
    eps_rms: float,
    skip: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    # The formulas are written op for op as the refactored repository's pseudo-code so that the
    # float32 result is bitwise reproducible; every op here is a plain (non-fused) torch op.
    params, counters, wd_muls = tensors.params, tensors.counters, tensors.wd_muls
    keys = [_reduce_key(p) for p in params]
    numels = [p.numel() for p in params]
    ps, gs, ms = tensors.local()
    beta = momentum
    if isinstance(lr, Tensor):
        lr = lr.reshape(())  # a 1-element tensor: a 0-D operand (valid on any device if on CPU)
    if maximize:
        gs = _neg(gs, foreach)
    new_p = [
        p.mul(1 - lr * weight_decay * w) if weight_decay != 0.0 else p
        for p, w in zip(ps, wd_muls, strict=True)
    ]
    if skip:
        new_m = [m.mul(beta) for m in ms]
    else:
        new_m = ms
        for m in ms:
            m.mul_(beta)
    scaled_g = [(1 - beta) * g for g in gs]
    for m, sg in zip(new_m, scaled_g, strict=True):
        m.add_(sg)
    G = [sg + beta * m for sg, m in zip(scaled_g, new_m, strict=True)]
    # The finite test uses a float64 norm: a finite G whose fp32 ‖G‖ overflows is stepped as
    # the original steps it (X = 0, r = 1), not skipped.
    if any(k is not None for k in keys):
        # sharded: one float64 all-reduce of the local ΣG² gives both the norm and the test
        sq = _all_reduce_by_key(_norms(G, foreach, dtype=torch.float64).square(), keys, "sum")
        finite = torch.isfinite(sq)
        s_list = [si.to(x.dtype) for si, x in zip(sq.sqrt().unbind(0), G, strict=True)]
    else:
        # the original's norm, bit for bit
        s_list = [torch.linalg.vector_norm(x) for x in G]
        finite = torch.isfinite(_norms(G, foreach, dtype=torch.float64))
    X = [(gamma * x) / (si + eps) for x, si in zip(G, s_list, strict=True)]
    if any(k is not None for k in keys):
        c = torch.stack([torch.cosh(x).pow(2).sum() for x in X])
        c = _all_reduce_by_key(c, keys, "sum")
        r_list = list(torch.sqrt(c / _vector(numels, c.dtype, c.device)).unbind(0))
    else:
        r_list = [torch.sqrt(torch.cosh(x).pow(2).mean()) for x in X]
    for i, (x, ri) in enumerate(zip(G, r_list, strict=True)):
        update = x / (ri + eps_rms)
        stepped = new_p[i] - update.mul_(lr)
        if skip:
            torch.where(finite[i], stepped, ps[i], out=ps[i])
            torch.where(finite[i], new_m[i], ms[i], out=ms[i])
        else:
            ps[i].copy_(stepped)
    _count_nonfinite_(counters, finite)
