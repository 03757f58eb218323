"""`athena-train --config run.yaml`: fine-tune a local Hugging Face model with a PolyAdapter.

Usage::

    athena-train --config run.yaml [--dry-run] [--no-progress]
    python -m athena.train --config run.yaml

The run file (schema: `athena.train_config`) names a local model folder, local JSONL/CSV data,
the adapter (`PolyAdapterConfig` fields) and the loop settings; optional ``autorank:`` and
``freezing:`` sections add a budgeted rank search before training (`athena.autorank`) and
progressive freezing during it (`athena.freezing`). A minimal file::

    model: {path: ./minilm, task: classification, num_labels: 2, pooling: mean}
    data: {train: train.jsonl, validation: val.jsonl}
    adapter: {r: 8, lora_alpha: 16, target_modules: [query, value]}
    training: {epochs: 3, batch_size: 32, lr: 1.0e-3, seed: 0}
    output_dir: ./run-lora

The loop: seed everything; read and tokenize the data; load the model offline; (search ranks);
wrap it with `get_athena_model` (task type ``SEQ_CLS`` or ``CAUSAL_LM``, so a classification
head is trained and saved with the adapter); build AdamW over the parameters that require grad
*after* the adapter is set up; per step ``loss = model loss (+ athena_aux_loss())``, backward,
freezing step, optional clipping, optimizer and lr-schedule step,
``zero_grad(set_to_none=True)``; evaluate each epoch (loss; accuracy for classification,
perplexity for a causal LM); save the adapter in PEFT's layout and ``metrics.json`` into
``output_dir``. ``--dry-run`` does everything up to the first step (so a bad target module or
a bad freezing option is found) and writes nothing.

Exit codes: 0 success, 2 a bad run file, data file or command line (one ``athena-train: error:``
line, no traceback), 1 a missing optional dependency (``pip install athena[train]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from .config import PolyAdapterConfig
from .model import AthenaModel, get_athena_model
from .train_config import AutoRankSection, ConfigError, FreezingSection, RunConfig, load_config
from .train_data import (
    DataError,
    LabelMap,
    TokenizedDataset,
    encode,
    make_loader,
    read_examples,
)
from .train_model import load_model, load_tokenizer, pick_device

__all__ = ["TrainResult", "evaluate", "main", "train"]

PROG = "athena-train"
METRICS_NAME = "metrics.json"


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: The trained `AthenaModel` (after a dry run: prepared and untrained).
        metrics: The content of ``metrics.json`` (after a dry run: what it would start with).
        tokenizer: The tokenizer used.
        dry_run: True when nothing was trained or written.
        label_map: How labels became class ids (classification).
    """

    model: AthenaModel
    metrics: dict[str, Any]
    tokenizer: Any
    dry_run: bool = False
    label_map: LabelMap | None = None


