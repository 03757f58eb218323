"""AutoRank: a budgeted search for per-module LoRA ranks by Gaussian-process expected improvement.

The search space has one **ordinal** variable per group of target modules, an integer index into
the sorted `rank_candidates` (optuna's `IntDistribution`, so the Gaussian process sees that rank 8
lies between 4 and 16), and the sampler is optuna's `GPSampler`: a Matérn-5/2 GP with
log expected improvement, times the GP-modelled probability of feasibility once constraints are
seen (GP-EI as in "Practical Bayesian Optimization of Machine Learning Algorithms", Snoek et al.,
2012). Groups (`grouping`):

* `"layer"`: one variable per transformer block (`athena.matching.layer_index`); modules outside
  any block share one more variable;
* `"module_type"`: one per module type, the part of the name after the block index
  (`attention.self.query`, `intermediate.dense`, ...; the whole name outside blocks);
* `"module"`: one per target module (any grouping warns above 12 variables: GP-EI needs many
  trials there);
* `"profile"`: at most three variables, `base` (a candidate index), `slope` and `ratio` (signed
  index offsets), mapped to every module's rank by

      idx_m = clamp(⌊base + slope·(t_m − ½) + ratio·a_m/2 + ½⌋, 0, K − 1),   r_m = candidates[idx_m]

  with t_m ∈ [0, 1] the module's relative depth (first block 0, last block 1, ½ outside blocks),
  a_m = +1 for attention and −1 for MLP modules (a module is "attention" when a name component
  contains `attn`/`attention` or is a q/k/v/o projection name), K the number of candidates. So
  `slope` is the index difference between the last and the first block and `ratio` the index
  difference between attention and MLP modules at equal depth. `slope` is left out when all
  modules sit at one depth, `ratio` when all are of one kind; `slope`, `ratio` ∈ [−(K−1), K−1].

Budget: Σ_m r_m ≤ `rank_budget` (the original AutoRank's meaning) and, when given,
Σ_m r_m·(d_in + d_out) ≤ `param_budget` (LoRA's trainable parameter count). Both are recorded on
every trial with `optuna.trial.Trial.set_constraint` as relative excesses (≤ 0 feasible), which
is where `GPSampler` reads constraints in optuna 5 (its `constraints_func` argument is deprecated
there and stores the same `constraints` system attributes). A suggestion that breaks the budget is
never handed to the objective: it is told, together with its constraints, the value of the nearest
evaluated configuration (see `AutoRank` for why not the worst observed value), so the constraint GP
learns where the budget ends while the objective GP sees no made-up cliff.
The first two trials are enqueued: the uniform configuration with the largest candidate that fits
(the fair LoRA baseline) and the all-minimum configuration.

The objective is a user callable `objective(rank_map, trial) -> float` or a `ProxyFineTune`: fresh
adapters on a deep copy of the model as it was when `AutoRank` was built, a few seeded AdamW steps
on a fixed data order, then the validation loss or accuracy.

Example:
    >>> search = AutoRank(model, rank_budget=96, objective=ProxyFineTune(train, val, steps=50))
    >>> result = search.search()
    >>> config = search.apply(result)  # a PolyAdapterConfig with rank_pattern and exclusions

optuna is imported only when an `AutoRank` is built (`pip install athena[autorank]`).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from .config import PolyAdapterConfig, Targets
from .matching import inspect_targets, layer_index

if TYPE_CHECKING:
    import optuna
    from optuna.trial import TrialState

__all__ = ["AutoRank", "AutoRankResult", "ProxyFineTune"]

Grouping = Literal["layer", "module_type", "module", "profile"]
Metric = Literal["loss", "accuracy"]
Mode = Literal["min", "max"]
Objective = Callable[[dict[str, int], "optuna.trial.Trial"], float]
Batch = Mapping[str, Any]

_GROUPINGS = ("layer", "module_type", "module", "profile")
_MAX_GP_DIMS = 12
#: infeasible suggestions allowed per requested trial before the search gives up
_INFEASIBLE_PER_TRIAL = 10
_ATTENTION_NAMES = frozenset(
    {
        "query",
        "key",
        "value",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "qkv",
        "qkv_proj",
        "query_key_value",
        "query_proj",
        "key_proj",
        "value_proj",
    }
)
_INSTALL_HINT = "AutoRank needs optuna: pip install athena[autorank]"


def _require_optuna() -> None:
    """Raise `ImportError` naming the extra when optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc


