"""``inl-llm-train``: train a byte-level BPE tokenizer and an INL causal LM, save both for transformers.

Usage::

    inl-llm-train --preset tiny --steps 200 --output-dir runs/inl-tiny
    python -m inl_llm.train --text-file my.txt --preset small --d-model 384 --steps 2000
    inl-llm-train --resume runs/inl-tiny --steps 400          # continue the same run

What a run does:

1. Reads the training text (default: the embedded ``pydoc_data.topics`` corpus; ``--text-file``
   for any UTF-8 file) and splits it deterministically (:mod:`inl_llm.corpus`).
2. Trains a byte-level BPE tokenizer on the training split (:func:`inl_llm.tokenizer.train_tokenizer`,
   ``--vocab-size``) with the special tokens ``<|endoftext|>``, ``<USER>``, ``<ASSISTANT>``,
   ``<SYSTEM>``, ``<ERROR>`` and a chat template.
3. Builds :class:`~inl_llm.modeling_inl.INLForCausalLM` from ``INLLLMConfig.from_preset(--preset)``
   with the overrides given (``--d-model``, ``--num-layers``, …, ``--config KEY=VALUE`` for any
   other field) and the tokenizer's vocabulary size and special ids.
4. Trains it on random contiguous windows (``--batch-size`` × ``--seq-len`` tokens) with AdamW
   (weight decay on matrices only), a linear warm-up then a cosine decay to
   ``--min-lr-ratio`` × ``--lr``, and gradient-norm clipping, with a tqdm progress bar.
5. Every ``--eval-interval`` steps and at the end, measures the validation loss over fixed
   windows of the validation split: nats per token, bits per byte (nats per token ÷ ln 2 ÷ the
   validation text's UTF-8 bytes per token) and perplexity per token.
6. Saves model and tokenizer with ``save_pretrained`` into ``--output-dir`` (loadable with
   ``AutoTokenizer.from_pretrained(dir)`` and
   ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``), plus the resumable
   training state (:mod:`inl_llm.training_state`) and ``training_log.json`` (history, final
   metrics, tokens/s, wall time). ``--save-interval N`` also writes ``checkpoint-<step>`` folders.

Resuming (``--resume DIR``) restores weights, optimizer, step, and the RNG states of dropout and of
the batch sampler, and takes every run argument from the checkpoint: resuming a checkpoint of an
N-step run with ``--steps N`` ends with the same weights as the uninterrupted run. A run argument
given explicitly must equal the checkpoint's. ``--steps`` larger than the original total extends
the run; the schedule is then the cosine of the new total from the current step on. Session
arguments (``--steps``, ``--output-dir``, ``--eval-interval``, ``--save-interval``, ``--device``,
``--dtype``, ``--threads``, ``--progress``) may change.
"""

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from .configuration_inl import INLLLMConfig
from .corpus import TextSplits, encode, load_splits, random_batch, validation_windows
from .modeling_inl import INLForCausalLM
from .tokenizer import train_tokenizer
from .training_state import TrainingState, load_training_state, save_training_state

__all__ = ["RUN_DEFAULTS", "build_parser", "main", "train"]

#: Defaults of the run arguments (those a resumed run takes from its checkpoint).
RUN_DEFAULTS: dict[str, Any] = {
    "preset": "tiny",
    "text_file": None,
    "vocab_size": 4096,
    "batch_size": 16,
    "seq_len": 64,
    "lr": 3e-3,
    "min_lr_ratio": 0.1,
    "warmup_steps": None,  # None: min(100, steps // 10)
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "val_max_tokens": 16384,
    "seed": 0,
    "d_model": None,
    "num_layers": None,
    "num_heads": None,
    "num_kv_heads": None,
    "num_iterations": None,
    "feedforward_dim": None,
    "dropout": 0.0,  # the config's default is the original 0.1; short runs learn faster without
    "config": [],
}
#: Defaults of the session arguments (free to change when resuming).
SESSION_DEFAULTS: dict[str, Any] = {
    "steps": 200,
    "output_dir": None,  # None: runs/inl-<preset>, or the --resume folder
    "eval_interval": 50,
    "save_interval": 0,
    "device": "auto",
    "dtype": "auto",
    "threads": None,
    "progress": True,
}
# CLI option → INLLLMConfig field.
_CONFIG_FIELDS = {
    "d_model": "d_model",
    "num_layers": "num_layers",
    "num_heads": "num_heads",
    "num_kv_heads": "num_kv_heads",
    "num_iterations": "num_iterations_per_layer",
    "feedforward_dim": "feedforward_dim",
    "dropout": "dropout",
}
_LOG_FILE = "training_log.json"


