"""Parameter grouping: hidden matrices for AuON/Muon, everything else for AdamW.

Embeddings (and weights tied to them), output heads, norms, biases and other vectors/scalars do not
belong to a matrix optimiser; :func:`matrix_param_groups` splits a model accordingly and
:func:`build_optimizers` returns ready optimisers. ``param_groups`` is its deprecated old name (it
clashed with ``aion_torch.param_groups``, which has another contract).
"""

from __future__ import annotations

import fnmatch
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["build_optimizers", "matrix_param_groups", "param_groups"]

_HEADS = ("lm_head", "head", "classifier", "score", "output")


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)


def matrix_param_groups(
    model: nn.Module,
    *,
    lr: float,
    adamw_lr: float,
    weight_decay: float = 0.0,
    adamw_weight_decay: float = 0.0,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    head_names: Sequence[str] = _HEADS,
    extra_adamw: Sequence[str | Tensor] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the trainable parameters of ``model`` into matrix groups and AdamW groups.

    Matrix group: parameters with ``ndim ≥ 2`` that are not (tied to) an ``nn.Embedding`` /
    ``nn.EmbeddingBag`` weight and none of whose qualified names has a component in
    ``head_names``. AdamW groups: embeddings and heads (weight decay ``adamw_weight_decay``),
    every ``ndim < 2`` parameter (weight decay 0) and anything in ``extra_adamw``. Shared parameters
    appear once; frozen parameters are left out.

    Args:
        model: The module to split.
        lr: Learning rate of the matrix group.
        adamw_lr: Learning rate of the AdamW groups.
        weight_decay: Weight decay of the matrix group.
        adamw_weight_decay: Weight decay of embeddings and heads in AdamW.
        adamw_betas: AdamW betas.
        head_names: Module names that mark an output head (matched per name component).
        extra_adamw: Extra parameters for AdamW: tensors, or names / module prefixes / fnmatch
            patterns of qualified parameter names.

    Returns:
        ``(matrix_groups, adamw_groups)``: lists of param-group dicts (empty groups dropped).

    Raises:
        ValueError: No matrix parameter was found.
    """
    embed_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    }
    extra_ids = {id(t) for t in extra_adamw if isinstance(t, Tensor)}
    patterns = [t for t in extra_adamw if isinstance(t, str)]
    names: dict[int, list[str]] = {}
    order: list[Tensor] = []
    p: Tensor
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in names:
            names[id(p)] = []
            order.append(p)
        names[id(p)].append(name)
    heads = set(head_names)
    matrices: list[Tensor] = []
    special: list[Tensor] = []
    vectors: list[Tensor] = []
    for p in order:
        if not p.requires_grad:
            continue
        qual = names[id(p)]
        is_head = any(part in heads for n in qual for part in n.split("."))
        is_extra = id(p) in extra_ids or any(_matches(n, pat) for n in qual for pat in patterns)
        if p.ndim < 2:
            vectors.append(p)
        elif id(p) in embed_ids or is_head or is_extra:
            special.append(p)
        else:
            matrices.append(p)
    if not matrices:
        raise ValueError(
            f"model: no matrix parameter found for the matrix optimiser ({len(order)} parameters, "
            "all embeddings, heads, vectors or extra_adamw)"
        )
    matrix_groups = [{"params": matrices, "lr": lr, "weight_decay": weight_decay}]
    adamw_groups = [
        {"params": ps, "lr": adamw_lr, "weight_decay": wd, "betas": adamw_betas}
        for ps, wd in ((special, adamw_weight_decay), (vectors, 0.0))
        if ps
    ]
    return matrix_groups, adamw_groups


def build_optimizers(
    model: nn.Module,
    kind: Literal["auon", "hybrid", "muon", "adamw"] = "auon",
    *,
    lr: float | None = None,
    adamw_lr: float = 3e-4,
    weight_decay: float = 0.0,
    adamw_weight_decay: float = 0.0,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    head_names: Sequence[str] = _HEADS,
    extra_adamw: Sequence[str | Tensor] = (),
    **kwargs: Any,
) -> list[Optimizer]:
    """Build ``[matrix optimiser, AdamW]`` for ``model`` (``[AdamW]`` for ``kind="adamw"``).

    Args:
        model: The module to optimise.
        kind: ``"auon"`` (:class:`auon.AuON`), ``"hybrid"`` (:class:`auon.HybridAuON`), ``"muon"``
            (:class:`auon.Muon`) or ``"adamw"`` (one ``torch.optim.AdamW`` over both groups).
        lr: Matrix learning rate; ``None`` → the optimiser's default (``adamw_lr`` for "adamw").
        adamw_lr: Learning rate of embeddings, heads and vectors.
        weight_decay: Matrix weight decay.
        adamw_weight_decay: AdamW weight decay of embeddings and heads.
        adamw_betas: AdamW betas.
        head_names: See :func:`matrix_param_groups`.
        extra_adamw: See :func:`matrix_param_groups`.
        **kwargs: Passed to the matrix optimiser.

    Returns:
        A list of optimisers; call ``step()``/``zero_grad()`` on each.

    Raises:
        ValueError: Unknown ``kind`` or no matrix parameter.
    """
    from auon.auon_optimizer import AuON
    from auon.hybrid import HybridAuON
    from auon.muon import Muon

    classes: dict[str, type[Optimizer]] = {"auon": AuON, "hybrid": HybridAuON, "muon": Muon}
    if kind not in (*classes, "adamw"):
        raise ValueError(f"kind must be one of ['auon', 'hybrid', 'muon', 'adamw'], got {kind!r}")
    defaults = {"auon": 0.24, "hybrid": 0.24, "muon": 0.02, "adamw": adamw_lr}
    matrix_lr = defaults[kind] if lr is None else lr
    mats, others = matrix_param_groups(
        model,
        lr=matrix_lr,
        adamw_lr=adamw_lr,
        weight_decay=weight_decay,
        adamw_weight_decay=adamw_weight_decay,
        adamw_betas=adamw_betas,
        head_names=head_names,
        extra_adamw=extra_adamw,
    )
    if kind == "adamw":
        for g in mats:
            g["betas"] = adamw_betas
        return [torch.optim.AdamW(mats + others, lr=adamw_lr, betas=adamw_betas)]
    matrix_opt = classes[kind](mats, lr=matrix_lr, weight_decay=weight_decay, **kwargs)  # type: ignore[call-arg]
    opts: list[Optimizer] = [matrix_opt]
    if others:
        opts.append(torch.optim.AdamW(others, lr=adamw_lr, betas=adamw_betas))
    return opts


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _deprecated_alias(fn: Callable[_P, _R], old: str) -> Callable[_P, _R]:
    """``fn`` under its old name ``old``, warning (``DeprecationWarning``) at every call."""
    new = f"auon.{fn.__name__}"

    @functools.wraps(fn)
    def alias(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        warnings.warn(
            f"auon.{old} is deprecated; use {new} (same arguments, same result)",
            DeprecationWarning,
            stacklevel=2,
        )
        return fn(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{new}`; warns at every call."
    return alias


param_groups = _deprecated_alias(matrix_param_groups, "param_groups")
