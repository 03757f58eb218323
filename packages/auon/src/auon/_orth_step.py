"""Private step functions of the Newton–Schulz optimisers (``Muon`` and ``HybridAuON``).

Momentum and the non-finite check are multi-tensor; the orthogonalisation itself is per parameter
(``adaptnn_core.orthogonalize``). DTensor parameters are gathered (``full_tensor``), orthogonalised
and re-sharded locally: correct, not communication-efficient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import Tensor

from adaptnn_core import orthogonalize
from auon._device_scalars import _scalar, _vector
from auon._dtensor import (
    _all_reduce_by_key,
    _full_tensor,
    _local,
    _local_shard_of,
    _reduce_key,
)
from auon._list_ops import _neg, _norms, _use_foreach
from auon._momentum import _momentum
from auon._nonfinite import _count_nonfinite_, _keep_finite_, _zero_nonfinite_
from auon._scales import _muon_scale
from auon._state import _collect_group, _GroupTensors
from auon._workspace import _cpu_workspace
from auon.functional import cosh_factor

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


def _orth_group_step(
    owner: torch.optim.Optimizer,
    group: dict[str, Any],
    name: str,
    *,
    split_group: Callable[[list[Tensor]], ProcessGroup | None] | None = None,
) -> None:
    """One step of a Muon (no ``gamma`` key) or HybridAuON param group (state in ``owner``).

    ``split_group`` maps the group's parameters to the process group that shares the
    orthogonalisation (Muon's ``split_across_ranks``), or ``None``.
    """
    tensors = _collect_group(owner.state, group, name)
    if not tensors.params:
        return
    common: dict[str, Any] = {
        "lr": group["lr"],
        "momentum": group["momentum"],
        "weight_decay": group["weight_decay"],
        "ns_steps": group["ns_steps"],
        "skip": group["nonfinite"] == "skip",
        "maximize": group["maximize"],
    }
    if group.get("variant") == "repo":
        _hybrid_repo_step(
            tensors,
            gamma=group["gamma"],
            eps=group["eps"],
            eps_rms=group["eps_rms"],
            **common,
        )
        return
    _orth_step(
        tensors,
        nesterov=group["nesterov"],
        ns_coefficients=group["ns_coefficients"],
        ns_eps=group["eps"],
        flatten=group["flatten"],
        scale_fn=partial(_muon_scale, adjust_lr_fn=group["adjust_lr_fn"]),
        gamma=group.get("gamma"),
        eps_rms=group.get("eps_rms", 0.0),
        foreach=group["foreach"],
        workspace=_cpu_workspace(owner, tensors.params, None),
        split_group=split_group(tensors.params) if split_group is not None else None,
        **common,
    )


def _orth_step(
    tensors: _GroupTensors,
    *,
    lr: float | Tensor,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    ns_steps: int,
    ns_coefficients: Any,
    ns_eps: float,
    flatten: bool,
    scale_fn: Callable[[Sequence[int]], float],
    gamma: float | None,
    eps_rms: float,
    skip: bool,
    maximize: bool,
    foreach: bool | None,
    workspace: Sequence[tuple[Tensor, Tensor]] | None = None,
    split_group: ProcessGroup | None = None,
) -> None:
    """Muon (``gamma=None``) or paper HybridAuON (cosh step on the NS output) on lists of tensors.

    ``p ← p·(1 − lr·wd) − lr·s·ortho`` (Muon) or ``− lr·s·ortho/(r + eps_rms)`` (Hybrid) with
    ``O = orthogonalize(G, steps, coefficients, compute_dtype=bf16, flatten)`` and
    ``r = sqrt(mean cosh²(γ·ortho/‖ortho‖_F))``.

    With ``split_group`` (replicated parameters, e.g. DDP) each rank of the group orthogonalises
    only the parameters ``i`` with ``i % world_size == rank`` and the results are broadcast, so
    every rank applies the same update for a ``1/world_size`` share of the Newton–Schulz work.
    """
    params, counters = tensors.params, tensors.counters
    if not params:
        return
    use_foreach = _use_foreach(foreach, (_local(p) for p in params))
    ps, gs, ms = tensors.local()
    if use_foreach and len({(p.device, p.dtype) for p in ps}) > 1:
        use_foreach = False  # mixed buckets: the loop path handles them
    keys = [_reduce_key(p) for p in params]
    if maximize:
        gs = _neg(gs, use_foreach)
    ws = (
        workspace
        if workspace is not None and all(m.dtype == g.dtype for m, g in zip(ms, gs, strict=True))
        else None
    )
    G, m_new = _momentum(
        ps, gs, ms, beta=momentum, nesterov=nesterov, skip=skip, foreach=use_foreach, workspace=ws
    )
    # float64 sums of squares: finite fp32/bf16 entries above ~1.8e19 must not read as non-finite
    sq = _all_reduce_by_key(_norms(G, use_foreach, dtype=torch.float64).square(), keys, "sum")
    finite = torch.isfinite(sq)
    flags = finite.unbind(0)
    if skip:
        _keep_finite_(ms, m_new, flags)
        _zero_nonfinite_(G, flags)
    # Muon adds the bf16 result straight into the parameter (promoted exactly, as
    # torch.optim.Muon does); an fp32 copy would cost a pass and an allocation.
    out_dtype = torch.bfloat16 if gamma is None else None

    def direction(i: int) -> Tensor:
        ortho = orthogonalize(
            _full_tensor(G[i], params[i]),
            flatten=flatten,
            steps=ns_steps,
            coefficients=ns_coefficients,
            compute_dtype=torch.bfloat16,
            eps=ns_eps,
            out_dtype=out_dtype,
        )
        if gamma is not None:
            r = cosh_factor(ortho, gamma)
            ortho = ortho / (r + eps_rms).to(ortho.dtype)
        return ortho

    if split_group is not None:
        directions = _split_across_ranks(
            direction, [(tuple(g.shape), out_dtype or g.dtype) for g in G], split_group, G[0].device
        )
    # Per-parameter coefficients −lr·s (and the decay 1 − lr·wd), built on the device without a
    # host-to-device copy; with "skip" they become 0 (and 1) where the update is not finite.
    device = ps[0].device
    neg_scales = [-scale_fn(tuple(p.shape)) for p in params]
    base_t: Tensor | None = None
    if isinstance(lr, Tensor):
        base_t = _vector(neg_scales, lr.dtype, device) * _scalar(lr, lr.dtype, device)
    elif skip:
        base_t = _vector([s * lr for s in neg_scales], torch.float32, device)
    bases: list[float | Tensor] = [s * lr for s in neg_scales] if base_t is None else []
    if base_t is not None:
        if skip:
            base_t = torch.where(finite, base_t.to(torch.float32), 0.0)
        bases = list(base_t.unbind(0))
    decays: list[float | Tensor] = []
    if weight_decay != 0.0:
        decay = 1.0 - lr * weight_decay
        if skip:
            dtype = decay.dtype if isinstance(decay, Tensor) else torch.get_default_dtype()
            decay_t = torch.ones((len(ps),), dtype=dtype, device=device) * _scalar(
                decay, dtype, device
            )
            decays = list(torch.where(finite, decay_t, 1.0).unbind(0))
        else:
            # a tensor decay as a 0-D operand (a 1-element CPU lr would not broadcast on a GPU)
            d = _scalar(decay, decay.dtype, device) if isinstance(decay, Tensor) else decay
            decays = [d] * len(ps)
    for i, p in enumerate(params):
        local_p = ps[i]
        ortho = directions[i] if split_group is not None else direction(i)
        ortho = _local_shard_of(ortho, p)
        if decays:
            local_p.mul_(decays[i])
        base = bases[i]
        if isinstance(base, Tensor):
            local_p.addcmul_(ortho, base.to(torch.float32))
        else:
            local_p.add_(ortho, alpha=base)
    _count_nonfinite_(counters, finite)


def _split_across_ranks(
    compute: Callable[[int], Tensor],
    specs: Sequence[tuple[tuple[int, ...], torch.dtype]],
    group: ProcessGroup,
    device: torch.device,
) -> list[Tensor]:
    """``[compute(i) for i]`` with the work shared round-robin over the ranks of ``group``.

    Rank ``r`` computes the indices ``i ≡ r (mod world)``; each rank's results then travel in one
    flat broadcast per dtype, so every rank ends with all results, bit for bit those of their
    owner. ``specs`` gives each result's shape and dtype, known on every rank in advance.
    """
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    out: list[Tensor | None] = [
        compute(i) if i % world == rank else None for i in range(len(specs))
    ]
    for owner in range(world):
        mine = [i for i in range(owner, len(specs), world)]
        for dtype in dict.fromkeys(specs[i][1] for i in mine):
            idx = [i for i in mine if specs[i][1] == dtype]
            sizes = [math.prod(specs[i][0]) for i in idx]
            if owner == rank:
                flat = torch.cat([cast(Tensor, out[i]).reshape(-1) for i in idx])
            else:
                flat = torch.empty(sum(sizes), dtype=dtype, device=device)
            dist.broadcast(flat, src=dist.get_global_rank(group, owner), group=group)
            for i, piece in zip(idx, torch.split(flat, sizes), strict=True):
                out[i] = piece.view(specs[i][0])
    return [cast(Tensor, t) for t in out]


def _hybrid_repo_step(
    tensors: _GroupTensors,
    *,
    lr: float | Tensor,
    momentum: float,
    weight_decay: float,
    ns_steps: int,
    gamma: float,
    eps: float,
    eps_rms: float,
    skip: bool,
    maximize: bool,
) -> None:
    """The refactored repository's ``HybridAuON``: decay first, EMA + Nesterov, fp32 NS per slice.

    ``O = NS(G)`` (fp32, leading dims as a batch; ``O = G`` for ndim < 2);
    ``r = sqrt(mean cosh²(γ·ortho/(‖ortho‖_F + eps)))``; ``p ← p − lr·ortho/(r + eps_rms)``; no shape factor.
    """
    beta = momentum
    if isinstance(lr, Tensor):
        lr = lr.reshape(())  # a 1-element tensor: a 0-D operand (valid on any device if on CPU)
    finites = []
    params, counters, wd_muls = tensors.params, tensors.counters, tensors.wd_muls
    ps, gs, ms = tensors.local()
    for i, p in enumerate(params):
        local_p, m, g = ps[i], ms[i], gs[i]
        if maximize:
            g = -g
        new_p = (
            local_p.mul(1 - lr * weight_decay * wd_muls[i])
            if weight_decay != 0.0
            else local_p.clone()
        )
        new_m = m.mul(beta).add_((1 - beta) * g)
        G_local = (1 - beta) * g + beta * new_m
        G = _full_tensor(G_local, p)
        ortho = (
            orthogonalize(G, flatten=False, steps=ns_steps, compute_dtype=torch.float32)
            if G.ndim >= 2
            else G
        )
        s = torch.linalg.vector_norm(ortho)
        X = (gamma * ortho) / (s + eps)
        r = torch.sqrt(torch.cosh(X).pow(2).mean())
        update = _local_shard_of(ortho / (r + eps_rms), p)
        stepped = new_p - update.mul_(lr)
        # float64: a finite 1-D G whose fp32 ‖G‖ overflows is stepped as the original steps it
        finite = torch.isfinite(torch.linalg.vector_norm(ortho, dtype=torch.float64))
        finites.append(finite)
        if skip:
            torch.where(finite, stepped, local_p, out=local_p)
            torch.where(finite, new_m, m, out=m)
        else:
            local_p.copy_(stepped)
            m.copy_(new_m)
    if finites:
        _count_nonfinite_(counters, torch.stack(finites))