def build_parser() -> argparse.ArgumentParser:
    """The ``inl-llm-train`` argument parser (every default is None; :func:`train` resolves them)."""
    parser = argparse.ArgumentParser(
        prog="inl-llm-train",
        description="Train a byte-level BPE tokenizer and an INL causal LM; save both with "
        "save_pretrained (loadable with AutoTokenizer / AutoModelForCausalLM, "
        "trust_remote_code=True).",
    )
    data = parser.add_argument_group("data and tokenizer")
    data.add_argument("--text-file", help="UTF-8 training text (default: pydoc_data.topics)")
    data.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 4096)")
    model = parser.add_argument_group("model (a preset plus overrides)")
    model.add_argument("--preset", help="tiny | small | medium | large (default tiny)")
    model.add_argument("--d-model", type=int)
    model.add_argument("--num-layers", type=int)
    model.add_argument("--num-heads", type=int)
    model.add_argument("--num-kv-heads", type=int)
    model.add_argument("--num-iterations", type=int, help="INL iterations per layer (T)")
    model.add_argument("--feedforward-dim", type=int)
    model.add_argument(
        "--dropout",
        type=float,
        help="default 0.0 (the config's own default, as the original, is 0.1: on the tiny preset "
        "it costs about 0.15 bits/byte after 200 steps)",
    )
    model.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="any other INLLLMConfig field, VALUE parsed as JSON when it can be "
        "(e.g. --config use_adaptive_stopping=false); repeatable",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, help="total optimizer steps of the run (default 200)")
    opt.add_argument("--batch-size", type=int, help="windows per step (default 16)")
    opt.add_argument("--seq-len", type=int, help="tokens per window (default 64)")
    opt.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    opt.add_argument("--min-lr-ratio", type=float, help="final lr / peak lr (default 0.1)")
    opt.add_argument("--warmup-steps", type=int, help="default min(100, steps // 10)")
    opt.add_argument("--weight-decay", type=float, help="AdamW decay of matrices (default 0.1)")
    opt.add_argument("--beta1", type=float, help="default 0.9")
    opt.add_argument("--beta2", type=float, help="default 0.95")
    opt.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1.0)")
    opt.add_argument("--seed", type=int, help="seeds init, dropout and batches (default 0)")
    run = parser.add_argument_group("evaluation, output, resume")
    run.add_argument("--eval-interval", type=int, help="steps between validations (default 50)")
    run.add_argument("--val-max-tokens", type=int, help="validation tokens (default 16384)")
    run.add_argument("--output-dir", help="default runs/inl-<preset> (with --resume: that folder)")
    run.add_argument("--save-interval", type=int, help="also write checkpoint-<step> (0 = off)")
    run.add_argument("--resume", help="a checkpoint folder to continue")
    run.add_argument("--device", help="cpu | cuda | auto (default auto)")
    run.add_argument("--dtype", help="float32 | bfloat16 (autocast) | auto (default auto)")
    run.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="tqdm bar"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``inl-llm-train``; returns 0, or 2 after printing a bad-argument message.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        train(args)
    except ValueError as error:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) a run from parsed :func:`build_parser` arguments.

    Args:
        args: the namespace; None values take the defaults (or, with ``resume``, the checkpoint's).

    Returns:
        The final metrics written to ``training_log.json`` (``val_bits_per_byte``, …).

    Raises:
        ValueError: for a bad argument (named in the message), before any training starts.
    """
    state = load_training_state(args.resume) if args.resume is not None else None
    run, session = _resolve(args, state)
    device = _device(session["device"])
    amp_dtype = _amp_dtype(session["dtype"], device)
    threads = torch.get_num_threads()
    if session["threads"] is not None:
        torch.set_num_threads(session["threads"])
    try:
        return _train(args, state, run, session, device, amp_dtype)
    finally:
        torch.set_num_threads(threads)


def _train(
    args: argparse.Namespace,
    state: TrainingState | None,
    run: dict[str, Any],
    session: dict[str, Any],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> dict[str, Any]:
    output_dir = Path(
        session["output_dir"]
        if session["output_dir"] is not None
        else (args.resume if args.resume is not None else f"runs/inl-{run['preset']}")
    )
    overrides = _config_overrides(run)
    # Fail on a bad preset or override before the tokenizer is trained.
    try:
        INLLLMConfig.from_preset(run["preset"])
    except ValueError as error:
        raise ValueError(f"--preset {run['preset']!r}: {error}") from error
    try:
        INLLLMConfig.from_preset(run["preset"], **overrides)
    except (ValueError, TypeError) as error:
        raise ValueError(f"model overrides {overrides}: {error}") from error
    splits = load_splits(run["text_file"])
    if state is not None and state.extra.get("data_sha256") != splits.meta["sha256"]:
        raise ValueError(
            f"resume: the training text differs from the checkpoint's (text_file="
            f"{run['text_file']!r}; the embedded corpus changes between Python versions)"
        )

    if state is None:
        torch.manual_seed(run["seed"])
        tokenizer = train_tokenizer(splits.train, vocab_size=run["vocab_size"])
        config = INLLLMConfig.from_preset(
            run["preset"],
            **{
                "max_seq_len": max(
                    INLLLMConfig.from_preset(run["preset"]).max_seq_len, run["seq_len"]
                ),
                **overrides,
                "vocab_size": len(tokenizer),
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
        )
        tokenizer.model_max_length = config.max_seq_len
        model = INLForCausalLM(config)
        history: list[dict[str, Any]] = []
        start_step, prior_train_s, prior_wall_s = 0, 0.0, 0.0
    else:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.resume)
        model = INLForCausalLM.from_pretrained(args.resume, dtype=torch.float32)
        history = _read_history(Path(args.resume))
        start_step = state.step
        prior_train_s = float(state.extra.get("train_seconds", 0.0))
        prior_wall_s = float(state.extra.get("wall_seconds", 0.0))
        if session["steps"] <= start_step:
            raise ValueError(
                f"--steps ({session['steps']}) must exceed the checkpoint's step ({start_step})"
            )
    torch.nn.Module.to(model, device)
    model.train()
    train_ids = encode(splits.train, tokenizer)
    val_ids = encode(splits.val, tokenizer)
    val_windows = validation_windows(val_ids, run["seq_len"], run["val_max_tokens"])
    if train_ids.numel() <= run["seq_len"]:
        raise ValueError(
            f"--seq-len ({run['seq_len']}) must be shorter than the training split "
            f"({train_ids.numel()} tokens)"
        )
    bytes_per_token = len(splits.val.encode("utf-8")) / val_ids.numel()

    optimizer = _optimizer(model, run)
    generator = torch.Generator().manual_seed(run["seed"])
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        torch.set_rng_state(state.rng_torch)
        generator.set_state(state.rng_batches)
        if device.type == "cuda" and state.rng_cuda:
            torch.cuda.set_rng_state_all(state.rng_cuda)

    steps = session["steps"]
    warmup = run["warmup_steps"] if run["warmup_steps"] is not None else min(100, steps // 10)
    tokens_per_step = run["batch_size"] * run["seq_len"]
    wall_start = time.perf_counter()
    train_s = 0.0
    running, running_count = torch.zeros((), device=device), 0
    last_eval: dict[str, Any] = {}
    bar = tqdm(
        total=steps,
        initial=start_step,
        desc="inl-llm-train",
        disable=not session["progress"],
        dynamic_ncols=True,
    )
    for step in range(start_step, steps):
        tick = time.perf_counter()
        lr = _lr_at(step, base=run["lr"], warmup=warmup, total=steps, ratio=run["min_lr_ratio"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = random_batch(train_ids, run["batch_size"], run["seq_len"], generator).to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        if run["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), run["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.detach()
        running_count += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s += time.perf_counter() - tick
        done = step + 1
        bar.update(1)
        is_eval = done == steps or (
            session["eval_interval"] > 0 and done % session["eval_interval"] == 0
        )
        if done % 10 == 0 or is_eval:
            bar.set_postfix(loss=f"{float(running) / running_count:.3f}", lr=f"{lr:.2e}")
        if is_eval:
            train_loss = float(running) / running_count
            running, running_count = torch.zeros((), device=device), 0
            val_loss = _evaluate(model, val_windows, run["batch_size"], device, amp_dtype)
            last_eval = {
                "step": done,
                "lr": lr,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_bits_per_byte": val_loss / math.log(2.0) / bytes_per_token,
                "val_perplexity": math.exp(min(val_loss, 700.0)),
                "train_seconds": prior_train_s + train_s,
            }
            history.append(last_eval)
            bar.write(
                f"step {done:>6}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                f"val bits/byte {last_eval['val_bits_per_byte']:.4f}  "
                f"val ppl {last_eval['val_perplexity']:.2f}"
            )
        if session["save_interval"] > 0 and done % session["save_interval"] == 0 and done < steps:
            _save(
                output_dir / f"checkpoint-{done}",
                model,
                tokenizer,
                optimizer,
                generator,
                done,
                run,
                session,
                splits,
                history,
                None,
                device,
                train_s=prior_train_s + train_s,
                wall_s=prior_wall_s + time.perf_counter() - wall_start,
            )
    bar.close()

    wall_s = time.perf_counter() - wall_start
    session_tokens = (steps - start_step) * tokens_per_step
    final = {
        **last_eval,
        "steps": steps,
        "tokens_seen": steps * tokens_per_step,
        "tokens_per_second": session_tokens / train_s if train_s > 0 else float("nan"),
        "train_seconds": prior_train_s + train_s,
        "wall_seconds": prior_wall_s + wall_s,
        "session_wall_seconds": wall_s,
        "resumed_from_step": start_step if state is not None else None,
        "val_bytes_per_token": bytes_per_token,
        "val_tokens_evaluated": int(val_windows.shape[0] * (val_windows.shape[1] - 1)),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
    }
    _save(
        output_dir,
        model,
        tokenizer,
        optimizer,
        generator,
        steps,
        run,
        session,
        splits,
        history,
        final,
        device,
        train_s=final["train_seconds"],
        wall_s=final["wall_seconds"],
    )
    print(
        f"saved {output_dir}: val bits/byte {final.get('val_bits_per_byte', float('nan')):.4f}, "
        f"perplexity {final.get('val_perplexity', float('nan')):.2f}, "
        f"{final['tokens_per_second']:.0f} tokens/s, {wall_s:.1f} s"
    )
    return final


# ---------------------------------------------------------------------------- arguments


def _resolve(
    args: argparse.Namespace, state: TrainingState | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill None arguments from the checkpoint (run arguments) or the defaults, then validate."""
    saved = state.extra.get("run", {}) if state is not None else {}
    run: dict[str, Any] = {}
    for key, default in RUN_DEFAULTS.items():
        given = getattr(args, key)
        if key == "text_file" and given is not None:
            given = str(Path(given).resolve())
        if key == "config" and given is not None:
            given = list(given)  # in the order given: a later KEY=VALUE wins
        if state is not None:
            if given is not None and given != saved.get(key):
                raise ValueError(
                    f"--{key.replace('_', '-')} {given!r} differs from the checkpoint's "
                    f"{saved.get(key)!r}: --resume continues the same run"
                )
            run[key] = saved.get(key, default)
        else:
            run[key] = default if given is None else given
    session = {
        key: default if getattr(args, key) is None else getattr(args, key)
        for key, default in SESSION_DEFAULTS.items()
    }
    _positive(run, "vocab_size", "batch_size", "seq_len", "val_max_tokens")
    _positive(session, "steps")
    if run["seq_len"] < 2:
        raise ValueError(f"--seq-len must be >= 2, got {run['seq_len']}")
    for key in ("lr", "min_lr_ratio", "weight_decay", "grad_clip"):
        value = run[key]
        if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
            raise ValueError(
                f"--{key.replace('_', '-')} must be a finite number >= 0 (lr > 0), got {value!r}"
            )
    if run["min_lr_ratio"] > 1:
        raise ValueError(f"--min-lr-ratio must lie in [0, 1], got {run['min_lr_ratio']!r}")
    for key in ("beta1", "beta2"):
        if not 0.0 <= run[key] < 1.0:
            raise ValueError(f"--{key} must lie in [0, 1), got {run[key]!r}")
    if run["warmup_steps"] is not None and run["warmup_steps"] < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {run['warmup_steps']}")
    for key in ("eval_interval", "save_interval"):
        if session[key] < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, got {session[key]}")
    if session["threads"] is not None and session["threads"] < 1:
        raise ValueError(f"--threads must be >= 1, got {session['threads']}")
    if run["text_file"] is not None and not Path(run["text_file"]).is_file():
        raise ValueError(f"--text-file {run['text_file']!r} is not an existing file")
    return run, session


def _positive(values: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if values[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {values[key]}")


def _config_overrides(run: dict[str, Any]) -> dict[str, Any]:
    overrides = {
        field: run[option] for option, field in _CONFIG_FIELDS.items() if run[option] is not None
    }
    for item in run["config"]:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--config expects KEY=VALUE, got {item!r}")
        key = key.strip()
        known = {f.name for f in dataclasses.fields(INLLLMConfig)} | set(INLLLMConfig.attribute_map)
        if key not in known:
            raise ValueError(f"--config {key}=…: {key!r} is not an INLLLMConfig field")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key] = value
    for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"):
        if key in overrides:
            raise ValueError(f"--config {key}=… is set from the tokenizer; use --vocab-size")
    return overrides


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be cpu, cuda or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available")
    return torch.device(name)


def _amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """None: plain float32; else the autocast dtype (weights and optimizer stay float32)."""
    if name == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if use_bf16 else None
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    raise ValueError(f"--dtype must be float32, bfloat16 or auto, got {name!r}")


# ---------------------------------------------------------------------------- optimisation


def _optimizer(model: torch.nn.Module, run: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW; weight decay on parameters with ≥ 2 dimensions (matrices, embeddings) only."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": run["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=run["lr"],
        betas=(run["beta1"], run["beta2"]),
    )


def _lr_at(step: int, *, base: float, warmup: int, total: int, ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``base`` to ``ratio·base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = ratio * base
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module,
    windows: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> float:
    """Mean next-token cross-entropy (nats per token) over all validation windows."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(input_ids=batch, labels=batch).loss
        total += loss.double() * batch.shape[0]
    model.train(was_training)
    return float(total) / windows.shape[0]


# ---------------------------------------------------------------------------- saving


def _save(
    folder: Path,
    model: INLForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    run: dict[str, Any],
    session: dict[str, Any],
    splits: TextSplits,
    history: list[dict[str, Any]],
    final: dict[str, Any] | None,
    device: torch.device,
    *,
    train_s: float,
    wall_s: float,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    save_training_state(
        folder,
        TrainingState(
            step=step,
            optimizer=optimizer.state_dict(),
            rng_torch=torch.get_rng_state(),
            rng_batches=generator.get_state(),
            rng_cuda=cuda,
            extra={
                "run": run,
                "session": {k: v for k, v in session.items() if k != "output_dir"},
                "data_sha256": splits.meta["sha256"],
                "train_seconds": train_s,
                "wall_seconds": wall_s,
            },
        ),
    )
    log = {
        "run": run,
        "session": session | {"output_dir": str(folder)},
        "data": {"name": splits.name, **splits.meta},
        "config": model.config.to_dict(),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "step": step,
        "history": history,
        "final": final,
    }
    (folder / _LOG_FILE).write_text(json.dumps(log, indent=2, default=str) + "\n")


def _read_history(folder: Path) -> list[dict[str, Any]]:
    file = folder / _LOG_FILE
    if not file.is_file():
        return []
    history: list[dict[str, Any]] = json.loads(file.read_text()).get("history", [])
    return history


if __name__ == "__main__":
    raise SystemExit(main())
