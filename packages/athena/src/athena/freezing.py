"""Progressive freezing: stop training the front blocks of a network once their gradients settle.

`ProgressiveFreezingScheduler` watches one gradient-norm signal per *group* of parameters (by
default the trainable parameters of each transformer block, front to back) and freezes the first
not-yet-frozen group once its signal has converged, so the frozen part is always a contiguous front
prefix. When the training loss climbs well above its best value the most recently frozen group is
thawed again. It is a once-per-step training-loop helper, called between ``loss.backward()`` and
``optimizer.zero_grad()``::

    scheduler = ProgressiveFreezingScheduler(model, window_size=10, min_steps=100)
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        scheduler.step(loss)  # may freeze or unfreeze a group; returns the FreezeEvent or None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

**Signal.** Each step the gradient norm of every group (over its parameters whose ``.grad`` is not
None) is smoothed by an exponential moving average (``ema``); the last ``window_size + 1``
smoothed values are kept. ``criterion="relative"`` (default) calls a group converged when its
smoothed norm stopped changing, ``|n_t − n_{t−w}| / n_{t−w} < rel_threshold``: this does not depend
on the scale of the loss or of the parameters. ``criterion="absolute"`` is the original ATHENA
intent, the mean of the last ``window_size`` smoothed norms below ``threshold``; that threshold has
to be tuned per model and loss scale.

**Rules.** Only the first unfrozen group is a candidate (a contiguous front prefix freezes, so
backward can stop early); at most one group freezes per ``window_size`` steps; nothing freezes
before ``min_steps`` steps or while the loss is spiking; the last group never freezes. The loss is
smoothed by the same EMA; when the smoothed loss exceeds ``best + unfreeze_threshold·|best|`` (that
is ``best·(1 + unfreeze_threshold)`` for a positive loss) and a group is frozen, the most recently
frozen group is unfrozen, the best value is re-based to the current smoothed loss (so a loss that
settles at a new, higher level thaws one group per spike rather than one per cooldown), and no
decision is taken for the next ``cooldown`` steps; a spike with nothing frozen only re-bases the
best value. A step whose loss is not finite is counted but changes no statistic and takes no
decision; a group whose gradient norm is not finite (or that has no gradient) skips that step's
update of its signal.

**Two ways to freeze.**

* ``mode="requires_grad"`` (default) sets ``requires_grad=False`` and ``.grad=None`` on the group's
  parameters. Optimizers such as `torch.optim.AdamW` skip parameters whose ``.grad`` is None, so
  neither the update nor the weight decay touches them. Their ``.grad`` must stay None: backward
  creates none for them and ``optimizer.zero_grad()`` leaves a None gradient None with either
  ``set_to_none`` value (``True``, the default, is the one to use), but code that writes zero
  gradients into every parameter would let AdamW's weight decay and its non-zero moments move the
  frozen weights again. Autograd computes no weight gradients for the frozen blocks, and when
  everything in front of the first trainable block is frozen too (embeddings, a frozen base model
  with adapters) the activations entering it do not require grad, so backward stops there and the
  cost of the frozen prefix's backward is saved. (Making the embedding output require grad, as some
  gradient-checkpointing set-ups do, sends backward through the frozen blocks again.) Under DDP the
  graph changes, so wrap the model with ``find_unused_parameters=True``.
* ``mode="lr_zero"`` keeps the autograd graph and every ``requires_grad`` flag unchanged, so DDP
  works with ``find_unused_parameters=False`` and a compiled model sees no change when a group
  freezes: build the optimizer from `freeze_param_groups` and pass it as ``optimizer=``; freezing
  sets that group's ``lr`` to 0 and remembers the old value, unfreezing restores it. With AdamW an
  lr of 0 stops both the update and the decoupled weight decay (both are scaled by lr), so the
  weights stay bit-identical, but gradients are still computed and all-reduced and Adam's moment
  estimates (``exp_avg``, ``exp_avg_sq``) and step count keep being updated from them; on unfreezing
  the group resumes with those moments. Nothing of the backward cost is saved. The frozen groups' lr
  is re-set to 0 on every `ProgressiveFreezingScheduler.step`; a float lr that an lr scheduler wrote
  in the meantime is remembered as the value to restore, which is right for closed-form schedules
  (`torch.optim.lr_scheduler.LambdaLR`); recursive ones that multiply the current lr (``StepLR``,
  ``ExponentialLR``) see 0 while frozen, so the group resumes from the lr it had when frozen. A
  tensor lr is filled with 0 in place and restored to its value at freezing time.

**Distributed.** Every rank must take the same decisions. The loss and the vector of group
gradient norms are stacked into one tensor and averaged with a single ``all_reduce`` over
``process_group`` (default: the WORLD group when torch.distributed is initialised, otherwise no
collective), then read with one host synchronisation per step; all decisions are taken from these
averaged values.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "FREEZE_GROUP_KEY",
    "FREEZE_NAME_KEY",
    "FreezeCriterion",
    "FreezeEvent",
    "FreezeMode",
    "GroupSpec",
    "ProgressiveFreezingScheduler",
    "freeze_param_groups",
]

FreezeCriterion = Literal["relative", "absolute"]
FreezeMode = Literal["requires_grad", "lr_zero"]

#: Optimizer param-group key holding the index of the freezing group (set by `freeze_param_groups`).
FREEZE_GROUP_KEY = "athena_freeze_group"
#: Optimizer param-group key holding the freezing group's name.
FREEZE_NAME_KEY = "athena_freeze_name"

#: Module-container names under which ``<name>.<int>.`` marks a transformer block
#: (``model.layers.3.…``, ``encoder.layer.3.…``, ``transformer.h.3.…``, ``blocks.3.…``).
_BLOCK_CONTAINERS = frozenset({"layer", "layers", "h", "blocks", "block"})

#: One user-given group: parameters, or a ``(name, parameters)`` pair.
GroupSpec: TypeAlias = Iterable[nn.Parameter] | tuple[str, Iterable[nn.Parameter]]

_STATE_KEYS = frozenset(
    {
        "num_steps",
        "frozen_prefix_depth",
        "events",
        "loss_ema",
        "best_loss",
        "last_freeze_step",
        "last_unfreeze_step",
        "norm_ema",
        "history",
        "saved_lr",
        "group_names",
        "mode",
    }
)


@dataclass(frozen=True, kw_only=True)
class FreezeEvent:
    """One freezing decision taken by `ProgressiveFreezingScheduler.step`.

    Attributes:
        step: Value of ``num_steps`` at the step that took the decision (1 for the first call).
        kind: ``"freeze"`` or ``"unfreeze"``.
        group: Index of the group frozen or unfrozen (0 is the front).
        name: Name of that group (``"layers.0"`` for default groups).
        frozen_prefix_depth: Number of frozen front groups after the event.
        loss: Loss of that step, averaged over the ranks of the process group.
        loss_ema: Smoothed loss after that step's update (the value the spike test compares).
    """

    step: int
    kind: Literal["freeze", "unfreeze"]
    group: int
    name: str
    frozen_prefix_depth: int
    loss: float
    loss_ema: float


def _block_key(name: str) -> tuple[str, str, int] | None:
    """(container, block name, block index) of the first ``<container>.<int>.`` segment, or None."""
    parts = name.split(".")
    for i in range(len(parts) - 2):
        index = parts[i + 1]
        if parts[i] in _BLOCK_CONTAINERS and index.isascii() and index.isdigit():
            return ".".join(parts[: i + 1]), ".".join(parts[: i + 2]), int(index)
    return None


def _default_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The trainable parameters of each transformer block, front to back."""
    containers: dict[str, dict[int, tuple[str, list[nn.Parameter]]]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = _block_key(name)
        if key is None:
            continue
        container, block, index = key
        containers.setdefault(container, {}).setdefault(index, (block, []))[1].append(param)
    return [blocks[i] for blocks in containers.values() for i in sorted(blocks)]


def _user_groups(
    model: nn.Module, groups: Sequence[GroupSpec]
) -> list[tuple[str, list[nn.Parameter]]]:
    """Validate user-given groups: parameters of ``model``, each in at most one non-empty group."""
    if isinstance(groups, (str, bytes, Tensor)) or not isinstance(groups, Sequence):
        raise TypeError(
            f"groups must be a list of parameter lists or (name, parameters) pairs, got "
            f"{type(groups).__name__}"
        )
    in_model = {id(p) for p in model.parameters()}
    owner: dict[int, int] = {}
    resolved: list[tuple[str, list[nn.Parameter]]] = []
    for i, entry in enumerate(groups):
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
            name, members = entry
        else:
            name, members = f"group{i}", entry
        if isinstance(members, nn.Parameter):
            members = [members]
        elif isinstance(members, (str, bytes, Tensor)) or not isinstance(members, Iterable):
            raise TypeError(
                f"groups[{i}] must be an iterable of nn.Parameter, got {type(members).__name__}"
            )
        params = list(members)
        if not params:
            raise ValueError(f"groups[{i}] ({name!r}) is empty; every group needs a parameter")
        for j, param in enumerate(params):
            if not isinstance(param, nn.Parameter):
                raise TypeError(
                    f"groups[{i}][{j}] must be an nn.Parameter, got {type(param).__name__}"
                )
            if id(param) not in in_model:
                raise ValueError(f"groups[{i}][{j}] ({name!r}) is not a parameter of the model")
            if id(param) in owner:
                raise ValueError(
                    f"groups[{i}][{j}] ({name!r}) is already in groups[{owner[id(param)]}]; "
                    "a parameter belongs to at most one group"
                )
            owner[id(param)] = i
        resolved.append((name, params))
    return resolved


def _resolve_groups(
    model: nn.Module, groups: Sequence[GroupSpec] | None
) -> list[tuple[str, list[nn.Parameter]]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    resolved = _default_groups(model) if groups is None else _user_groups(model, groups)
    if len(resolved) < 2:
        where = (
            "trainable transformer blocks found (parameter names with a "
            f"'<{'|'.join(sorted(_BLOCK_CONTAINERS))}>.<int>.' segment)"
            if groups is None
            else "groups given"
        )
        raise ValueError(
            f"progressive freezing needs at least 2 groups (the last one is never frozen), got "
            f"{len(resolved)} {where}; pass groups=[...] front to back"
        )
    return resolved


def freeze_param_groups(
    model: nn.Module, groups: Sequence[GroupSpec] | None = None, **optimizer_group_kwargs: Any
) -> list[dict[str, Any]]:
    """Optimizer param groups for ``ProgressiveFreezingScheduler(..., mode="lr_zero")``.

    One param group per freezing group, front to back, tagged with its index under
    `FREEZE_GROUP_KEY` and its name under `FREEZE_NAME_KEY`, followed by one untagged group holding
    the model's other trainable parameters (a head, embeddings) when there are any. Every group gets
    the same ``optimizer_group_kwargs`` (``lr``, ``weight_decay``, ...); edit the returned dicts for
    per-group settings, keeping the tags.

    Args:
        model: The model the scheduler will watch.
        groups: The same ``groups`` as given to the scheduler (None: one group per transformer
            block, see `ProgressiveFreezingScheduler`).
        **optimizer_group_kwargs: Options copied into every param group.

    Returns:
        A list to pass to the optimizer, e.g. ``torch.optim.AdamW(freeze_param_groups(model,
        lr=1e-3, weight_decay=0.01))``.

    Raises:
        ValueError: Fewer than 2 groups, invalid ``groups``, or ``params``/a tag key given in
            ``optimizer_group_kwargs``.
    """
    for key in ("params", FREEZE_GROUP_KEY, FREEZE_NAME_KEY):
        if key in optimizer_group_kwargs:
            raise ValueError(f"optimizer_group_kwargs must not contain {key!r}; it is set here")
    resolved = _resolve_groups(model, groups)
    grouped = {id(p) for _, params in resolved for p in params}
    out: list[dict[str, Any]] = [
        {
            "params": list(params),
            FREEZE_GROUP_KEY: i,
            FREEZE_NAME_KEY: name,
            **optimizer_group_kwargs,
        }
        for i, (name, params) in enumerate(resolved)
    ]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    if rest:
        out.append({"params": rest, **optimizer_group_kwargs})
    return out


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: object, *, positive: bool, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} ({value!r})")
    number = float(value)
    bad = math.isnan(number) or (number <= 0 if positive else number < 0)
    if bad or (math.isinf(number) and not allow_inf):
        expected = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{name} must be {'' if allow_inf else 'finite and '}{expected}, got {value!r}"
        )
    return number


