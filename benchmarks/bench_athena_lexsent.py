"""LexSent on MiniLM: athena's PolyAdapter variants against PEFT, a linear probe and full fine-tuning.

Spec athena §5. The data is LexSent (`benchmarks/_lexsent.py`: sentences built from VADER lexicon
words, half of them negated, test words unseen in training); the model all-MiniLM-L6-v2 with a
mean-pooling head (`benchmarks/_athena_bench.py`). Every method: batch 32, AdamW (no weight
decay), `--steps` steps (150), the lr picked on the validation accuracy of selection seed 100
(never reported) from a 3-point grid that is extended while the best point is at an edge; then
seeds 0, 1, 2 reported on the test split. `poly_lora` and `poly_ia3` are the same computations as
`peft_lora` and `peft_ia3` (same seed → same initial adapter), so they reuse those lrs and must
give the same accuracies.

Arms beyond the method table: `autorank` (AutoRank's GP-EI search over per-module ranks at the
trainable-parameter budget of uniform r 8, each trial a short proxy fine-tune on seed 100 data,
then the found ranks trained like every method) and `poly_lora_freeze` (LoRA with the
progressive freezing scheduler).

Reported per method: test accuracy mean ± std over the seeds, Student-t intervals of paired
differences (same seeds) for the comparisons that isolate each idea, trainable parameters (and %
of all), adapter file size, the median training step time of the runs (indicative only: runs are
sequential; `bench_athena_step` times the variants interleaved).

`--quick`: probe, PEFT LoRA and PolyAdapter LoRA, 30 steps, one seed, 1,000 training sentences,
the grid's middle lr (no selection). The spec's `--gpu` size (20,000 training sentences, 1,000
steps, 5 seeds, AdaLoRA at equal compute) is not implemented: no accelerator was available.

Run: `uv run python -m benchmarks.bench_athena_lexsent [--quick]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import _athena_bench as ab
from benchmarks._lexsent import build_lexsent, config_for, encode, load_tokenizer
from benchmarks.harness import (
    common_parser,
    markdown_table,
    mean_std,
    paired_t_interval,
    progress,
    write_results,
)

SELECTION_SEED = 100
LORA_GRID = (3e-4, 1e-3, 3e-3)
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "probe": (3e-3, 1e-2, 3e-2),
    "full": (3e-5, 1e-4, 3e-4),
    "peft_lora": LORA_GRID,
    "peft_lora_all": LORA_GRID,
    "peft_ia3": (3e-3, 1e-2, 3e-2),
    "poly_lora_ia3": LORA_GRID,
    "poly_moe_k1": LORA_GRID,
    "lora_r42": LORA_GRID,
}
QUICK_METHODS = ("probe", "peft_lora", "poly_lora")
# (a, b, what a − b isolates)
COMPARISONS = [
    ("poly_lora", "peft_lora", "athena LoRA = PEFT LoRA (must be 0)"),
    ("poly_ia3", "peft_ia3", "athena IA³ = PEFT IA³ (must be 0)"),
    ("peft_lora", "probe", "adapting the encoder vs the head alone"),
    ("full", "peft_lora", "full fine-tune vs LoRA"),
    ("peft_lora_all", "peft_lora", "LoRA on every linear layer vs on query, value"),
    ("peft_ia3", "peft_lora", "IA³ vs LoRA"),
    ("poly_lora_ia3", "peft_lora", "adding IA³ to LoRA"),
    ("poly_moe_k1", "lora_r42", "LoRA + MoE (top-1) vs LoRA at the same trainable count"),
    ("poly_moe_k2", "lora_r42", "LoRA + MoE (top-2) vs LoRA at the same trainable count"),
    ("poly_moe_soft", "lora_r42", "LoRA + MoE (soft, all 4) vs LoRA at the same trainable count"),
    ("lora_r42", "peft_lora", "rank 42 vs rank 8"),
    ("autorank", "peft_lora", "AutoRank's ranks vs uniform r 8 at the same parameter budget"),
    ("poly_lora_freeze", "poly_lora", "progressive freezing on vs off"),
]
EXTRA_ARMS = ("autorank", "poly_lora_freeze")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("athena on LexSent/MiniLM: PolyAdapter vs PEFT, probe, full FT")
    parser.add_argument("--steps", type=int, default=None, help="training steps (150; quick 30)")
    parser.add_argument(
        "--methods", default=None, help="comma-separated subset of the methods and arms"
    )
    parser.add_argument("--name", default="lexsent", help="result file name (default lexsent)")
    parser.add_argument(
        "--fixed-lr",
        action="append",
        default=[],
        metavar="METHOD=LR",
        help="use this lr for METHOD instead of selecting it (e.g. a selection from an earlier run)",
    )
    parser.add_argument("--autorank-trials", type=int, default=16)
    parser.add_argument("--autorank-proxy-steps", type=int, default=40)
    return parser.parse_args(argv)


Builder = Callable[[int], tuple[nn.Module, Callable[[Tensor], None] | None, dict[str, Any]]]


def _method_builder(method: str) -> Builder:
    def make(seed: int) -> tuple[nn.Module, Callable[[Tensor], None] | None, dict[str, Any]]:
        return ab.build(method, seed), None, {}

    return make


def _select_lr(
    name: str,
    make: Builder,
    grid: tuple[float, ...],
    splits: dict[str, dict[str, Tensor]],
    steps: int,
    log: list[dict[str, Any]],
) -> float:
    """Best validation accuracy on the selection seed; the grid grows ×3 past an edge optimum."""
    scores: dict[float, float] = {}
    points = sorted(grid)
    for _ in range(4):
        for lr in points:
            if lr in scores:
                continue
            model, hook, _ = make(SELECTION_SEED)
            result = ab.run(model, splits, steps=steps, lr=lr, seed=SELECTION_SEED, on_step=hook)
            scores[lr] = result.val_acc
            log.append({"method": name, "lr": lr, "val_acc": result.val_acc, "selection": True})
        ordered = sorted(scores)
        best = max(ordered, key=lambda lr: (scores[lr], -lr))
        if best == ordered[0]:
            points = [ordered[0] / 3]
        elif best == ordered[-1]:
            points = [ordered[-1] * 3]
        else:
            return best
    raise SystemExit(f"{name}: the best lr stays at the grid edge after 4 extensions: {scores}")


def _autorank_builder(
    splits: dict[str, dict[str, Tensor]], args: argparse.Namespace, lr: float, info: dict[str, Any]
) -> Builder:
    """Search ranks once (selection seed), then build the found configuration per seed."""
    from athena import PolyAdapterConfig, get_athena_model
    from athena.autorank import AutoRank, ProxyFineTune

    base_config = PolyAdapterConfig(
        r=8, lora_alpha=8, target_modules=ab.LORA_TARGETS, modules_to_save=("classifier",)
    )
    probe_model = ab.fresh_classifier(SELECTION_SEED)
    budget = 0
    from athena.matching import inspect_targets

    shapes = inspect_targets(probe_model, base_config).shapes
    budget = sum(8 * (i + o) for i, o in shapes.values())
    train_b = ab.batches(splits["train"], 32, args.autorank_proxy_steps, SELECTION_SEED)
    val = splits["val"]
    val_b = [
        {k: v[s : s + 256] for k, v in val.items()} for s in range(0, val["labels"].shape[0], 256)
    ]
    objective = ProxyFineTune(
        train_b, val_b, steps=args.autorank_proxy_steps, lr=lr, seed=SELECTION_SEED
    )
    start = time.perf_counter()
    search = AutoRank(
        probe_model,
        rank_budget=10**9,
        param_budget=budget,
        rank_candidates=(0, 2, 4, 8, 16),
        num_trials=args.autorank_trials,
        patience=args.autorank_trials,
        grouping="layer",
        base_config=base_config,
        objective=objective,
        seed=SELECTION_SEED,
    )
    result = search.search()
    config = search.apply(result, base_config)
    info.update(
        rank_map=result.rank_map,
        param_budget=budget,
        budget_used=result.budget_used,
        proxy_steps=result.compute_steps,
        trials=len(result.trials),
        search_seconds=time.perf_counter() - start,
        best_proxy_value=result.best_value,
    )

    def make(seed: int) -> tuple[nn.Module, Callable[[Tensor], None] | None, dict[str, Any]]:
        model = ab.fresh_classifier(seed)
        torch.manual_seed(seed + 10_000)
        return get_athena_model(model, config), None, {}

    return make


def _freeze_builder(steps: int) -> Builder:
    from athena.freezing import ProgressiveFreezingScheduler

    def make(seed: int) -> tuple[nn.Module, Callable[[Tensor], None] | None, dict[str, Any]]:
        model = ab.build("poly_lora", seed)
        scheduler = ProgressiveFreezingScheduler(
            model, window_size=10, min_steps=max(steps // 5, 10), criterion="relative"
        )
        state: dict[str, Any] = {"scheduler": scheduler}

        def hook(loss: Tensor) -> None:
            scheduler.step(loss)

        return model, hook, state

    return make


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.gpu:
        raise SystemExit(
            "--gpu (20,000 sentences, 1,000 steps, 5 seeds, AdaLoRA) is not implemented yet: "
            "this benchmark runs on the CPU only"
        )
    steps = args.steps or (30 if args.quick else 150)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    tokenizer = load_tokenizer()
    data = build_lexsent(tokenizer, config_for(quick=args.quick, gpu=args.gpu))
    splits = {name: encode(data.split(name), tokenizer) for name in ("train", "val", "test")}
    every = [*ab.METHODS, *EXTRA_ARMS]
    methods = (
        args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else every)
    )
    unknown = [m for m in methods if m not in every]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {every}")

    selected: dict[str, float] = {}
    for item in args.fixed_lr:
        name, _, value = item.partition("=")
        selected[name] = float(value)
    records: list[dict[str, Any]] = []
    arm_info: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    def lr_for(source: str) -> float:
        """The selected lr of `source` (selected on first use; the grid's middle with --quick)."""
        if source not in selected:
            grid = LR_GRIDS.get(source, LORA_GRID)
            selected[source] = (
                grid[1]
                if args.quick
                else _select_lr(source, _method_builder(source), grid, splits, steps, records)
            )
        return selected[source]

    for method in progress(methods, desc="methods", disable=args.no_progress):
        info: dict[str, Any] = {}
        if method == "autorank":
            lr = lr_for("peft_lora")
            make = _autorank_builder(splits, args, lr, info)
        elif method == "poly_lora_freeze":
            lr = lr_for("peft_lora")
            make = _freeze_builder(steps)
        else:
            make = _method_builder(method)
            lr = lr_for(ab.SAME_AS.get(method, ab.SHARED_LR.get(method, method)))
        print(f"{method}: lr {lr:g}", flush=True)
        for seed in seeds:
            model, hook, state = make(seed)
            trainable, total = ab.count_parameters(model)
            result = ab.run(model, splits, steps=steps, lr=lr, seed=seed, on_step=hook)
            record: dict[str, Any] = {
                "method": method,
                "seed": seed,
                "lr": lr,
                "test_acc": result.test_acc,
                "val_acc": result.val_acc,
                "final_loss": result.final_loss,
                "median_step_ms": result.median_step_ms,
                "trainable": trainable,
                "total": total,
            }
            scheduler = state.get("scheduler")
            if scheduler is not None:
                record["frozen_prefix_depth"] = scheduler.frozen_prefix_depth
                record["freeze_events"] = [
                    {"step": e.step, "kind": e.kind, "group": e.group} for e in scheduler.events
                ]
            if seed == seeds[0]:
                record["adapter_bytes"] = ab.adapter_bytes(model)
            records.append(record)
        if info:
            arm_info[method] = info
        done = methods[: methods.index(method) + 1]
        # written after every method, so an interrupted run keeps what it measured
        folder, markdown = _write(
            args, records, done, seeds, steps, data, selected, arm_info, started
        )
    print(markdown)
    print(f"results in {folder}")


def _write(
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    methods: list[str],
    seeds: list[int],
    steps: int,
    data: Any,
    selected: dict[str, float],
    arm_info: dict[str, dict[str, Any]],
    started: float,
) -> tuple[Any, str]:
    markdown = _report(records, methods, seeds, steps, data.describe(), arm_info)
    config = {
        "steps": steps,
        "seeds": seeds,
        "selection_seed": SELECTION_SEED,
        "batch_size": 32,
        "lr_grids": {k: list(v) for k, v in LR_GRIDS.items()},
        "selected_lr": selected,
        "methods": methods,
        "requested_methods": args.methods,
        "data": data.describe(),
        "arms": arm_info,
        "seconds": time.perf_counter() - started,
        "quick": args.quick,
    }
    folder = write_results(
        "athena", args.name, config=config, records=records, markdown=markdown, out_dir=args.out
    )
    return folder, markdown


def _report(
    records: list[dict[str, Any]],
    methods: list[str],
    seeds: list[int],
    steps: int,
    described: dict[str, Any],
    arms: dict[str, dict[str, Any]],
) -> str:
    runs = [r for r in records if not r.get("selection")]
    by = {m: [r for r in runs if r["method"] == m] for m in methods}
    rows = []
    for m in methods:
        rs = by[m]
        acc = [100 * r["test_acc"] for r in rs]
        mean, std = mean_std(acc)
        first = rs[0]
        rows.append(
            [
                m,
                f"{first['lr']:.0e}",
                f"{mean:.2f} ± {std:.2f}",
                f"{first['trainable']:,d} ({100 * first['trainable'] / first['total']:.2f}%)",
                f"{first['adapter_bytes'] / 1024:.1f} KiB",
                f"{sorted(r['median_step_ms'] for r in rs)[len(rs) // 2]:.0f}",
            ]
        )
    text = (
        f"LexSent ({described['sentences']['train']['total']} training sentences, test words "
        f"unseen), all-MiniLM-L6-v2 + mean-pooling head, {steps} AdamW steps of batch 32, lr "
        f"selected on seed {SELECTION_SEED}'s validation accuracy, seeds {seeds} reported.\n\n"
    )
    text += markdown_table(
        ["method", "lr", "test acc % (mean ± std)", "trainable", "adapter file", "step ms"], rows
    )
    pairs = []
    for a, b, what in COMPARISONS:
        if a in by and b in by and len(by[a]) == len(by[b]):
            xa = [100 * r["test_acc"] for r in sorted(by[a], key=lambda r: r["seed"])]
            xb = [100 * r["test_acc"] for r in sorted(by[b], key=lambda r: r["seed"])]
            iv = paired_t_interval(xa, xb)
            pairs.append(
                [f"{a} − {b}", what, iv.fmt(2), "yes" if iv.n > 1 and iv.excludes_zero else "no"]
            )
    if pairs:
        text += "\n\n## Paired differences (test accuracy, percentage points)\n\n"
        text += markdown_table(
            ["difference", "isolates", "mean [95% t-interval]", "excludes 0"], pairs
        )
    if "autorank" in arms:
        info = arms["autorank"]
        text += (
            f"\n\nAutoRank: {info['trials']} trials of {info['proxy_steps'] // max(info['trials'], 1)}"
            f" proxy steps ({info['proxy_steps']} steps, {info['search_seconds']:.0f} s), budget "
            f"{info['budget_used']['params']:,d} of {info['param_budget']:,d} LoRA parameters; "
            f"ranks: {info['rank_map']}."
        )
    frozen = [r for r in runs if "frozen_prefix_depth" in r]
    if frozen:
        text += (
            "\n\nFreezing: final frozen prefix depth per seed "
            + ", ".join(str(r["frozen_prefix_depth"]) for r in frozen)
            + "."
        )
    return text + "\n"


if __name__ == "__main__":
    main()
