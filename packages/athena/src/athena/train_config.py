"""The `athena-train` run file: the YAML schema, read into frozen dataclasses.

A run file has these top-level keys (see `RunConfig`)::

    model:      {path, tokenizer, task, num_labels, pooling}
    data:       {train, validation, format, text_field, label_field, max_length}
    adapter:    PolyAdapterConfig fields (r, lora_alpha, target_modules, use_moe, ...)
    training:   {epochs, batch_size, eval_batch_size, lr, weight_decay, seed, max_steps,
                 eval_every_epoch, aux_loss, max_grad_norm, lr_scheduler, warmup_steps,
                 device, shuffle, num_threads}
    autorank:   optional {rank_budget, rank_candidates, num_trials, patience, grouping,
                 param_budget, n_startup_trials, proxy_steps, proxy_lr, metric, prune, seed}
    freezing:   optional {threshold, window_size, unfreeze_threshold, min_steps, criterion,
                 rel_threshold, ema, cooldown, mode}
    output_dir: folder for the adapter (PEFT layout) and metrics.json

Every section is checked when read: an unknown key is an error listing the valid keys (with a
"did you mean" hint), a value of the wrong type or out of range is an error naming the key as
``section.key``. All these are `ConfigError` (a `ValueError`). Relative paths are resolved
against the folder of the run file. pyyaml is imported only by `load_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from .config import PolyAdapterConfig

__all__ = [
    "ADAPTER_RESERVED",
    "AutoRankSection",
    "ConfigError",
    "DataSection",
    "FreezingSection",
    "ModelSection",
    "RunConfig",
    "TrainingSection",
    "load_config",
    "parse_config",
]

Task = Literal["classification", "causal_lm"]
Pooling = Literal["cls", "mean"]
DataFormat = Literal["jsonl", "csv"]
LrScheduler = Literal["constant", "linear"]

#: PolyAdapterConfig fields the run file may not set: `athena-train` sets them itself
#: (`task_type` from `model.task`, `base_model_name_or_path` from `model.path`).
ADAPTER_RESERVED = frozenset(
    {"task_type", "base_model_name_or_path", "inference_mode", "athena_version"}
)

_TASK_TYPES: dict[str, str] = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}


class ConfigError(ValueError):
    """A run file that cannot be used; the message names the key (``section.key``)."""


# -- value checks -------------------------------------------------------------------------------


def _int(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(key: str, value: object, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number >= minimum (> minimum when `strict`); YAML strings like "1e-3" accepted
    (YAML 1.1 reads `1e-3` without a dot as a string)."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if (
        number is None
        or not math.isfinite(number)
        or number < minimum
        or (strict and number == minimum)
    ):
        raise ConfigError(f"{key} must be a number {bound}, got {value!r}")
    return number


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{key} must be one of {listed}, got {value!r}")
    return value


#: Names other tools (Hugging Face `TrainingArguments`, PEFT, the original ATHENA run files)
#: use for our keys, for the "did you mean" hint.
_ALIASES: dict[str, str] = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "train_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "max_train_steps": "max_steps",
    "max_seq_length": "max_length",
    "rank": "r",
    "lora_r": "r",
    "alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "k": "top_k",
    "experts": "num_experts",
    "model_name_or_path": "path",
    "model_name": "path",
    "train_file": "train",
    "validation_file": "validation",
    "eval_file": "validation",
    "output": "output_dir",
}


def _check_keys(section: str, data: Mapping[str, Any], valid: list[str]) -> None:
    """Raise on the first unknown key, listing the valid ones (and the closest match)."""
    for key in data:
        if key not in valid:
            where = f"{section}.{key}" if section else str(key)
            alias = _ALIASES.get(str(key))
            close = [alias] if alias in valid else difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            scope = f"in '{section}'" if section else "at the top level"
            raise ConfigError(
                f"unknown key {where!r}{hint}; valid keys {scope}: {', '.join(sorted(valid))}"
            )


def _fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _required(cls: type[Any]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


# -- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """``model:`` — the local Hugging Face model folder and the task.

    Args:
        path: A local model folder (`config.json` + weights), loaded with `local_files_only`.
        tokenizer: Tokenizer folder (default: `path`).
        task: ``"classification"`` (sequence classification) or ``"causal_lm"``.
        num_labels: Classes (classification only; default: inferred from the training labels).
        pooling: Classification head: None uses the model's own head
            (`AutoModelForSequenceClassification`); ``"mean"`` (mean over the attention mask) or
            ``"cls"`` (first token) put a linear head on `AutoModel`'s last hidden state.
    """

    SECTION: ClassVar[str] = "model"

    path: str
    tokenizer: str | None = None
    task: Task = "classification"
    num_labels: int | None = None
    pooling: Pooling | None = None

    def __post_init__(self) -> None:
        _str("model.path", self.path)
        if self.tokenizer is not None:
            _str("model.tokenizer", self.tokenizer)
        _choice("model.task", self.task, ("classification", "causal_lm"))
        if self.task == "causal_lm":
            for name in ("num_labels", "pooling"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"model.{name} applies to task 'classification' only")
        if self.num_labels is not None:
            _int("model.num_labels", self.num_labels, 2)
        if self.pooling is not None:
            _choice("model.pooling", self.pooling, ("cls", "mean"))


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """``data:`` — local training (and validation) files.

    Args:
        train: JSONL (one object per line) or CSV (header row) file.
        validation: Optional file of the same kind, evaluated each epoch.
        format: ``"jsonl"`` or ``"csv"`` (default: from the file extension).
        text_field: Field holding the text.
        label_field: Field holding the class (classification; an integer id or a class name).
        max_length: Token limit; longer texts are truncated.
    """

    SECTION: ClassVar[str] = "data"

    train: str
    validation: str | None = None
    format: DataFormat | None = None
    text_field: str = "text"
    label_field: str = "label"
    max_length: int = 128

    def __post_init__(self) -> None:
        _str("data.train", self.train)
        if self.validation is not None:
            _str("data.validation", self.validation)
        if self.format is not None:
            _choice("data.format", self.format, ("jsonl", "csv"))
        _str("data.text_field", self.text_field)
        _str("data.label_field", self.label_field)
        _int("data.max_length", self.max_length, 2)


@dataclass(frozen=True, kw_only=True)
class TrainingSection:
    """``training:`` — the optimisation loop (AdamW over the adapter's trainable parameters).

    Args:
        epochs: Passes over the training data.
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size (default: `batch_size`).
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        seed: Seeds the head and adapter initialisation, dropout and the data order.
        max_steps: Stop after this many optimizer steps (default: `epochs` full passes).
        eval_every_epoch: Evaluate after every epoch (False: after the last one only).
        aux_loss: Add the mixture-of-experts balance loss (`athena_aux_loss()`) to the loss.
        max_grad_norm: Clip the gradient norm to this value (default: no clipping).
        lr_scheduler: ``"constant"`` or ``"linear"`` (decay to 0 at the last step).
        warmup_steps: Linear warm-up steps (both schedules).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        shuffle: Reshuffle the training data every epoch (seeded).
        num_threads: CPU threads for torch (`torch.set_num_threads`; default: torch's choice).
            Small models on a busy machine often run much faster with 1.
    """

    SECTION: ClassVar[str] = "training"

    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int | None = None
    lr: float = 5e-4
    weight_decay: float = 0.0
    seed: int = 0
    max_steps: int | None = None
    eval_every_epoch: bool = True
    aux_loss: bool = True
    max_grad_norm: float | None = None
    lr_scheduler: LrScheduler = "constant"
    warmup_steps: int = 0
    device: str = "auto"
    shuffle: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _int("training.epochs", self.epochs, 1)
        _int("training.batch_size", self.batch_size, 1)
        if self.eval_batch_size is not None:
            _int("training.eval_batch_size", self.eval_batch_size, 1)
        set_(self, "lr", _float("training.lr", self.lr, strict=True))
        set_(self, "weight_decay", _float("training.weight_decay", self.weight_decay))
        _int("training.seed", self.seed, 0)
        if self.max_steps is not None:
            _int("training.max_steps", self.max_steps, 1)
        _bool("training.eval_every_epoch", self.eval_every_epoch)
        _bool("training.aux_loss", self.aux_loss)
        if self.max_grad_norm is not None:
            norm = _float("training.max_grad_norm", self.max_grad_norm, strict=True)
            set_(self, "max_grad_norm", norm)
        _choice("training.lr_scheduler", self.lr_scheduler, ("constant", "linear"))
        _int("training.warmup_steps", self.warmup_steps, 0)
        device = _str("training.device", self.device)
        if device != "auto" and device.split(":")[0] not in ("cpu", "cuda", "mps", "xpu"):
            raise ConfigError(
                f"training.device must be 'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps' or "
                f"'xpu', got {device!r}"
            )
        _bool("training.shuffle", self.shuffle)
        if self.num_threads is not None:
            _int("training.num_threads", self.num_threads, 1)


@dataclass(frozen=True, kw_only=True)
class AutoRankSection:
    """``autorank:`` — search per-layer LoRA ranks under a budget before training
    (`athena.autorank.AutoRank` with a `ProxyFineTune` objective on the validation data).

    Args:
        rank_budget: Σ of the ranks over the adapted modules may not exceed this.
        rank_candidates: Ranks to choose from (0 = leave the module unadapted).
        num_trials: Trials of the search.
        patience: Stop after this many trials without improvement.
        grouping: ``"layer"``, ``"module_type"``, ``"module"`` or ``"profile"``.
        param_budget: Optional Σ r·(d_in + d_out) limit.
        n_startup_trials: Trials before the Gaussian process takes over.
        proxy_steps: Training steps of each trial's short fine-tune.
        proxy_lr: Its learning rate (default: `training.lr`).
        metric: What a trial scores on the validation data: ``"loss"`` (minimised) or
            ``"accuracy"`` (maximised; classification).
        prune: Stop unpromising trials early (successive halving).
        seed: Search seed (default: `training.seed`).
    """

    SECTION: ClassVar[str] = "autorank"

    rank_budget: int = 1024
    rank_candidates: tuple[int, ...] = (0, 2, 4, 8, 16)
    num_trials: int = 30
    patience: int = 5
    grouping: Literal["layer", "module_type", "module", "profile"] = "layer"
    param_budget: int | None = None
    n_startup_trials: int = 8
    proxy_steps: int = 50
    proxy_lr: float | None = None
    metric: Literal["loss", "accuracy"] = "loss"
    prune: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        _int("autorank.rank_budget", self.rank_budget, 1)
        candidates = self.rank_candidates
        if (
            isinstance(candidates, str)
            or not isinstance(candidates, list | tuple)
            or not candidates
        ):
            raise ConfigError(
                f"autorank.rank_candidates must be a non-empty list of integers, got {candidates!r}"
            )
        for i, rank in enumerate(candidates):
            _int(f"autorank.rank_candidates[{i}]", rank, 0)
        object.__setattr__(self, "rank_candidates", tuple(candidates))
        _int("autorank.num_trials", self.num_trials, 1)
        _int("autorank.patience", self.patience, 1)
        _choice("autorank.grouping", self.grouping, ("layer", "module_type", "module", "profile"))
        if self.param_budget is not None:
            _int("autorank.param_budget", self.param_budget, 1)
        _int("autorank.n_startup_trials", self.n_startup_trials, 0)
        _int("autorank.proxy_steps", self.proxy_steps, 1)
        if self.proxy_lr is not None:
            object.__setattr__(
                self, "proxy_lr", _float("autorank.proxy_lr", self.proxy_lr, strict=True)
            )
        _choice("autorank.metric", self.metric, ("loss", "accuracy"))
        _bool("autorank.prune", self.prune)
        if self.seed is not None:
            _int("autorank.seed", self.seed, 0)


@dataclass(frozen=True, kw_only=True)
class FreezingSection:
    """``freezing:`` — `athena.freezing.ProgressiveFreezingScheduler`, stepped after backward.

    Only the keys given are passed on; the scheduler's own defaults fill the rest and its
    constructor checks the ranges (its errors are reported as ``freezing: ...``).

    Args:
        threshold, window_size, unfreeze_threshold, min_steps, criterion, rel_threshold, ema,
            cooldown, mode: the scheduler's arguments of the same names.
    """

    SECTION: ClassVar[str] = "freezing"
    KEYS: ClassVar[tuple[str, ...]] = (
        "threshold",
        "window_size",
        "unfreeze_threshold",
        "min_steps",
        "criterion",
        "rel_threshold",
        "ema",
        "cooldown",
        "mode",
    )

    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_keys("freezing", self.options, list(self.KEYS))
        opts = dict(self.options)
        for key, minimum in (("window_size", 1), ("min_steps", 0)):
            if key in opts:
                _int(f"freezing.{key}", opts[key], minimum)
        if opts.get("cooldown") is not None:
            _int("freezing.cooldown", opts["cooldown"], 0)
        for key in ("threshold", "rel_threshold", "ema"):
            if key in opts:
                opts[key] = _float(f"freezing.{key}", opts[key])
        if "unfreeze_threshold" in opts:
            value = opts["unfreeze_threshold"]
            if not (isinstance(value, float) and math.isinf(value) and value > 0):
                opts["unfreeze_threshold"] = _float("freezing.unfreeze_threshold", value)
        if "criterion" in opts:
            _choice("freezing.criterion", opts["criterion"], ("relative", "absolute"))
        if "mode" in opts:
            _choice("freezing.mode", opts["mode"], ("requires_grad", "lr_zero"))
        object.__setattr__(self, "options", opts)

    @property
    def mode(self) -> str:
        """``"requires_grad"`` (default) or ``"lr_zero"``."""
        return str(self.options.get("mode", "requires_grad"))


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A whole run file, read and checked.

    Attributes:
        model, data, training: their sections.
        adapter: The `PolyAdapterConfig` (task type set from `model.task`).
        autorank, freezing: optional sections (None when absent).
        output_dir: Where the adapter and `metrics.json` are written.
        source: The run file, when read from one.
        raw: The mapping as read (recorded in `metrics.json`).
    """

    model: ModelSection
    data: DataSection
    adapter: PolyAdapterConfig
    training: TrainingSection = field(default_factory=TrainingSection)
    autorank: AutoRankSection | None = None
    freezing: FreezingSection | None = None
    output_dir: str
    source: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


_TOP_LEVEL = ["model", "data", "adapter", "training", "autorank", "freezing", "output_dir"]
_PATH_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("path", "tokenizer"),
    "data": ("train", "validation"),
}


def _section(name: str, value: object, *, optional: bool) -> dict[str, Any] | None:
    if value is None:
        if optional:
            return None
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping (key: value lines), got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{name} has a non-string key {key!r}")
    return dict(value)


def _build(cls: type[Any], data: Mapping[str, Any]) -> Any:
    section: str = cls.SECTION
    _check_keys(section, data, _fields(cls))
    for key in _required(cls):
        if key not in data or data[key] is None:
            raise ConfigError(f"missing required key '{section}.{key}'")
    return cls(**data)


def _resolve(path: object, base: Path | None) -> object:
    if not isinstance(path, str) or not path or base is None:
        return path
    expanded = Path(os.path.expanduser(path))
    return str(expanded if expanded.is_absolute() else base / expanded)


def _adapter(data: Mapping[str, Any], task: str) -> PolyAdapterConfig:
    valid = [f for f in _fields(PolyAdapterConfig) if f not in ADAPTER_RESERVED]
    for key in data:
        if key in ADAPTER_RESERVED:
            raise ConfigError(
                f"adapter.{key} is set by athena-train (task_type from model.task, "
                "base_model_name_or_path from model.path); remove it"
            )
    _check_keys("adapter", data, valid)
    try:
        return PolyAdapterConfig(**data, task_type=_TASK_TYPES[task])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"adapter: {exc}") from None