def _is_attention(name: str) -> bool:
    """Whether module `name` belongs to an attention block (see the module docstring)."""
    for part in name.lower().split("."):
        if "attn" in part or "attention" in part or part in _ATTENTION_NAMES:
            return True
    return False


def _module_type(name: str) -> str:
    """The part of `name` after its last numeric component (the block index), else `name`."""
    return re.sub(r"^(?:.*\.)?\d+\.", "", name)


def _add_excludes(existing: Targets, names: Sequence[str]) -> Targets:
    """`exclude_modules` extended by the exact module `names` (a regex stays a regex)."""
    if not names:
        return existing
    if existing is None:
        return tuple(names)
    if isinstance(existing, str):
        return "|".join([f"(?:{existing})", *(re.escape(n) for n in names)])
    return tuple(existing) + tuple(n for n in names if n not in existing)


def _merge_pattern(
    ours: Mapping[str, int], old: Mapping[str, int], modules: Iterable[str]
) -> dict[str, int]:
    """`ours` first, then the `old` keys that match none of the searched `modules`."""
    searched = list(modules)
    kept = {
        key: value
        for key, value in old.items()
        if key not in ours and not any(re.match(rf"(.*\.)?({key})$", m) for m in searched)
    }
    return {**ours, **kept}


@dataclass(frozen=True)
class AutoRankResult:
    """The outcome of `AutoRank.search`.

    Attributes:
        rank_map: every searched module → its rank in the best feasible trial (0 = not adapted).
        rank_pattern: PEFT's `rank_pattern` for that trial: module name → rank, rank-0 modules
            omitted (they belong in `exclude_modules`; `AutoRank.apply` puts them there).
        best_value: the objective value of the best feasible trial.
        trials: one dict per study trial, in order, with keys `number`, `params` (the variable
            indices), `ranks` (module → rank), `value` (None for infeasible trials, which were never
            evaluated; NaN when the objective failed), `feasible`, `state` (`"complete"`,
            `"pruned"`, `"fail"` or `"infeasible"`), `cached` (a repeat of an earlier feasible
            configuration, answered without calling the objective), `budget_used` and
            `compute_steps`.
        compute_steps: training steps spent over all trials (from each trial's `compute_steps`
            user attribute; `ProxyFineTune` sets it, a user objective may).
        budget_used: `{"ranks": Σ r_m, "params": Σ r_m·(d_in + d_out)}` of the best trial.
    """

    rank_map: dict[str, int]
    rank_pattern: dict[str, int]
    best_value: float
    trials: list[dict[str, Any]]
    compute_steps: int
    budget_used: dict[str, int]


@dataclass(frozen=True)
class _Variable:
    """One ordinal search variable."""

    name: str
    low: int
    high: int
    modules: tuple[str, ...]


