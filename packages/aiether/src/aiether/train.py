"""``aiether-train``: grow a GPT from ``--initial_layers`` to ``--max_layers`` blocks while it trains.

Accepts every flag of the original CLI by name. Changed meanings: ``--tau_crit``/``--kappa_crit``
are window-normalised thresholds (default 0.8); ``--pg_threshold`` is the plateau threshold
(default 0.01; the original's 0.15 was unused); the five strategy flags are optional;
``--new_layer_strategy`` takes ``GeometricExtrapolator`` (= geometric), ``Reference``, ``Copy`` or
``Random``. New: ``--text_file --operator --preserve --trigger --schedule --initial_layers
--max_layers --max_steps --seed --report_to``.

Data are byte-level (vocabulary 256): the embedded ``pydoc_data.topics`` by default, or
``--text_file``; ``--dataset_path`` keeps the original ``load_from_disk`` meaning. The run writes
into ``--output_dir``: ``model.safetensors`` + ``config.json`` in the layout of
:class:`aiether.hf.AIetherGPTForCausalLM` (load it with ``from_pretrained``), ``growth_state.json``
with the full event list, ``layers/`` (the source and new block of each growth) and
``checkpoint-{step}/`` every ``--save_interval`` steps. The plain-PyTorch loop needs no
transformers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from aiether._io import write_atomic, write_json_atomic
from aiether.controller import GrowthController
from aiether.data import (
    TokenStreams,
    dataset_streams,
    embedded_streams,
    random_batch,
    text_file_streams,
)
from aiether.layer_states import LayerStateManager
from aiether.model import AIetherGPT, GPTConfig
from aiether.operators import OPERATORS, GeometricParams, OperatorName
from aiether.param_groups import param_groups
from aiether.persistence import save_growth_state
from aiether.schedule import GrowthAwareLR
from aiether.stack import PRESERVE_MODES, GrowableStack
from aiether.trajectory import TrajectoryTracker
from aiether.trigger import TRIGGER_MODES, GrowthTrigger

STRATEGIES: dict[str, OperatorName] = {
    "GeometricExtrapolator": "geometric",
    "Reference": "reference",
    "Copy": "copy",
    "Random": "random",
}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--schedule takes comma-separated steps, got {text!r}"
        ) from err


def build_parser() -> argparse.ArgumentParser:
    """The CLI (every original flag, then the new ones)."""
    p = argparse.ArgumentParser(prog="aiether-train", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    # the original flags, names and defaults
    a("--output_dir", default="./HF_model_output")
    a("--num_epochs", type=int, default=3)
    a("--batch_size", type=int, default=8)
    a("--lr", type=float, default=5e-4)
    a("--warmup_steps", type=int, default=500)
    a("--weight_decay", type=float, default=0.01)
    a(
        "--block_size",
        type=int,
        default=None,
        help="default: 256, or the model's context if smaller",
    )
    a("--logging_interval", type=int, default=100)
    a("--eval_interval", type=int, default=500)
    a("--evals_per_epoch", type=int, default=None, help="overrides --eval_interval")
    a("--save_interval", type=int, default=None, help="default: 4 × the evaluation interval")
    a("--new_layer_strategy", choices=sorted(STRATEGIES), default="GeometricExtrapolator")
    a("--n_layer", type=int, default=6, help="the final depth (same as --max_layers)")
    a("--n_head", type=int, default=6)
    a("--n_embd", type=int, default=384)
    a("--dropout", type=float, default=0.1)
    a("--bias", type=_bool, default=True)
    a(
        "--dataset_path",
        default=None,
        help="datasets.load_from_disk folder (train/validation input_ids)",
    )
    a("--pg_patience", type=int, default=3)
    a("--pg_threshold", type=float, default=0.01, help="plateau threshold (relative improvement)")
    a("--pg_warmup_steps", type=int, default=400, help="isolated warm-up after each growth")
    a("--pg_history_window", type=int, default=15)
    a("--pg_collect_interval", type=int, default=100)
    a("--beta0", type=float, default=None)
    a("--gamma0", type=float, default=None)
    a("--eta0", type=float, default=None)
    a("--k_subspace", type=int, default=None)
    a("--ell_orth", type=int, default=None)
    a("--tau_crit", type=float, default=None, help="normalised τ̃ threshold (default 0.8)")
    a("--kappa_crit", type=float, default=None, help="normalised κ̃ threshold (default 0.8)")
    a("--wandb_project", default="AIetherResearch")
    a("--wandb_name", default=None)
    a("--wandb_tags", default=None)
    a("--wandb_group", default="ablc")
    # new flags
    a(
        "--text_file",
        default=None,
        help="train on this UTF-8 file (bytes) instead of the embedded corpus",
    )
    a("--operator", choices=OPERATORS, default=None, help="overrides --new_layer_strategy")
    a("--preserve", choices=PRESERVE_MODES, default="zero_out")
    a("--trigger", choices=TRIGGER_MODES, default="geometric+plateau")
    a("--schedule", type=_steps, default=(), help="growth steps for --trigger schedule, e.g. 40,80")
    a("--initial_layers", type=int, default=1)
    a("--max_layers", type=int, default=None, help="the final depth (default --n_layer)")
    a("--max_steps", type=int, default=None, help="overrides --num_epochs")
    a("--seed", type=int, default=0)
    a("--report_to", choices=("none", "wandb"), default="none")
    a("--device", default="cpu")
    return p


def _streams(args: argparse.Namespace) -> TokenStreams:
    if args.dataset_path:
        return dataset_streams(args.dataset_path)
    if args.text_file:
        return text_file_streams(args.text_file)
    return embedded_streams()


def _params(args: argparse.Namespace, operator: OperatorName) -> GeometricParams:
    base = GeometricParams.reference_defaults() if operator == "reference" else GeometricParams()
    given = {
        k: getattr(args, k)
        for k in ("beta0", "gamma0", "eta0", "k_subspace", "ell_orth")
        if getattr(args, k) is not None
    }
    return GeometricParams(**{**base.as_dict(), **given})


@torch.no_grad()
def _evaluate(
    model: AIetherGPT, val: torch.Tensor, batch: int, block: int, batches: int = 8
) -> float:
    gen = torch.Generator().manual_seed(1234)
    was = model.training
    model.eval()
    total = 0.0
    device = next(model.parameters()).device
    for _ in range(batches):
        x, y = random_batch(val, batch, block, gen)
        _, loss = model(x.to(device), y.to(device))
        assert loss is not None
        total += float(loss)
    model.train(was)
    return total / batches


def _hf_config(model: AIetherGPT, stack: GrowableStack, args: argparse.Namespace) -> dict[str, Any]:
    c = model.config
    return {
        "model_type": "aiether_gpt",
        "architectures": ["AIetherGPTForCausalLM"],
        "block_size": c.block_size,
        "vocab_size": c.vocab_size,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "dropout": c.dropout,
        "bias": c.bias,
        "aiether_active_layers": stack.active_slots,
        "aiether_max_layers": stack.max_layers,
        "aiether_preserve": stack.preserve,
        "aiether_slot_order": "top_down",
        "tie_word_embeddings": True,
        "use_cache": False,
    }


def save_model(folder: Path, model: AIetherGPT, args: argparse.Namespace) -> None:
    """``model.safetensors`` and ``config.json`` in the layout of ``AIetherGPTForCausalLM``."""
    stack = model.h
    assert isinstance(stack, GrowableStack)
    tensors = {
        f"transformer.{k}": v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"  # tied to wte
    }
    write_atomic(
        folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"})
    )
    write_json_atomic(folder / "config.json", _hf_config(model, stack, args))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the CLI's training loop; returns a summary (also written as ``summary.json``)."""
    max_layers = args.max_layers if args.max_layers is not None else args.n_layer
    if not 1 <= args.initial_layers < max_layers:
        raise ValueError(
            f"--initial_layers must be in [1, max_layers) = [1, {max_layers}), got {args.initial_layers}"
        )
    operator: OperatorName = args.operator or STRATEGIES[args.new_layer_strategy]
    torch.manual_seed(args.seed)
    data = _streams(args)
    block = args.block_size or 256
    config = GPTConfig(
        block_size=block,
        vocab_size=data.vocab_size,
        n_layer=max_layers,
        n_head=args.n_head,
        n_embd=args.n_embd,
        dropout=args.dropout,
        bias=args.bias,
    )
    device = torch.device(args.device)
    model = AIetherGPT(config, initial_active=args.initial_layers, preserve=args.preserve).to(
        device
    )
    stack = model.h
    assert isinstance(stack, GrowableStack)
    steps_per_epoch = max(len(data.train) // (args.batch_size * block), 1)
    total = int(args.max_steps if args.max_steps is not None else args.num_epochs * steps_per_epoch)
    eval_every = (
        max(steps_per_epoch // args.evals_per_epoch, 1)
        if args.evals_per_epoch
        else args.eval_interval
    )
    save_every = args.save_interval or 4 * eval_every
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr)
    warm = int(args.warmup_steps)

    def base_lambda(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min((t - warm) / max(total - warm, 1), 1.0)))

    needs_tracker = operator in ("geometric", "reference") or args.trigger not in (
        "schedule",
        "plateau",
    )
    tracker = None
    if needs_tracker:
        tracker = TrajectoryTracker(
            stack[stack.active_slots[0]].named_parameters(),
            window=args.pg_history_window,
            interval=args.pg_collect_interval,
        )
    trigger = GrowthTrigger(
        args.trigger,
        tau_crit=args.tau_crit,
        kappa_crit=args.kappa_crit,
        patience=args.pg_patience,
        plateau_threshold=args.pg_threshold,
        schedule=args.schedule,
    )
    gen = torch.Generator().manual_seed(args.seed + 1)
    probe_x, probe_y = random_batch(
        data.val, args.batch_size, block, torch.Generator().manual_seed(99)
    )
    probe_x, probe_y = probe_x.to(device), probe_y.to(device)
    out = Path(args.output_dir)
    controller = GrowthController(
        model,
        opt,
        tracker=tracker,
        trigger=trigger,
        operator=operator,
        isolated_warmup_steps=args.pg_warmup_steps,
        state_transfer="second_moment",
        layer_states=LayerStateManager(out),
        params=_params(args, operator),
        probe=lambda m: m(probe_x, probe_y)[1],
    )
    sched = GrowthAwareLR(opt, base_lambda, controller)
    wandb_run = _wandb(args) if args.report_to == "wandb" else None
    print(
        f"aiether-train: {data.name}, {total} steps, {stack.num_active}→{max_layers} layers, "
        f"operator={operator}, trigger={args.trigger}, preserve={args.preserve}",
        flush=True,
    )
    start = time.perf_counter()
    val_loss = None
    for step in range(total):
        x, y = random_batch(data.train, args.batch_size, block, gen)
        _, loss = model(x.to(device), y.to(device))
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        evaluating = (step + 1) % eval_every == 0
        val_loss = _evaluate(model, data.val, args.batch_size, block) if evaluating else None
        event = controller.step(step, val_loss=val_loss)
        sched.step()
        if event is not None:
            print(
                f"step {step}: grew slot {event.slot} from {event.source} ({event.operator}); probe "
                f"loss {event.probe_loss_before:.6f} -> {event.probe_loss_after:.6f}; "
                f"active {event.active_layers}",
                flush=True,
            )
        if (step + 1) % args.logging_interval == 0 or val_loss is not None:
            line = {
                "step": step + 1,
                "loss": round(float(loss.detach()), 5),
                "active": stack.num_active,
                "lr": opt.param_groups[0]["lr"],
            }
            if val_loss is not None:
                line["val_loss"] = round(val_loss, 5)
            print(json.dumps(line), flush=True)
            if wandb_run is not None:
                wandb_run.log(line, step=step + 1)
        if (step + 1) % save_every == 0 and step + 1 < total:
            ckpt = out / f"checkpoint-{step + 1}"
            save_model(ckpt, model, args)
            save_growth_state(ckpt, controller, sched)
    save_model(out, model, args)
    save_growth_state(out, controller, sched)
    summary = {
        "steps": total,
        "active_layers": stack.active_slots,
        "events": len(controller.events),
        "final_val_loss": _evaluate(model, data.val, args.batch_size, block),
        "wall_s": time.perf_counter() - start,
        "argv": sys.argv,
    }
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "argv"}), flush=True)
    if wandb_run is not None:
        wandb_run.finish()
    return summary


def _wandb(args: argparse.Namespace) -> Any:
    try:
        import wandb  # type: ignore[import-not-found]
    except ImportError as err:
        raise ImportError("--report_to wandb needs the wandb package: pip install wandb") from err
    tags = [t for t in (args.wandb_tags or "").split(",") if t]
    return wandb.init(
        project=args.wandb_project,
        name=args.wandb_name,
        tags=tags,
        group=args.wandb_group,
        config=vars(args),
    )


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except ValueError as err:
        print(f"aiether-train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