def parse_config(data: object, *, base_dir: str | os.PathLike[str] | None = None) -> RunConfig:
    """Check a run-file mapping and build the `RunConfig`.

    Args:
        data: The mapping read from YAML.
        base_dir: Folder relative paths are resolved against (None: leave them as given).

    Raises:
        ConfigError: An unknown or missing key, or a bad value (the message names the key).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"the run file must hold a mapping of sections, got {data!r}")
    _check_keys("", data, _TOP_LEVEL)
    base = Path(base_dir) if base_dir is not None else None
    sections: dict[str, dict[str, Any]] = {}
    for name in ("model", "data"):
        if name not in data:
            raise ConfigError(f"missing required section '{name}'")
        section = _section(name, data[name], optional=False)
        assert section is not None
        for key in _PATH_KEYS[name]:
            if key in section:
                section[key] = _resolve(section[key], base)
        sections[name] = section
    model = cast(ModelSection, _build(ModelSection, sections["model"]))
    data_section = cast(DataSection, _build(DataSection, sections["data"]))
    adapter = _adapter(_section("adapter", data.get("adapter"), optional=False) or {}, model.task)
    training = cast(
        TrainingSection,
        _build(TrainingSection, _section("training", data.get("training"), optional=False) or {}),
    )
    autorank_raw = _section("autorank", data.get("autorank"), optional=True)
    autorank = None
    if autorank_raw is not None:
        autorank = cast(AutoRankSection, _build(AutoRankSection, autorank_raw))
        if not adapter.use_lora:
            raise ConfigError("autorank searches LoRA ranks: it needs adapter.use_lora: true")
        if autorank.metric == "accuracy" and model.task != "classification":
            raise ConfigError("autorank.metric 'accuracy' needs model.task 'classification'")
    freezing_raw = _section("freezing", data.get("freezing"), optional=True)
    freezing = None if freezing_raw is None else FreezingSection(options=freezing_raw)
    if "output_dir" not in data or data["output_dir"] is None:
        raise ConfigError("missing required key 'output_dir'")
    output_dir = _resolve(_str("output_dir", data["output_dir"]), base)
    return RunConfig(
        model=model,
        data=data_section,
        adapter=adapter,
        training=training,
        autorank=autorank,
        freezing=freezing,
        output_dir=cast(str, output_dir),
        source=None,
        raw=dict(data),
    )


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and check a YAML run file; relative paths in it are taken from its folder.

    Raises:
        ConfigError: The file is missing, not YAML, or fails `parse_config`.
        ImportError: pyyaml is not installed (``pip install athena[train]``).
    """
    try:
        import yaml
    except ImportError as exc:
        raise ImportError(
            "athena-train needs pyyaml to read its run file: pip install athena[train]"
        ) from exc
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config: no such file {os.fspath(path)!r}")
    try:
        with file.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{os.fspath(path)}: not valid YAML: {exc}".replace("\n", " ")) from None
    config = parse_config(data, base_dir=file.resolve().parent)
    return dataclasses.replace(config, source=str(file.resolve()))