def _require_dependencies() -> None:
    """Raise ImportError naming ``athena[train]`` when transformers, pyyaml or tqdm is missing."""
    missing = []
    for module, dist in (("transformers", "transformers"), ("yaml", "pyyaml"), ("tqdm", "tqdm")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ImportError(
            f"athena-train needs {', '.join(missing)} (not installed): pip install athena[train]"
        )


def _optional_module(name: str, section: str) -> ModuleType:
    """Import `athena.<name>` for an optional run-file section, or raise a `ConfigError`."""
    try:
        return importlib.import_module(f"athena.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"athena.{name}", "athena"):
            raise
        raise ConfigError(
            f"{section}: this installation of athena has no athena.{name} module; "
            f"remove the '{section}' section"
        ) from None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _move(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _cross_entropy_sum(logits: Tensor, labels: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """(summed loss, number of scored targets): per example for classification, per next token
    (logits at t score token t + 1; -100 ignored) for a causal LM."""
    if task == "causal_lm":
        logits = logits[:, :-1]
        labels = labels[:, 1:]
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
    return loss, (flat_labels != -100).sum()


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[Mapping[str, Tensor]], task: str, device: torch.device
) -> dict[str, float]:
    """Mean loss over all examples (classification) or all predicted tokens (causal LM), plus
    ``accuracy`` (classification) or ``perplexity`` (causal LM). The model is put in eval mode
    and back into training mode afterwards.

    Args:
        model: Returns an output with ``logits``: (B, C) or (B, T, V).
        loader: Batches with ``labels``: (B,) class ids or (B, T) token ids (-100 ignored).
        task: ``"classification"`` or ``"causal_lm"``.
        device: Where the model is.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for raw in loader:
        batch = _move(raw, device)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        loss, n = _cross_entropy_sum(logits, labels, task)
        loss_sum += loss.double()
        count += n
        if task == "classification":
            correct += (logits.argmax(dim=-1) == labels).sum()
    model.train(was_training)
    total = int(count.item())
    mean = float(loss_sum.item()) / max(total, 1)
    out = {"eval_loss": mean}
    if task == "classification":
        out["eval_accuracy"] = int(correct.item()) / max(total, 1)
    else:
        out["eval_perplexity"] = math.exp(min(mean, 700.0))
    return out


def _lr_lambda(schedule: str, warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "linear":
            remaining = max(total - step, 0)
            return remaining / max(total - warmup, 1)
        return 1.0

    return factor


def _build_optimizer(
    model: AthenaModel, cfg: RunConfig, freezing: Any | None
) -> torch.optim.Optimizer:
    """AdamW over the parameters that require grad now (after the adapter is set up)."""
    lr, wd = cfg.training.lr, cfg.training.weight_decay
    if cfg.freezing is not None and cfg.freezing.mode == "lr_zero":
        assert freezing is not None
        try:
            groups = freezing.freeze_param_groups(model, lr=lr, weight_decay=wd)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"freezing: {exc}") from None
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("adapter: the adapter left no trainable parameter")
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _build_freezer(
    module: ModuleType, model: AthenaModel, section: FreezingSection, optimizer: Any
) -> Any:
    options = dict(section.options)
    if section.mode == "lr_zero":
        options["optimizer"] = optimizer
    try:
        return module.ProgressiveFreezingScheduler(model, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"freezing: {exc}") from None


def _autorank(
    section: AutoRankSection,
    cfg: RunConfig,
    model: nn.Module,
    adapter: PolyAdapterConfig,
    train_loader: DataLoader[Any],
    val_loader: DataLoader[Any] | None,
    *,
    search: bool,
) -> tuple[PolyAdapterConfig, dict[str, Any] | None]:
    """Search per-module LoRA ranks on the un-adapted `model`; the config with `rank_pattern`."""
    module = _optional_module("autorank", "autorank")
    if val_loader is None:
        raise ConfigError("autorank: needs data.validation (trials are scored on it)")
    lr = section.proxy_lr if section.proxy_lr is not None else cfg.training.lr
    seed = section.seed if section.seed is not None else cfg.training.seed
    try:
        objective = module.ProxyFineTune(
            train_loader, val_loader, section.proxy_steps, lr, seed, prune=section.prune
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"autorank: {exc}") from None
    kwargs: dict[str, Any] = {
        "rank_budget": section.rank_budget,
        "rank_candidates": tuple(section.rank_candidates),
        "num_trials": section.num_trials,
        "patience": section.patience,
        "metric": section.metric,
        "mode": "min" if section.metric == "loss" else "max",
        "objective": objective,
        "grouping": section.grouping,
        "base_config": adapter,
        "seed": seed,
        "n_startup_trials": section.n_startup_trials,
    }
    if section.param_budget is not None:
        kwargs["param_budget"] = section.param_budget
    try:
        searcher = module.AutoRank(model, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"autorank: {exc}") from None
    if not search:
        return adapter, None
    result = searcher.search()
    try:
        config = searcher.apply(result, adapter)
    except ValueError as exc:  # e.g. the best configuration adapts no module
        raise ConfigError(f"autorank: {exc}") from None
    if not isinstance(config, PolyAdapterConfig):
        raise TypeError(f"AutoRank.apply returned {type(config).__name__}, not PolyAdapterConfig")
    summary: dict[str, Any] = {
        "metric": section.metric,
        "r": config.r,
        "rank_pattern": dict(config.rank_pattern),
        "exclude_modules": config.exclude_modules,
    }
    for name in ("rank_map", "best_value", "compute_steps", "budget_used"):
        value = getattr(result, name, None)
        if isinstance(value, int | float | str | dict) or value is None:
            summary[name] = value
    trials = getattr(result, "trials", None)
    if isinstance(trials, Sequence):
        summary["num_trials"] = len(trials)
    return config, summary


def _write_json(path: str, payload: Mapping[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import transformers

    from . import __version__

    return {
        "athena": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def train(
    cfg: RunConfig,
    *,
    progress: bool = True,
    dry_run: bool = False,
    argv: Sequence[str] | None = None,
) -> TrainResult:
    """Run the training a `RunConfig` describes (the body of `athena-train`).

    Args:
        cfg: The checked run file.
        progress: Show tqdm bars (on stderr).
        dry_run: Prepare everything (data, model, adapter, optimizer, freezing, AutoRank
            arguments) but train and write nothing.
        argv: The command line, recorded in ``metrics.json``.

    Returns:
        The trained model and the metrics written to ``output_dir/metrics.json``.

    Raises:
        ConfigError: a setting that does not fit the model (unmatched target modules, bad
            freezing options, no model folder, ...).
        DataError: a data file that cannot be read.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    task = cfg.model.task
    training = cfg.training
    if training.num_threads is not None:
        torch.set_num_threads(training.num_threads)
    _seed_everything(training.seed)
    device = pick_device(training.device)

    # -- data --------------------------------------------------------------------------------
    label_field = cfg.data.label_field if task == "classification" else None
    train_texts, train_raw = read_examples(
        cfg.data.train, cfg.data.format, cfg.data.text_field, label_field
    )
    val_texts: list[str] | None = None
    val_raw: list[object] = []
    if cfg.data.validation is not None:
        val_texts, val_raw = read_examples(
            cfg.data.validation, cfg.data.format, cfg.data.text_field, label_field
        )
    label_map: LabelMap | None = None
    train_labels: list[int] | None = None
    val_labels: list[int] | None = None
    if task == "classification":
        label_map = LabelMap.from_labels(train_raw, cfg.model.num_labels, cfg.data.train)
        train_labels = label_map.encode(train_raw, cfg.data.train)
        if val_texts is not None:
            assert cfg.data.validation is not None
            val_labels = label_map.encode(val_raw, cfg.data.validation)
    tokenizer = load_tokenizer(cfg.model)
    pad_id = int(tokenizer.pad_token_id)
    max_length = cfg.data.max_length
    train_set = encode(
        tokenizer, train_texts, max_length=max_length, task=task, labels=train_labels
    )
    val_set: TokenizedDataset | None = None
    if val_texts is not None:
        val_set = encode(tokenizer, val_texts, max_length=max_length, task=task, labels=val_labels)

    def loader(dataset: TokenizedDataset, train_order: bool) -> DataLoader[Any]:
        size = (
            training.batch_size
            if train_order
            else (training.eval_batch_size or training.batch_size)
        )
        return make_loader(
            dataset,
            batch_size=size,
            pad_token_id=pad_id,
            task=task,
            shuffle=train_order and training.shuffle,
            seed=training.seed,
        )

    train_loader = loader(train_set, True)
    val_loader = loader(val_set, False) if val_set is not None else None

    # -- model and adapter ----------------------------------------------------------------------
    num_labels = label_map.num_labels if label_map is not None else None
    base = load_model(cfg.model, num_labels, pad_id).to(device)
    adapter = cfg.adapter.replace(base_model_name_or_path=cfg.model.path)
    freezing_module = _optional_module("freezing", "freezing") if cfg.freezing is not None else None
    autorank_summary: dict[str, Any] | None = None
    if cfg.autorank is not None:
        # own loaders: the search must not advance the training loader's shuffling generator
        adapter, autorank_summary = _autorank(
            cfg.autorank,
            cfg,
            base,
            adapter,
            loader(train_set, True),
            loader(val_set, False) if val_set is not None else None,
            search=not dry_run,
        )
    torch.manual_seed(training.seed)  # the adapter's initialisation does not depend on a search
    try:
        model = get_athena_model(base, adapter)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"adapter: {exc}") from None
    model.to(device).train()
    trainable, total_params = model.get_nb_trainable_parameters()

    optimizer = _build_optimizer(model, cfg, freezing_module)
    freezer = None
    if cfg.freezing is not None:
        assert freezing_module is not None
        freezer = _build_freezer(freezing_module, model, cfg.freezing, optimizer)
    steps_per_epoch = len(train_loader)
    total_steps = training.epochs * steps_per_epoch
    if training.max_steps is not None:
        total_steps = min(total_steps, training.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(training.lr_scheduler, training.warmup_steps, total_steps)
    )
    use_aux = training.aux_loss and model.peft_config["default"].use_moe

    head = (
        "AutoModelForCausalLM"
        if task == "causal_lm"
        else (
            "AutoModelForSequenceClassification"
            if cfg.model.pooling is None
            else f"PooledClassifier({cfg.model.pooling})"
        )
    )
    metrics: dict[str, Any] = {
        "argv": [PROG, *(argv if argv is not None else sys.argv[1:])],
        "config_file": cfg.source,
        "config": dict(cfg.raw),
        "adapter_config": adapter.to_dict(),
        "task": task,
        "model_path": cfg.model.path,
        "head": head,
        "num_labels": num_labels,
        "label_names": list(label_map.names) if label_map and label_map.names else None,
        "train_examples": len(train_set),
        "eval_examples": len(val_set) if val_set is not None else 0,
        "trainable_params": trainable,
        "all_params": total_params,
        "trainable_percent": 100.0 * trainable / total_params,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "device": str(device),
        "seed": training.seed,
        "num_threads": torch.get_num_threads(),
        "autorank": autorank_summary,
        "freezing": None,
        "epochs": [],
        "versions": _versions(),
    }
    model.print_trainable_parameters()
    if dry_run:
        print(
            f"dry run: configuration OK; {len(train_set)} training and "
            f"{metrics['eval_examples']} validation examples; would train {epochs} epoch(s), "
            f"{total_steps} steps on {device}"
            + ("; AutoRank would search ranks first" if cfg.autorank is not None else "")
            + "; nothing written"
        )
        return TrainResult(model, metrics, tokenizer, dry_run=True, label_map=label_map)

    os.makedirs(cfg.output_dir, exist_ok=True)
    metrics_path = os.path.join(cfg.output_dir, METRICS_NAME)
    params = [p for p in model.parameters() if p.requires_grad]
    step = 0
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        aux_sum = torch.zeros((), device=device)
        seen = 0
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch}/{epochs}",
            disable=not progress,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for raw in bar:
            batch = _move(raw, device)
            loss = model(**batch).loss
            objective = loss
            if use_aux:
                aux = model.athena_aux_loss()
                aux_sum += aux.detach()
                objective = loss + aux
            objective.backward()
            if freezer is not None:
                freezer.step(objective.detach())
            if training.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, training.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            seen += 1
            step += 1
            if progress and (seen % 10 == 0 or seen == 1):
                bar.set_postfix(loss=f"{float(loss_sum.item()) / seen:.4f}")
            if step >= total_steps:
                break
        bar.close()
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(loss_sum.item()) / max(seen, 1),
        }
        if use_aux:
            record["train_aux_loss"] = float(aux_sum.item()) / max(seen, 1)
        if val_loader is not None and (training.eval_every_epoch or epoch == epochs):
            record.update(evaluate(model, val_loader, task, device))
        record["seconds"] = time.perf_counter() - epoch_start
        metrics["epochs"].append(record)
        print(
            f"epoch {epoch}/{epochs} step {step}: "
            + " ".join(
                f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "step", "seconds")
            )
        )
        if freezer is not None:
            metrics["freezing"] = {
                "frozen_prefix_depth": int(freezer.frozen_prefix_depth),
                "groups": list(freezer.group_names),
                "events": [dataclasses.asdict(e) for e in freezer.events],
            }
        _write_json(metrics_path, metrics)

    model.save_pretrained(cfg.output_dir)
    metrics["seconds"] = time.perf_counter() - start
    _write_json(metrics_path, metrics)
    print(f"saved the adapter and {METRICS_NAME} to {cfg.output_dir}")
    return TrainResult(model, metrics, tokenizer, label_map=label_map)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Fine-tune a local Hugging Face model with a PolyAdapter (LoRA / IA³ / mixture of "
            "LoRA experts) on local JSONL or CSV data; saves the adapter in PEFT's layout."
        ),
    )
    parser.add_argument("--config", required=True, metavar="RUN.yaml", help="the run file")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the run file, data, model and adapter; train and write nothing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """The `athena-train` command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for a bad command line, run file or data file, 1 when an optional
        dependency is missing.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse has printed its usage message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _require_dependencies()
        if args.no_progress:  # also transformers' own "Loading weights" bars
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        cfg = load_config(args.config)
        train(cfg, progress=not args.no_progress, dry_run=args.dry_run, argv=args_list)
    except (ConfigError, DataError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
