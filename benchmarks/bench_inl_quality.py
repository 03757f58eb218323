"""INL vs FFN at matched non-embedding parameters on Shakespeare bytes (inl-llm spec §5 (c)).

Every arm is an ``INLForCausalLM`` (vocabulary 256, full embeddings, untied head, RMSNorm, RoPE,
SwiGLU, no dropout, halting off); the transformer baseline is the same model with its INL
sub-layers removed (``benchmarks/_inl_lm.py``: ``INLLLMConfig`` has no switch for that). Arms:

* ``transformer``: attention + SwiGLU FFN of width 4d — the reference shape;
* ``inl_between``: hierarchical INL between attention and FFN, one shared controller (the model
  default), FFN narrowed to match the baseline's non-embedding parameters;
* ``inl_replace_ffn``: INL instead of the FFN, width raised (then depth, one layer at a time, when
  no width is within 2%) to match;
* ``inl_between_t1``: ``inl_between`` with T = 1 (isolates the iteration);
* ``inl_full``: the full variant (v_cand term, sparse excitation), FFN narrowed;
* ``inl_between_layerctl``: ``inl_between`` with one controller per layer, FFN narrowed.

Non-embedding parameters (attention + INL + FFN + norms of ``num_parameters_by_component``) are
matched within 2%; embedding and head are reported. Each arm gets a 3-point lr grid (×3 around the
centre) on a selection seed (100) that is not reported, extended by one ×3 step on the side of an
edge optimum until the optimum is interior (``--max-extend``); the reported seeds 0..n−1 then run
at the selected lr with the same data order in every arm. AdamW (0.9, 0.95), no weight decay,
clip 1, 10% warm-up then cosine to 0.1; equal tokens for all arms. Validation: fixed windows of the
validation works, bits/byte. Paired differences arm − transformer (by seed) get Student-t 95%
intervals. FLOPs/token: ``FlopCounterMode`` on one forward and one forward+backward batch.
tokens/s: one training step per arm timed interleaved (A B C …, warm-up discarded, medians) after
all training; the throughput of the training runs themselves is recorded too.

    uv run python -m benchmarks.bench_inl_quality             # default (CPU, ≈ 5–10 min quiet)
    uv run python -m benchmarks.bench_inl_quality --quick     # ≈ 1 min smoke run (pydoc)
    uv run python -m benchmarks.bench_inl_quality --gpu       # d 512, 8 layers, 5 seeds
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from benchmarks._inl_lm import (
    BASELINE,
    Arm,
    RunSpec,
    Shape,
    Trainer,
    arm_config,
    batch_for_timing,
    build_lm,
    common_config,
    flops_per_token,
    match_arm,
    publish,
    train_step_fn,
)
from benchmarks.harness import (
    common_parser,
    corpus_for_args,
    interleaved_timing,
    markdown_table,
    mean_std,
    paired_t_interval,
    seed_everything,
    setup_run,
    t_interval,
)
from inl_llm.configuration_inl import INLLLMConfig

ARMS: dict[str, Arm] = {
    "transformer": BASELINE,
    "inl_between": Arm(name="inl_between"),
    "inl_replace_ffn": Arm(name="inl_replace_ffn", placement="replace_ffn", match="width"),
    "inl_between_t1": Arm(name="inl_between_t1", num_iterations=1),
    "inl_full": Arm(name="inl_full", variant="full"),
    "inl_between_layerctl": Arm(name="inl_between_layerctl", shared_controllers=False),
}
QUICK_ARMS = ("transformer", "inl_between")
# comparisons besides "arm − transformer": the iteration, the v_cand term, the shared controller
EXTRA_PAIRS = (
    ("inl_between", "inl_between_t1"),
    ("inl_full", "inl_between"),
    ("inl_between_layerctl", "inl_between"),
)
SELECTION_SEED = 100


def _verdict(ci: Any, arm: str, ref: str) -> str:
    if ci.n < 2:
        return "n/a (one seed)"
    if ci.hi < 0:
        return f"{arm} better"
    if ci.lo > 0:
        return f"{arm} worse"
    return "no significant difference"


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--arms", default=None, help=f"comma-separated subset of {list(ARMS)}")
    parser.add_argument("--selection-seed", type=int, default=SELECTION_SEED)
    parser.add_argument("--max-extend", type=int, default=None, help="grid extensions per arm")
    parser.add_argument("--lr-centre", type=float, default=None, help="centre of the lr grid")
    parser.add_argument("--lr", type=float, default=None, help="fixed lr for every arm (no grid)")
    args = parser.parse_args(argv)
    device = setup_run(args)
    corpus = corpus_for_args(args)
    if args.gpu:
        shape = Shape(d_model=512, num_layers=8, num_heads=8, num_iterations=5, seq_len=512)
        spec = RunSpec(steps=2000, batch=32, seq_len=512, val_batches=16)
        seeds, centre, max_extend, arms = 5, 1e-3, 3, list(ARMS)
        warmup, iters = 5, 20
    elif args.quick:
        shape = Shape(d_model=64, num_layers=2, num_heads=4, num_iterations=3, seq_len=64)
        spec = RunSpec(steps=100, batch=16, seq_len=64, val_batches=4)
        seeds, centre, max_extend, arms = 1, 3e-3, 1, list(QUICK_ARMS)
        warmup, iters = 2, 5
    else:
        shape = Shape(d_model=64, num_layers=2, num_heads=4, num_iterations=3, seq_len=64)
        spec = RunSpec(steps=300, batch=16, seq_len=64, val_batches=16)
        seeds, centre, max_extend, arms = 3, 3e-3, 3, list(ARMS)
        warmup, iters = 5, 20
    if args.steps:
        spec = dataclasses.replace(spec, steps=args.steps)
    seeds = args.seeds or seeds
    centre = args.lr_centre or centre
    max_extend = max_extend if args.max_extend is None else args.max_extend
    if args.arms:
        arms = args.arms.split(",")
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise SystemExit(f"unknown arms {unknown}; choose from {list(ARMS)}")
    if "transformer" not in arms:
        arms.insert(0, "transformer")
    report_seeds = list(range(seeds))
    if args.lr is None and args.selection_seed in report_seeds:
        raise SystemExit(f"--selection-seed {args.selection_seed} is among the reported seeds")
    trainer = Trainer(corpus=corpus, spec=spec, device=device, progress=not args.no_progress)
    t_start = time.perf_counter()

    configs: dict[str, INLLLMConfig] = {}
    matching: dict[str, dict[str, Any]] = {}
    counts: dict[str, dict[str, int]] = {}
    selection: dict[str, dict[str, Any]] = {}
    final: dict[str, list[dict[str, Any]]] = {}
    records: list[dict[str, Any]] = []
    for name in arms:
        arm = ARMS[name]
        cfg, how = match_arm(shape, arm)
        if not how["within_tolerance"]:
            raise SystemExit(f"{name}: no configuration within 2% of the baseline: {how}")
        configs[name], matching[name] = cfg, how
        counts[name] = build_lm(cfg, inl=arm.inl).counts()
        print(f"{name}: {arm_config(cfg, arm)}; parameters {counts[name]}", flush=True)

        tuning, selection[name] = trainer.choose_lr(
            cfg,
            arm,
            fixed=args.lr,
            centre=centre,
            max_extend=max_extend,
            selection_seed=args.selection_seed,
        )
        records += tuning
        final[name] = []
        for seed in report_seeds:
            _, rec = trainer.run(cfg, arm, selection[name]["selected_lr"], seed)
            rec["phase"] = "report"
            print(f"{name} seed {seed}: val {rec['val_bpb']:.4f} bits/byte", flush=True)
            final[name].append(rec)
            records.append(rec)

    # FLOPs per token and interleaved training-step throughput on one fixed batch.
    x, y = batch_for_timing(corpus, spec, device)
    flops, steps_fn = {}, {}
    for name in arms:
        seed_everything(0)
        model = build_lm(configs[name], inl=ARMS[name].inl).to(device)
        flops[name] = flops_per_token(model, x, y)
        steps_fn[name] = train_step_fn(model, selection[name]["selected_lr"], x, y, spec.clip)
    timing = interleaved_timing(steps_fn, warmup=warmup, iters=iters, device=device)
    tokens_per_step = spec.batch * spec.seq_len
    wall = time.perf_counter() - t_start

    summary: dict[str, Any] = {}
    rows, param_rows, curve_rows = [], [], []
    base_ms = timing["transformer"].median_ms
    for name in arms:
        vals = [float(r["val_bpb"]) for r in final[name]]
        m, s = mean_std(vals)
        ci = t_interval(vals)
        tps = tokens_per_step / (timing[name].median_ms / 1e3)
        run_tps = [float(r["run_tokens_per_s"]) for r in final[name]]
        summary[name] = {
            **selection[name],
            "per_seed_bpb": vals,
            "seeds": report_seeds,
            "mean_bpb": m,
            "std_bpb": s,
            "t_interval_bpb": ci.as_dict(),
            "tokens_per_s_interleaved": tps,
            "step_ms_median": timing[name].median_ms,
            "step_ms_q1_q3": [timing[name].q1_ms, timing[name].q3_ms],
            "step_time_ratio_vs_transformer": timing[name].median_ms / base_ms,
            "step_samples_us": timing[name].samples_us(),
            "tokens_per_s_runs_mean": sum(run_tps) / len(run_tps),
            "flops_per_token": flops[name],
            "parameters": counts[name],
            "matching": matching[name],
            "model": arm_config(configs[name], ARMS[name]),
        }
        interior = {True: "yes", False: "**no (edge)**", None: "not tuned"}[
            selection[name]["interior"]
        ]
        rows.append(
            [
                name,
                f"{selection[name]['selected_lr']:.3g}",
                interior,
                f"{m:.4f} ± {s:.4f}",
                len(vals),
                f"{tps:,.0f}",
                f"{timing[name].median_ms / base_ms:.2f}",
                f"{summary[name]['tokens_per_s_runs_mean']:,.0f}",
                f"{flops[name]['forward'] / 1e6:.3f}",
                f"{flops[name]['train'] / 1e6:.3f}",
            ]
        )
        c, cfg = counts[name], configs[name]
        param_rows.append(
            [
                name,
                cfg.d_model,
                cfg.num_layers,
                "—"
                if cfg.inl_placement == "replace_ffn" and ARMS[name].inl
                else cfg.feedforward_dim,
                cfg.num_iterations_per_layer if ARMS[name].inl else "—",
                "shared"
                if cfg.use_shared_controllers and ARMS[name].inl
                else "per layer"
                if ARMS[name].inl
                else "—",
                c["attention"],
                c["inl_controller"],
                c["inl_other"],
                c["ffn"],
                c["norms"],
                c["non_embedding"],
                f"{100 * matching[name]['relative_mismatch']:+.2f}%",
                c["embedding"],
                c["lm_head"],
            ]
        )
        if args.lr is None:
            curve_rows.append(
                [
                    name,
                    ", ".join(
                        f"{lr:.3g}: {v:.4f}"
                        for lr, v in zip(
                            selection[name]["grid_lrs"],
                            selection[name]["grid_val_bpb"],
                            strict=True,
                        )
                    ),
                    ", ".join(f"{e:.3g}" for e in selection[name]["extensions"]) or "none",
                ]
            )

    pairs = [(a, "transformer") for a in arms if a != "transformer"]
    pairs += [(a, b) for a, b in EXTRA_PAIRS if a in arms and b in arms]
    diffs: list[dict[str, Any]] = []
    diff_rows = []
    for a, b in pairs:
        va = [float(r["val_bpb"]) for r in final[a]]
        vb = [float(r["val_bpb"]) for r in final[b]]
        ci = paired_t_interval(va, vb)
        diffs.append(
            {
                "arm": a,
                "reference": b,
                "seeds": report_seeds,
                "per_seed_diff": [p - q for p, q in zip(va, vb, strict=True)],
                **ci.as_dict(),
            }
        )
        interval = "n/a" if ci.n < 2 else f"[{ci.lo:+.4f}, {ci.hi:+.4f}]"
        diff_rows.append([a, b, f"{ci.mean:+.4f}", interval, ci.n, _verdict(ci, a, b)])
    not_better = [
        d["arm"]
        for d in diffs
        if d["reference"] == "transformer" and not (d["n"] >= 2 and d["hi"] < 0)
    ]

    if args.lr is None:
        protocol = (
            f"lr grid {', '.join(f'{lr:.3g}' for lr in [centre / 3, centre, centre * 3])} per arm "
            f"on selection seed {args.selection_seed} (not reported), extended by ×3 at an edge "
            f"optimum (at most {max_extend} times); the selected lr then runs on seeds "
            f"{report_seeds}."
        )
    else:
        protocol = f"fixed lr {args.lr:g} for every arm (no grid); seeds {report_seeds}."
    md = (
        f"Corpus {corpus.name}, byte-level. Reference shape d {shape.d_model}, {shape.num_layers} "
        f"layers, {shape.num_heads} heads, SwiGLU FFN {shape.ffn_ratio}d, T = "
        f"{shape.num_iterations}; sequence {spec.seq_len}, batch {spec.batch}, {spec.steps} steps "
        f"({spec.steps * tokens_per_step:,} tokens per run, equal for all arms). AdamW (0.9, 0.95), "
        f"no weight decay, clip {spec.clip}, 10% warm-up + cosine to 0.1. {protocol} Validation: "
        f"{spec.val_batches} fixed batches of {spec.val_batch} × {spec.seq_len} bytes. "
        f"Wall time of this invocation {wall / 60:.1f} min.\n\n"
        "## Parameters (non-embedding = attention + INL + FFN + norms; matched within 2%)\n\n"
        + markdown_table(
            [
                "arm",
                "d",
                "layers",
                "FFN width",
                "T",
                "controller",
                "attention",
                "inl_controller",
                "inl_other",
                "ffn",
                "norms",
                "non-embedding",
                "vs baseline",
                "embedding",
                "lm_head",
            ],
            param_rows,
        )
        + "\n## Validation bits/byte at the selected lr (lower is better)\n\n"
        + markdown_table(
            [
                "arm",
                "lr",
                "interior",
                "val bits/byte mean ± std",
                "n",
                "tokens/s (interleaved)",
                "step time / transformer",
                "tokens/s (runs)",
                "fwd MFLOP/token",
                "fwd+bwd MFLOP/token",
            ],
            rows,
        )
        + (
            f"\ntokens/s (interleaved): one training step (forward, backward, clip, AdamW) per arm "
            f"on one fixed batch, {warmup} warm-up and {iters} measured rounds, A B C … order, "
            "median; tokens/s (runs): the reported training runs, one after another on this "
            "machine (affected by other load). FLOPs: torch FlopCounterMode (matrix products and "
            "attention; elementwise work not counted).\n"
        )
        + (
            f"\n## lr grid on selection seed {args.selection_seed} (lr: val bits/byte)\n\n"
            + markdown_table(["arm", "lr: val bits/byte", "extensions"], curve_rows)
            if curve_rows
            else ""
        )
        + "\n## Paired differences (arm − reference, by seed; Student-t 95%, n − 1 df)\n\n"
        + markdown_table(
            ["arm", "reference", "mean diff bits/byte", "95% t-interval", "n", "verdict"],
            diff_rows,
        )
        + "\n"
        + (
            "INL is no better than the FFN baseline (interval not below 0) for: "
            + (", ".join(not_better) if not_better else "none of the INL arms")
            + ".\n"
        )
    )
    config = {
        **common_config(args, corpus, shape, spec, report_seeds),
        "arms": arms,
        "selection_seed": args.selection_seed if args.lr is None else None,
        "lr_centre": centre,
        "fixed_lr": args.lr,
        "max_extend": max_extend,
        "timing": {"warmup": warmup, "iters": iters, "tokens_per_step": tokens_per_step},
        "wall_seconds": wall,
        "summary": summary,
        "paired_differences": diffs,
        "inl_no_better_than_transformer": not_better,
    }
    publish(
        args,
        "quality",
        config=config,
        records=records,
        markdown=md,
        figures=_figures(arms, summary, records, args.lr is None, args.selection_seed),
        device=device,
    )


def _figures(
    arms: list[str],
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    tuned: bool,
    selection_seed: int,
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if tuned else 1, figsize=(12 if tuned else 6.5, 4.2))
    ax = axes[0] if tuned else axes
    for i, name in enumerate(arms):
        s = summary[name]
        ci = s["t_interval_bpb"]
        vals = s["per_seed_bpb"]
        if ci["n"] >= 2 and math.isfinite(ci["lo"]):
            ax.errorbar(
                [i],
                [ci["mean"]],
                yerr=[[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]],
                fmt="o",
                capsize=4,
                color="C0",
            )
        ax.plot([i] * len(vals), vals, "x", color="C1", ms=5)
    ax.plot([], [], "o", color="C0", label="mean, 95% t-interval")
    ax.plot([], [], "x", color="C1", label="seeds")
    ax.set_xticks(range(len(arms)), arms, rotation=25, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(arms) - 0.5)
    ax.set_title("Validation bits/byte at each arm's selected lr")
    ax.set_xlabel("arm")
    ax.set_ylabel("validation bits/byte")
    ax.legend(fontsize=7)
    if tuned:
        ax2 = axes[1]
        for name in arms:
            pts = sorted(
                (r["lr"], r["val_bpb"])
                for r in records
                if r["arm"] == name and r.get("phase") == "tune"
            )
            (line,) = ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=name)
            sel = summary[name]["selected_lr"]
            ax2.plot([sel], [dict(pts)[sel]], "*", ms=10, color=line.get_color())
        ax2.set_xscale("log")
        ax2.set_title(f"lr grid on selection seed {selection_seed} (★ selected)")
        ax2.set_xlabel("AdamW learning rate")
        ax2.set_ylabel("validation bits/byte")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return {"": fig}


if __name__ == "__main__":
    main()