def _group_norm(grads: list[Tensor], device: torch.device) -> Tensor:
    """2-norm of the concatenated gradients, float32 on ``device``, without a host sync."""
    low = [g for g in grads if g.dtype in (torch.float16, torch.bfloat16)]
    full = [g for g in grads if g.dtype not in (torch.float16, torch.bfloat16)]
    parts = [torch.linalg.vector_norm(g, dtype=torch.float32).to(device) for g in low]
    if full:
        parts.append(torch.nn.utils.get_total_norm(full).float().to(device))
    total: Tensor = torch.linalg.vector_norm(torch.stack(parts))
    return total


class ProgressiveFreezingScheduler:
    """Freezes a growing front prefix of parameter groups whose gradient norm has converged.

    See the module docstring for the signal, the rules, the two modes and the DDP behaviour.

    Default groups are the model's trainable (``requires_grad``) parameters grouped per transformer
    block, front to back: the block of a parameter is the first ``<container>.<int>.`` segment of
    its name with container ``layer``, ``layers``, ``h``, ``blocks`` or ``block`` (so
    ``bert.encoder.layer.3.…`` is in group ``bert.encoder.layer.3``). Parameters without such a
    segment (embeddings, a classification head) belong to no group and are never frozen.

    Args:
        model: The model (a DDP or compiled wrapper works: the block segment is found anywhere in
            the name).
        threshold: ``criterion="absolute"`` only: freeze when the mean of the last
            ``window_size`` smoothed gradient norms is below this (> 0).
        window_size: Steps compared by the criterion, and the minimum number of steps between two
            freezes (>= 1).
        unfreeze_threshold: Relative loss increase over the best smoothed loss that counts as a
            spike and unfreezes the most recent group (>= 0; ``math.inf`` never unfreezes).
        min_steps: No group freezes before this many calls of `step` (>= 0).
        criterion: ``"relative"`` (default, scale-free) or ``"absolute"`` (original intent).
        rel_threshold: ``criterion="relative"`` only: freeze when
            ``|n_t − n_{t−window_size}| / n_{t−window_size}`` is below this (> 0).
        ema: Smoothing factor of the gradient norms and of the loss, ``s ← ema·s + (1 − ema)·x``,
            in [0, 1) (0: no smoothing).
        cooldown: Steps without any decision after an unfreeze (>= 0; None: ``window_size``).
        groups: Parameter groups front to back, each a list of parameters or a
            ``(name, parameters)`` pair, instead of the default per-block groups. In
            ``mode="requires_grad"`` every parameter must be trainable.
        mode: ``"requires_grad"`` or ``"lr_zero"``.
        optimizer: ``mode="lr_zero"`` only (required there): an optimizer built from
            ``freeze_param_groups(model, groups)``.
        process_group: Group over which the loss and gradient norms are averaged (None: WORLD
            when torch.distributed is initialised at the time of `step`, else no collective).

    Raises:
        ValueError: An argument out of range (the message names it and its value), fewer than 2
            groups, invalid ``groups``, ``optimizer`` missing for ``"lr_zero"`` (or given for
            ``"requires_grad"``), or an optimizer whose tagged groups do not match ``groups``.
        TypeError: An argument of the wrong type.
    """

    def __init__(
        self,
        model: nn.Module,
        threshold: float = 1e-5,
        window_size: int = 10,
        unfreeze_threshold: float = 0.1,
        min_steps: int = 100,
        *,
        criterion: FreezeCriterion = "relative",
        rel_threshold: float = 0.05,
        ema: float = 0.9,
        cooldown: int | None = None,
        groups: Sequence[GroupSpec] | None = None,
        mode: FreezeMode = "requires_grad",
        optimizer: torch.optim.Optimizer | None = None,
        process_group: ProcessGroup | None = None,
    ) -> None:
        self.threshold = _check_float("threshold", threshold, positive=True)
        self.window_size = _check_int("window_size", window_size, 1)
        self.unfreeze_threshold = _check_float(
            "unfreeze_threshold", unfreeze_threshold, positive=False, allow_inf=True
        )
        self.min_steps = _check_int("min_steps", min_steps, 0)
        if criterion not in ("relative", "absolute"):
            raise ValueError(f"criterion must be 'relative' or 'absolute', got {criterion!r}")
        self.criterion: FreezeCriterion = criterion
        self.rel_threshold = _check_float("rel_threshold", rel_threshold, positive=True)
        if isinstance(ema, bool) or not isinstance(ema, (int, float)):
            raise TypeError(f"ema must be a float, got {type(ema).__name__} ({ema!r})")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema!r}")
        self.ema = float(ema)
        self.cooldown = (
            self.window_size if cooldown is None else _check_int("cooldown", cooldown, 0)
        )
        if mode not in ("requires_grad", "lr_zero"):
            raise ValueError(f"mode must be 'requires_grad' or 'lr_zero', got {mode!r}")
        self.mode: FreezeMode = mode
        resolved = _resolve_groups(model, groups)
        if mode == "requires_grad":
            if optimizer is not None:
                raise ValueError(
                    "optimizer is only used with mode='lr_zero'; in mode='requires_grad' the "
                    "optimizer skips frozen parameters because their .grad is None"
                )
            for i, (name, params) in enumerate(resolved):
                if any(not p.requires_grad for p in params):
                    raise ValueError(
                        f"groups[{i}] ({name!r}) holds a parameter with requires_grad=False; in "
                        "mode='requires_grad' groups must hold trainable parameters only"
                    )
        self._names = [name for name, _ in resolved]
        self._params = [params for _, params in resolved]
        self._opt_groups: list[dict[str, Any]] = []
        if mode == "lr_zero":
            self._opt_groups = self._match_optimizer(optimizer)
        self._process_group = process_group

        self._num_steps = 0
        self._depth = 0
        self._events: list[FreezeEvent] = []
        self._loss_ema: float | None = None
        self._best_loss: float | None = None
        self._last_freeze: int | None = None
        self._last_unfreeze: int | None = None
        self._norm_ema: list[float | None] = [None] * len(self._params)
        self._history: list[deque[float]] = [self._new_history() for _ in self._params]
        self._saved_lr: list[float | None] = [None] * len(self._params)

    # -- construction helpers ------------------------------------------------------------------

    def _new_history(self) -> deque[float]:
        return deque(maxlen=self.window_size + 1)

    def _match_optimizer(self, optimizer: torch.optim.Optimizer | None) -> list[dict[str, Any]]:
        if optimizer is None:
            raise ValueError(
                "mode='lr_zero' needs optimizer=, built from athena.freeze_param_groups(model)"
            )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        found: dict[int, dict[str, Any]] = {}
        for group in optimizer.param_groups:
            index = group.get(FREEZE_GROUP_KEY)
            if index is None:
                continue
            if not isinstance(index, int) or not 0 <= index < len(self._params) or index in found:
                raise ValueError(
                    f"optimizer has a param group tagged {FREEZE_GROUP_KEY}={index!r}; expected "
                    f"each of 0..{len(self._params) - 1} once (use athena.freeze_param_groups)"
                )
            found[index] = group
        for i, params in enumerate(self._params):
            if i not in found:
                raise ValueError(
                    f"optimizer has no param group tagged {FREEZE_GROUP_KEY}={i} "
                    f"({self._names[i]!r}); build it from athena.freeze_param_groups(model, groups)"
                )
            if {id(p) for p in found[i]["params"]} != {id(p) for p in params}:
                raise ValueError(
                    f"optimizer param group {FREEZE_GROUP_KEY}={i} holds other parameters than "
                    f"freezing group {i} ({self._names[i]!r}); pass the same groups to "
                    "freeze_param_groups and to the scheduler"
                )
        return [found[i] for i in range(len(self._params))]

    # -- public read-only state -----------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """Number of `step` calls so far."""
        return self._num_steps

    @property
    def frozen_prefix_depth(self) -> int:
        """Number of frozen front groups (groups ``0 .. depth − 1`` are frozen)."""
        return self._depth

    @property
    def num_groups(self) -> int:
        """Number of freezing groups."""
        return len(self._params)

    @property
    def group_names(self) -> list[str]:
        """Names of the groups, front to back."""
        return list(self._names)

    @property
    def events(self) -> list[FreezeEvent]:
        """All freeze and unfreeze events so far, oldest first (a copy)."""
        return list(self._events)

    @property
    def loss_ema(self) -> float | None:
        """Smoothed (rank-averaged) loss, None before the first finite loss."""
        return self._loss_ema

    # -- the step -------------------------------------------------------------------------------

    def step(self, loss: Tensor | float) -> FreezeEvent | None:
        """Update the statistics with this step's loss and gradients; maybe freeze or unfreeze.

        Call after ``loss.backward()`` and before ``optimizer.zero_grad()`` (and before
        ``optimizer.step()`` so a freeze applies to this step's update). On every rank of the
        process group, with the same number of calls. One host synchronisation per call.

        Args:
            loss: This step's (local) training loss, a one-element tensor or a number.

        Returns:
            The event taken at this step, or None.

        Raises:
            TypeError: ``loss`` is not a tensor or a real number.
            ValueError: ``loss`` has more than one element.
        """
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must have one element, got shape {tuple(loss.shape)}")
        elif isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise TypeError(f"loss must be a Tensor or a float, got {type(loss).__name__}")
        values = self._gather(loss)
        self._num_steps += 1
        if self.mode == "lr_zero":
            self._hold_zero_lr()
        loss_value, norms = values[0], values[1:]
        if not math.isfinite(loss_value):
            return None
        self._update_norms(norms)
        loss_ema = self._update_loss(loss_value)
        assert self._best_loss is not None
        if self._last_unfreeze is not None and (
            self._num_steps - self._last_unfreeze <= self.cooldown
        ):
            return None
        spiking = not math.isinf(self.unfreeze_threshold) and loss_ema > (
            self._best_loss + self.unfreeze_threshold * abs(self._best_loss)
        )
        if spiking:
            if self._depth == 0:  # nothing to thaw: take the new level as the reference
                self._best_loss = loss_ema
                return None
            group = self._depth - 1
            self._unfreeze(group)
            self._depth -= 1
            self._best_loss = loss_ema
            self._last_unfreeze = self._num_steps
            return self._record("unfreeze", group, loss_value, loss_ema)
        if self._may_freeze():
            group = self._depth
            self._freeze(group)
            self._depth += 1
            self._last_freeze = self._num_steps
            return self._record("freeze", group, loss_value, loss_ema)
        return None

    def _gather(self, loss: Tensor | float) -> list[float]:
        """[loss, norm_0, …, norm_{G−1}] averaged over the process group (NaN: no gradient)."""
        with torch.no_grad():
            grads = [[p.grad for p in params if p.grad is not None] for params in self._params]
            if isinstance(loss, Tensor):
                device = loss.device
            else:
                device = next((g[0].device for g in grads if g), torch.device("cpu"))
            loss_t = (
                loss.detach().reshape(()).float().to(device)
                if isinstance(loss, Tensor)
                else torch.tensor(float(loss), dtype=torch.float32, device=device)
            )
            entries = [loss_t]
            for group_grads in grads:
                if group_grads:
                    entries.append(_group_norm(group_grads, device))
                else:
                    entries.append(torch.full((), math.nan, dtype=torch.float32, device=device))
            vector = torch.stack(entries)
            group = self._resolve_process_group()
            if group is not None:
                dist = torch.distributed
                world = dist.get_world_size(group)
                if world > 1:
                    if dist.get_backend(group) == "gloo":
                        vector = vector.cpu()
                    dist.all_reduce(vector, op=dist.ReduceOp.SUM, group=group)
                    vector = vector / world
            values: list[float] = vector.tolist()
        return values

    def _resolve_process_group(self) -> ProcessGroup | None:
        if self._process_group is not None:
            return self._process_group
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.group.WORLD
        return None

    def _update_norms(self, norms: list[float]) -> None:
        for i, norm in enumerate(norms):
            if not math.isfinite(norm):
                continue
            previous = self._norm_ema[i]
            smoothed = norm if previous is None else self.ema * previous + (1 - self.ema) * norm
            self._norm_ema[i] = smoothed
            self._history[i].append(smoothed)

    def _update_loss(self, loss_value: float) -> float:
        previous = self._loss_ema
        smoothed = (
            loss_value if previous is None else self.ema * previous + (1 - self.ema) * loss_value
        )
        self._loss_ema = smoothed
        self._best_loss = smoothed if self._best_loss is None else min(self._best_loss, smoothed)
        return smoothed

    def _may_freeze(self) -> bool:
        if self._num_steps < self.min_steps or self._depth >= len(self._params) - 1:
            return False
        if self._last_freeze is not None and (
            self._num_steps - self._last_freeze < self.window_size
        ):
            return False
        return self._converged(self._history[self._depth])

    def _converged(self, history: deque[float]) -> bool:
        w = self.window_size
        if self.criterion == "absolute":
            if len(history) < w:
                return False
            recent = list(history)[-w:]
            return sum(recent) / w < self.threshold
        if len(history) < w + 1:
            return False
        first, last = history[0], history[-1]
        change = abs(last - first)
        return change == 0.0 or change < self.rel_threshold * first

    def _record(
        self, kind: Literal["freeze", "unfreeze"], group: int, loss: float, loss_ema: float
    ) -> FreezeEvent:
        event = FreezeEvent(
            step=self._num_steps,
            kind=kind,
            group=group,
            name=self._names[group],
            frozen_prefix_depth=self._depth,
            loss=loss,
            loss_ema=loss_ema,
        )
        self._events.append(event)
        return event

    # -- applying the frozen state to parameters / the optimizer --------------------------------

    def _freeze(self, group: int, saved_lr: float | None = None) -> None:
        if self.mode == "requires_grad":
            for param in self._params[group]:
                param.requires_grad_(False)
                param.grad = None
            return
        opt_group = self._opt_groups[group]
        lr = opt_group["lr"]
        if saved_lr is None:
            saved_lr = float(lr)
        self._saved_lr[group] = saved_lr
        if isinstance(lr, Tensor):
            lr.fill_(0.0)
        else:
            opt_group["lr"] = 0.0

    def _unfreeze(self, group: int, *, reset_signal: bool = True) -> None:
        if self.mode == "requires_grad":
            for param in self._params[group]:
                param.requires_grad_(True)
        else:
            opt_group = self._opt_groups[group]
            saved = self._saved_lr[group]
            if saved is not None:
                lr = opt_group["lr"]
                if isinstance(lr, Tensor):
                    lr.fill_(saved)
                else:
                    opt_group["lr"] = saved
            self._saved_lr[group] = None
        if reset_signal:  # its statistics are stale (or, with requires_grad, missing)
            self._norm_ema[group] = None
            self._history[group] = self._new_history()

    def _hold_zero_lr(self) -> None:
        """Keep frozen groups at lr 0 after an lr scheduler rewrote it, remembering its value."""
        for group in range(self._depth):
            opt_group = self._opt_groups[group]
            lr = opt_group["lr"]
            if isinstance(lr, Tensor):
                lr.fill_(0.0)
            elif lr != 0:
                self._saved_lr[group] = float(lr)
                opt_group["lr"] = 0.0

    # -- checkpointing --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as plain Python values (``torch.save(..., weights_only=True)``
        and ``torch.load(..., weights_only=True)`` round-trip it)."""
        return {
            "num_steps": self._num_steps,
            "frozen_prefix_depth": self._depth,
            "events": [dataclasses.asdict(e) for e in self._events],
            "loss_ema": self._loss_ema,
            "best_loss": self._best_loss,
            "last_freeze_step": self._last_freeze,
            "last_unfreeze_step": self._last_unfreeze,
            "norm_ema": list(self._norm_ema),
            "history": [list(h) for h in self._history],
            "saved_lr": list(self._saved_lr),
            "group_names": list(self._names),
            "mode": self.mode,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a `state_dict` and re-apply its frozen prefix to the parameters (or lrs).

        Groups ``0 .. depth − 1`` of the state are frozen (``requires_grad=False`` / lr 0, the
        original lr taken from the state), the others are made trainable again (their
        ``requires_grad`` set, or the lr this scheduler had saved restored).

        Args:
            state_dict: A dict from `state_dict` of a scheduler with the same groups and mode.

        Raises:
            ValueError: Missing keys, a different number of groups, or a different mode.
        """
        missing = sorted(_STATE_KEYS - set(state_dict))
        if missing:
            raise ValueError(f"state_dict is missing keys {missing}")
        names = list(state_dict["group_names"])
        if len(names) != len(self._params):
            raise ValueError(
                f"state_dict has {len(names)} groups, this scheduler has {len(self._params)}"
            )
        if state_dict["mode"] != self.mode:
            raise ValueError(
                f"state_dict was saved with mode={state_dict['mode']!r}, this scheduler has "
                f"mode={self.mode!r}"
            )
        depth = int(state_dict["frozen_prefix_depth"])
        if not 0 <= depth < len(self._params):
            raise ValueError(
                f"state_dict frozen_prefix_depth must be in [0, {len(self._params) - 1}], got "
                f"{depth}"
            )
        norm_ema, history, saved_lr = (
            list(state_dict[k]) for k in ("norm_ema", "history", "saved_lr")
        )
        if not len(norm_ema) == len(history) == len(saved_lr) == len(self._params):
            raise ValueError("state_dict per-group lists must have one entry per group")
        events = [FreezeEvent(**e) for e in state_dict["events"]]

        for group in range(self._depth - 1, -1, -1):  # thaw what this scheduler froze
            self._unfreeze(group, reset_signal=False)
        self._num_steps = int(state_dict["num_steps"])
        self._depth = depth
        self._events = events
        self._loss_ema = state_dict["loss_ema"]
        self._best_loss = state_dict["best_loss"]
        self._last_freeze = state_dict["last_freeze_step"]
        self._last_unfreeze = state_dict["last_unfreeze_step"]
        self._norm_ema = [None if v is None else float(v) for v in norm_ema]
        self._history = [self._new_history() for _ in self._params]
        for h, values in zip(self._history, history, strict=True):
            h.extend(float(v) for v in values)
        self._saved_lr = [None] * len(self._params)
        for group in range(len(self._params)):
            if group < depth:
                saved = saved_lr[group]
                self._freeze(group, None if saved is None else float(saved))
            elif self.mode == "requires_grad":
                for param in self._params[group]:
                    param.requires_grad_(True)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(groups={len(self._params)}, criterion={self.criterion!r}, "
            f"mode={self.mode!r}, window_size={self.window_size}, min_steps={self.min_steps}, "
            f"num_steps={self._num_steps}, frozen_prefix_depth={self._depth})"
        )