class ProxyFineTune:
    """A short, seeded fine-tune as the AutoRank objective.

    For each trial: deep-copy the pristine model, add fresh adapters with the trial's ranks
    (`get_athena_model(copy, config.replace(rank_pattern=..., exclude_modules=<rank-0 modules>))`),
    train `steps` AdamW steps on the adapter (and `modules_to_save`) parameters, and return the
    validation metric. Every trial draws from the same random state (`torch.manual_seed(seed)`
    inside `torch.random.fork_rng`, so the caller's generators are untouched): the same adapter
    initialisation, dropout masks and data order (a shuffling `DataLoader` draws its order from the
    global generator when iterated; a loader with its own `generator` has it re-seeded with `seed`
    for the trial and restored afterwards), so trials differ only in their ranks. The train loader
    is restarted when it runs out before `steps`.

    A configuration with every rank 0 trains no adapter: the model's `modules_to_save` (and, for
    `task_type="SEQ_CLS"`, a `classifier`/`score` head) are trained alone, or, when there are none,
    the frozen model is only evaluated.

    Args:
        train_loader: iterable of batches, dicts of model keyword arguments with `labels`, so
            the model's forward returns `.loss` (a Hugging Face model, or any module that does).
        val_loader: batches for the metric: `"loss"` is the batch-size-weighted mean of the
            batch losses; `"accuracy"` compares `logits.argmax(-1)` with `labels` (positions with
            label −100 ignored), for classification logits (B, C) or token logits (B, T, C).
        steps: AdamW steps per trial.
        lr: AdamW learning rate.
        seed: the seed every trial starts from.
        weight_decay: AdamW weight decay.
        prune: report the validation metric every `eval_every` steps (`trial.report`) and stop
            trials that optuna's `SuccessiveHalvingPruner` marks (`AutoRank` installs it).
        eval_every: steps between intermediate evaluations when pruning (default `steps // 4`).
        build_model: `(model, config) -> nn.Module` that adds the adapters; default
            `athena.model.get_athena_model`.

    Raises:
        ValueError: `steps`, `lr`, `eval_every` not positive, or `weight_decay` negative.
    """

    def __init__(
        self,
        train_loader: Iterable[Batch],
        val_loader: Iterable[Batch],
        steps: int = 50,
        lr: float = 1e-3,
        seed: int = 0,
        *,
        weight_decay: float = 0.0,
        prune: bool = False,
        eval_every: int | None = None,
        build_model: Callable[[nn.Module, PolyAdapterConfig], nn.Module] | None = None,
    ) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
            raise ValueError(f"eval_every must be a positive int or None, got {eval_every!r}")
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.steps = steps
        self.lr = lr
        self.seed = seed
        self.weight_decay = weight_decay
        self.prune = prune
        self.eval_every = eval_every if eval_every is not None else max(1, steps // 4)
        self.build_model = build_model

    def evaluate(
        self,
        model: nn.Module,
        config: PolyAdapterConfig,
        rank_map: Mapping[str, int],
        *,
        metric: Metric = "loss",
        trial: optuna.trial.Trial | None = None,
    ) -> float:
        """Fine-tune a deep copy of `model` with the ranks of `rank_map` and return the metric.

        Args:
            model: the pristine base model (left unchanged: a deep copy is trained).
            config: the base adapter config; `rank_pattern` and `exclude_modules` are set from
                `rank_map`.
            rank_map: module name → rank (0 = not adapted).
            metric: `"loss"` or `"accuracy"`.
            trial: the optuna trial, for pruning and the `compute_steps` user attribute.

        Returns:
            The validation metric (NaN when training diverged).

        Raises:
            optuna.TrialPruned: the pruner stopped the trial.
            ValueError: the train loader is empty or the model returns no loss.
        """
        devices = self._cuda_devices(model)
        generator = getattr(self.train_loader, "generator", None)
        saved = generator.get_state() if isinstance(generator, torch.Generator) else None
        steps_done = 0
        try:
            if isinstance(generator, torch.Generator):
                generator.manual_seed(self.seed)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                net = self._build(copy.deepcopy(model), config, rank_map)
                trainable = [p for p in net.parameters() if p.requires_grad]
                device = next(iter(net.parameters())).device
                if trainable:
                    optimizer = torch.optim.AdamW(
                        trainable, lr=self.lr, weight_decay=self.weight_decay
                    )
                    net.train()
                    for batch in self._batches(device):
                        loss = _output(net(**batch), "loss")
                        if not isinstance(loss, Tensor):
                            raise ValueError(
                                "the model returned no loss: ProxyFineTune batches need `labels`"
                            )
                        aux = getattr(net, "athena_aux_loss", None)
                        if callable(aux):
                            loss = loss + aux()
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        steps_done += 1
                        if (
                            self.prune
                            and trial is not None
                            and steps_done < self.steps
                            and steps_done % self.eval_every == 0
                        ):
                            self._report(net, device, metric, trial, steps_done)
                return _validate(net, self.val_loader, metric, device)
        finally:
            if isinstance(generator, torch.Generator) and saved is not None:
                generator.set_state(saved)
            if trial is not None:
                trial.set_user_attr("compute_steps", steps_done)

    def _report(
        self,
        net: nn.Module,
        device: torch.device,
        metric: Metric,
        trial: optuna.trial.Trial,
        step: int,
    ) -> None:
        """Report an intermediate value and raise `TrialPruned` when the pruner says so."""
        import optuna

        value = _validate(net, self.val_loader, metric, device)
        net.train()
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    @staticmethod
    def _cuda_devices(model: nn.Module) -> list[int]:
        """CUDA device indices holding `model`'s parameters (for `fork_rng`)."""
        return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})

    def _build(
        self, model: nn.Module, config: PolyAdapterConfig, rank_map: Mapping[str, int]
    ) -> nn.Module:
        """Adapters for the nonzero ranks; with none, train only the heads (if any)."""
        nonzero = {name: rank for name, rank in rank_map.items() if rank > 0}
        if nonzero:
            zeros = [name for name, rank in rank_map.items() if rank == 0]
            trial_config = config.replace(
                rank_pattern=_merge_pattern(nonzero, config.rank_pattern, rank_map),
                exclude_modules=_add_excludes(config.exclude_modules, zeros),
            )
            build = self.build_model
            if build is None:
                from .model import get_athena_model

                build = get_athena_model
            return build(model, trial_config)
        heads = list(config.modules_to_save or ())
        if config.task_type == "SEQ_CLS":
            heads += ["classifier", "score"]
        for param in model.parameters():
            param.requires_grad_(False)
        for name, module in model.named_modules():
            if any(name == h or name.endswith("." + h) for h in heads):
                for param in module.parameters():
                    param.requires_grad_(True)
        return model

    def _batches(self, device: torch.device) -> Iterator[dict[str, Any]]:
        """`steps` training batches on `device`, restarting the loader when it runs out."""
        done = 0
        while done < self.steps:
            empty = True
            for batch in self.train_loader:
                empty = False
                yield _to_device(batch, device)
                done += 1
                if done == self.steps:
                    return
            if empty:
                raise ValueError("train_loader yielded no batches")


def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    """A copy of `batch` with its tensors on `device`."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"batches must be dicts of model keyword arguments, got {type(batch).__name__}"
        )
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _output(out: Any, name: str) -> Any:
    """Field `name` of a model output (a `ModelOutput`, a dict or an object), or None."""
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


@torch.no_grad()
def _validate(
    net: nn.Module, loader: Iterable[Batch], metric: Metric, device: torch.device
) -> float:
    """Batch-size-weighted mean loss, or accuracy over labelled positions, on `loader`."""
    net.eval()
    total = 0.0
    count = 0
    for raw in loader:
        batch = _to_device(raw, device)
        out = net(**batch)
        labels = batch.get("labels")
        if metric == "loss":
            loss = _output(out, "loss")
            if not isinstance(loss, Tensor):
                raise ValueError("the model returned no loss: validation batches need `labels`")
            n = int(labels.shape[0]) if isinstance(labels, Tensor) and labels.dim() > 0 else 1
            total += float(loss) * n
            count += n
        else:
            logits = _output(out, "logits")
            if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
                raise ValueError("metric='accuracy' needs `logits` outputs and `labels` batches")
            mask = labels != -100
            total += float((logits.argmax(-1)[mask] == labels[mask]).sum())
            count += int(mask.sum())
    if count == 0:
        raise ValueError("val_loader yielded no (labelled) examples")
    return total / count


class AutoRank:
    """Search per-module LoRA ranks under a rank (and parameter) budget with GP-EI.

    Args:
        model: the model to adapt (not modified; `ProxyFineTune` trains deep copies of the state it
            has now).
        rank_budget: Σ_m r_m over the target modules may not exceed this.
        rank_candidates: ranks a module may take; 0 means "not adapted" (the module goes to
            `exclude_modules`). Sorted internally.
        num_trials: feasible trials at most (trials the objective sees, plus repeats of an earlier
            configuration, answered from a cache); infeasible suggestions cost no training and do
            not count, but the search stops after `10·num_trials` of them.
        patience: stop after this many consecutive feasible trials without a strict improvement
            of the best value, counted from the first trial the GP suggests (after
            `n_startup_trials` random ones), so the startup design always completes.
        metric: what `ProxyFineTune` returns: `"loss"` or `"accuracy"` (a label for a user
            objective).
        mode: `"min"` or `"max"`: the study direction.
        objective: `objective(rank_map, trial) -> float` or a `ProxyFineTune`. It must be
            deterministic: a configuration suggested again reuses its first value.
        param_budget: optional bound on Σ_m r_m·(d_in + d_out), the LoRA parameter count.
        grouping: `"layer"`, `"module_type"`, `"module"` or `"profile"` (module docstring).
        base_config: the adapter config whose target modules are searched; default
            `PolyAdapterConfig()` with the architecture's default targets
            (`with_defaults_for(model.config.model_type)`).
        seed: seed of the sampler (the search is deterministic for a seed).
        n_startup_trials: trials (the two enqueued ones included) before the GP takes over; they
            are random (optuna's `RandomSampler` with `seed`).
        sampler: an optuna sampler replacing `GPSampler` (for comparisons, e.g. a
            `RandomSampler`); it is used as is, so build a fresh one per search.

    Infeasible suggestions are told the value of the nearest completed feasible trial (L1
    distance over the variable indices; the better value on ties) with their constraints, rather
    than the worst observed value: the objective GP then sees a smooth continuation past the
    budget, and the constraint GP alone steers the acquisition away from it. The worst value puts a
    cliff next to the budget boundary, which is where the optimum of a budgeted problem usually
    lies: on the synthetic problem of the tests (4 layer variables, optimum 4 ranks below the
    budget), GP-EI within 30 feasible trials found the optimum in 2 of 10 seeds when told the
    worst value, 8 of 10 when told the incumbent, and 10 of 10 with the nearest-neighbour value.

    Raises:
        ValueError: empty, non-integer, negative or duplicate candidates (or fewer than two);
            non-positive `num_trials`/`patience`; negative budgets or `n_startup_trials`; unknown
            `metric`, `mode` or `grouping`; an unsatisfiable budget (the all-minimum configuration
            exceeds it); no objective.
        ImportError: optuna is not installed (`pip install athena[autorank]`).
    """

    def __init__(
        self,
        model: nn.Module,
        rank_budget: int = 1024,
        rank_candidates: Sequence[int] = (0, 2, 4, 8, 16),
        num_trials: int = 30,
        patience: int = 5,
        metric: Metric = "loss",
        mode: Mode = "min",
        *,
        objective: Objective | ProxyFineTune | None = None,
        param_budget: int | None = None,
        grouping: Grouping = "layer",
        base_config: PolyAdapterConfig | None = None,
        seed: int = 0,
        n_startup_trials: int = 8,
        sampler: optuna.samplers.BaseSampler | None = None,
    ) -> None:
        candidates = self._check_candidates(rank_candidates)
        for name, value in (("num_trials", num_trials), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(rank_budget, bool) or not isinstance(rank_budget, int) or rank_budget < 0:
            raise ValueError(f"rank_budget must be an int >= 0, got {rank_budget!r}")
        if param_budget is not None and (
            isinstance(param_budget, bool) or not isinstance(param_budget, int) or param_budget < 0
        ):
            raise ValueError(f"param_budget must be None or an int >= 0, got {param_budget!r}")
        if not isinstance(n_startup_trials, int) or n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be an int >= 0, got {n_startup_trials!r}")
        if metric not in ("loss", "accuracy"):
            raise ValueError(f"metric must be 'loss' or 'accuracy', got {metric!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if grouping not in _GROUPINGS:
            raise ValueError(f"grouping must be one of {_GROUPINGS}, got {grouping!r}")
        if objective is None:
            raise ValueError(
                "objective is required: a callable objective(rank_map, trial) -> float or "
                "ProxyFineTune(train_loader, val_loader, steps, lr, seed)"
            )
        if not (isinstance(objective, ProxyFineTune) or callable(objective)):
            raise TypeError(
                f"objective must be callable or a ProxyFineTune, got {type(objective).__name__}"
            )
        _require_optuna()

        config = base_config if base_config is not None else PolyAdapterConfig()
        if config.target_modules is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            config = config.with_defaults_for(model_type)
        report = inspect_targets(model, config)

        self.rank_budget = rank_budget
        self.rank_candidates = candidates
        self.num_trials = num_trials
        self.patience = patience
        self.metric: Metric = metric
        self.mode: Mode = mode
        self.objective = objective
        self.param_budget = param_budget
        self.grouping: Grouping = grouping
        self.base_config = config
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.sampler = sampler
        self.modules: tuple[str, ...] = report.matched
        self.shapes: dict[str, tuple[int, int]] = dict(report.shapes)
        self._variables = self._build_space()
        if len(self._variables) > _MAX_GP_DIMS:
            warnings.warn(
                f"AutoRank grouping={grouping!r} gives {len(self._variables)} search variables; "
                f"GP-EI needs many trials above {_MAX_GP_DIMS}: consider grouping='layer', "
                "'module_type' or 'profile'",
                UserWarning,
                stacklevel=2,
            )
        minimum = self._decode(self._uniform_params(0))
        if not self._feasible(minimum):
            ranks, params = self._usage(minimum)
            raise ValueError(
                f"unsatisfiable budget: even the all-minimum configuration (rank "
                f"{candidates[0]} everywhere) uses {ranks} ranks > rank_budget={rank_budget}"
                + (
                    f" or {params} parameters > param_budget={param_budget}"
                    if param_budget is not None
                    else ""
                )
            )
        # the pristine state ProxyFineTune restarts from, taken now (the caller may train on)
        self._pristine = copy.deepcopy(model) if isinstance(objective, ProxyFineTune) else None

    # -- construction helpers -----------------------------------------------------------------

    @staticmethod
    def _check_candidates(rank_candidates: Sequence[int]) -> tuple[int, ...]:
        values = list(rank_candidates)
        if not values:
            raise ValueError("rank_candidates must not be empty")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"rank_candidates must be ints >= 0, got {rank_candidates!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"rank_candidates must not repeat a rank, got {rank_candidates!r}")
        if len(values) < 2:
            raise ValueError(f"rank_candidates needs at least two ranks, got {rank_candidates!r}")
        return tuple(sorted(values))

    def _build_space(self) -> list[_Variable]:
        """The search variables of `grouping` over `self.modules`."""
        top = len(self.rank_candidates) - 1
        if self.grouping == "profile":
            return self._profile_space(top)
        keys: dict[str, list[str]] = {}
        for name in self.modules:
            if self.grouping == "layer":
                index = layer_index(name, self.base_config.layers_pattern)
                key = f"layer {index}" if index is not None else "other"
            elif self.grouping == "module_type":
                key = _module_type(name)
            else:
                key = name
            keys.setdefault(key, []).append(name)
        return [_Variable(f"g{i}", 0, top, tuple(mods)) for i, mods in enumerate(keys.values())]

    def _profile_space(self, top: int) -> list[_Variable]:
        everything = self.modules
        variables = [_Variable("base", 0, top, everything)]
        depths = {self._depth_key(name) for name in everything}
        if len(depths - {None}) >= 2:
            variables.append(_Variable("slope", -top, top, everything))
        kinds = {_is_attention(name) for name in everything}
        if len(kinds) == 2:
            variables.append(_Variable("ratio", -top, top, everything))
        return variables

    def _depth_key(self, name: str) -> int | None:
        return layer_index(name, self.base_config.layers_pattern)

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Search variable name → the modules it sets (for `"profile"`, all of them)."""
        return {v.name: v.modules for v in self._variables}

    # -- decoding and budget ------------------------------------------------------------------

    def _decode(self, params: Mapping[str, int]) -> dict[str, int]:
        """Variable values → module name → rank."""
        cands = self.rank_candidates
        if self.grouping != "profile":
            ranks: dict[str, int] = {}
            for variable in self._variables:
                for name in variable.modules:
                    ranks[name] = cands[params[variable.name]]
            return {name: ranks[name] for name in self.modules}
        base = params["base"]
        slope = params.get("slope", 0)
        ratio = params.get("ratio", 0)
        indices = [i for i in (self._depth_key(n) for n in self.modules) if i is not None]
        lo, hi = (min(indices), max(indices)) if indices else (0, 0)
        out: dict[str, int] = {}
        for name in self.modules:
            index = self._depth_key(name)
            depth = 0.5 if index is None or hi == lo else (index - lo) / (hi - lo)
            kind = 1.0 if _is_attention(name) else -1.0
            raw = base + slope * (depth - 0.5) + ratio * kind / 2
            out[name] = cands[min(max(math.floor(raw + 0.5), 0), len(cands) - 1)]
        return out

    def _usage(self, rank_map: Mapping[str, int]) -> tuple[int, int]:
        """(Σ r_m, Σ r_m·(d_in + d_out)) of `rank_map`."""
        ranks = sum(rank_map.values())
        params = sum(r * sum(self.shapes[name]) for name, r in rank_map.items())
        return ranks, params

    def _constraints(self, rank_map: Mapping[str, int]) -> dict[str, float]:
        """Relative budget excesses (≤ 0 feasible), the form optuna's constraints take."""
        ranks, params = self._usage(rank_map)
        out = {"rank_budget": (ranks - self.rank_budget) / max(self.rank_budget, 1)}
        if self.param_budget is not None:
            out["param_budget"] = (params - self.param_budget) / max(self.param_budget, 1)
        return out

    def _feasible(self, rank_map: Mapping[str, int]) -> bool:
        return all(c <= 0 for c in self._constraints(rank_map).values())

    def _uniform_params(self, index: int) -> dict[str, int]:
        """Variable values giving every module `rank_candidates[index]`."""
        if self.grouping == "profile":
            return {v.name: (index if v.name == "base" else 0) for v in self._variables}
        return {v.name: index for v in self._variables}

    def _enqueued(self) -> list[dict[str, int]]:
        """The uniform configuration with the largest candidate that fits, then the all-minimum."""
        first: list[dict[str, int]] = []
        for index in range(len(self.rank_candidates) - 1, -1, -1):
            params = self._uniform_params(index)
            if self._feasible(self._decode(params)):
                first.append(params)
                break
        minimum = self._uniform_params(0)
        if minimum not in first:
            first.append(minimum)
        return first

    # -- the search ---------------------------------------------------------------------------

    def _make_objective(self) -> Objective:
        objective = self.objective
        if isinstance(objective, ProxyFineTune):
            proxy, pristine = objective, self._pristine
            assert pristine is not None
            config, metric = self.base_config, self.metric

            def run(rank_map: dict[str, int], trial: optuna.trial.Trial) -> float:
                return proxy.evaluate(pristine, config, rank_map, metric=metric, trial=trial)

            return run
        assert objective is not None
        return objective

    def _make_study(self) -> optuna.Study:
        import optuna

        sampler = self.sampler
        if sampler is None:
            sampler = optuna.samplers.GPSampler(
                seed=self.seed, n_startup_trials=self.n_startup_trials
            )
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
        if isinstance(self.objective, ProxyFineTune) and self.objective.prune:
            pruner = optuna.pruners.SuccessiveHalvingPruner()
        direction: Literal["minimize", "maximize"] = (
            "minimize" if self.mode == "min" else "maximize"
        )
        return optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)

    def search(self) -> AutoRankResult:
        """Run the search and return the best feasible configuration.

        Raises:
            RuntimeError: no feasible trial completed (every evaluation failed or was pruned).
        """
        import optuna

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return self._search()
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _search(self) -> AutoRankResult:
        from optuna.trial import TrialState

        objective = self._make_objective()
        study = self._make_study()
        for params in self._enqueued():
            study.enqueue_trial(params)
        minimize = self.mode == "min"
        better: Callable[[float, float], bool] = (
            (lambda a, b: a < b) if minimize else (lambda a, b: a > b)
        )
        trials: list[dict[str, Any]] = []
        cache: dict[tuple[int, ...], tuple[TrialState, float]] = {}
        seen: list[tuple[dict[str, int], float]] = []
        best: dict[str, Any] | None = None
        best_value = math.nan
        n_feasible = n_infeasible = n_complete = stale = compute = 0
        while n_feasible < self.num_trials:
            guided = n_complete >= self.n_startup_trials
            trial = study.ask()
            params = {v.name: trial.suggest_int(v.name, v.low, v.high) for v in self._variables}
            rank_map = self._decode(params)
            constraints = self._constraints(rank_map)
            for constraint, excess in constraints.items():
                trial.set_constraint(constraint, excess)
            ranks, n_params = self._usage(rank_map)
            record: dict[str, Any] = {
                "number": trial.number,
                "params": params,
                "ranks": rank_map,
                "value": None,
                "feasible": True,
                "state": "complete",
                "cached": False,
                "budget_used": {"ranks": ranks, "params": n_params},
                "compute_steps": 0,
            }
            trials.append(record)
            if any(excess > 0 for excess in constraints.values()):
                # never evaluated: told the value of the nearest evaluated configuration
                study.tell(trial, self._impute(params, seen, minimize))
                n_complete += 1
                record.update(feasible=False, state="infeasible")
                n_infeasible += 1
                if n_infeasible >= _INFEASIBLE_PER_TRIAL * self.num_trials:
                    warnings.warn(
                        f"AutoRank stopped after {n_infeasible} infeasible suggestions; the "
                        "budget leaves little room for the candidates",
                        UserWarning,
                        stacklevel=3,
                    )
                    break
                continue
            n_feasible += 1
            signature = tuple(rank_map[name] for name in self.modules)
            cached = cache.get(signature)
            if cached is None:
                state, value = self._evaluate(objective, rank_map, trial)
                steps = int(trial.user_attrs.get("compute_steps", 0))
                record["compute_steps"] = steps
                compute += steps
            else:
                state, value = cached
                record["cached"] = True
            if state == TrialState.COMPLETE:
                study.tell(trial, value)
                n_complete += 1
                seen.append((params, value))
            else:
                frozen = study.tell(trial, state=state)
                if state == TrialState.PRUNED and cached is None:
                    value = frozen.value if frozen.value is not None else math.nan
            cache.setdefault(signature, (state, value))
            record.update(value=value, state=state.name.lower())
            if state == TrialState.COMPLETE and (best is None or better(value, best_value)):
                best, best_value, stale = record, value, 0
            elif guided:
                stale += 1
            if stale >= self.patience:
                break
        if best is None:
            raise RuntimeError(
                "AutoRank: no feasible trial completed (every evaluation failed or was pruned)"
            )
        best_ranks: dict[str, int] = dict(best["ranks"])
        return AutoRankResult(
            rank_map=best_ranks,
            rank_pattern={name: r for name, r in best_ranks.items() if r > 0},
            best_value=float(best_value),
            trials=trials,
            compute_steps=compute,
            budget_used=dict(best["budget_used"]),
        )

    @staticmethod
    def _impute(
        params: Mapping[str, int], seen: Sequence[tuple[dict[str, int], float]], minimize: bool
    ) -> float:
        """The value told for an infeasible suggestion: that of the nearest (L1 distance over
        the variable indices) completed feasible trial, the better one on ties; 0.0 before any
        feasible trial completed."""
        if not seen:
            return 0.0
        distance = [sum(abs(params[k] - p[k]) for k in params) for p, _ in seen]
        closest = min(distance)
        values = [v for d, (_, v) in zip(distance, seen, strict=True) if d == closest]
        return min(values) if minimize else max(values)

    @staticmethod
    def _evaluate(
        objective: Objective, rank_map: dict[str, int], trial: optuna.trial.Trial
    ) -> tuple[TrialState, float]:
        """(state, value) of one objective call: FAIL for a non-finite value, PRUNED when the
        objective raises `optuna.TrialPruned`."""
        import optuna
        from optuna.trial import TrialState

        try:
            value = float(objective(dict(rank_map), trial))
        except optuna.TrialPruned:
            return TrialState.PRUNED, math.nan
        return (TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL), value

    # -- export -------------------------------------------------------------------------------

    def apply(
        self, result: AutoRankResult, config: PolyAdapterConfig | None = None
    ) -> PolyAdapterConfig:
        """`config` (default: the searched `base_config`) with the ranks of `result`.

        `r` becomes the most common nonzero rank (ties: the larger), `rank_pattern` lists only
        the modules whose rank differs from it (full module names; keys of `config.rank_pattern`
        that match no searched module are kept after them), and the rank-0 modules are added to
        `exclude_modules`. Modules `config` targets beyond the searched ones get `r`.

        Raises:
            ValueError: every rank of `result` is 0 (nothing to adapt).
        """
        config = config if config is not None else self.base_config
        nonzero = {name: r for name, r in result.rank_map.items() if r > 0}
        if not nonzero:
            raise ValueError(
                "the best configuration adapts no module (every rank is 0): there is no "
                "adapter config to apply; train the head alone"
            )
        counts = Counter(nonzero.values())
        r = max(counts, key=lambda rank: (counts[rank], rank))
        exceptions = {name: rank for name, rank in nonzero.items() if rank != r}
        zeros = [name for name, rank in result.rank_map.items() if rank == 0]
        return config.replace(
            r=r,
            rank_pattern=_merge_pattern(exceptions, config.rank_pattern, result.rank_map),
            exclude_modules=_add_excludes(config.exclude_modules, zeros),
        )
