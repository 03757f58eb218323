"""aiether: depth growth at equal training FLOPs, against the static model and the operator controls.

Arms (spec §5; all growth arms grow 1 → L_max, zero-out preservation unless named):

1. ``static_upper``: static L_max for as many steps as the scheduled growth arms take (more
   compute; an upper reference);
2. ``static_budget``: static L_max at the FLOP budget (the baseline every difference is against);
3. ``geometric_trigger``: the geometric operator with the calibrated trigger (τ̃, κ̃ ≥ 0.8 and a
   validation plateau, patience 3);
4. ``geometric``: the geometric operator on the fixed schedule (growths at 20/40/60% of the
   budget), which isolates the operator from the trigger;
5. ``copy``: the source block copied (with zero-out: the operator control for 4);
6. ``gstack``: the source block copied without preservation (G_stack-like duplication);
7. ``zero_init``: the slot's own random init with zero-out (the zero-init growth baseline);
8. ``reference``: the original project's coded rule on the schedule.

The lr is chosen on a selection seed (100, not reported) from a ×3 grid extended until the best
lr is interior: once for the static family (arms 1–2) and once for the growth family (on arm 4;
arms 3–8 use it, so they differ only in operator or trigger). A one-at-a-time β₀/γ₀/η₀ ablation
of arm 4 on the selection seed checks the geometric defaults. Snapshot and metric cost is timed
apart (interleaved with a training step). Results: ``docs/results/aiether/growth.{json,md,png}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from aiether import GeometricParams, TrajectoryTracker
from benchmarks._aiether_growth import Arm, Size, flops_to_reach, gpt_config, run_arm
from benchmarks.harness import (
    common_parser,
    corpus_for_args,
    fixed_lr,
    get_batch,
    interleaved_timing,
    markdown_table,
    mean_std,
    paired_t_interval,
    select_lr,
    setup_run,
    write_results,
)

SELECTION_SEED = 100
ARMS = {
    "static_upper": Arm(
        name="static_upper",
        growth=False,
        upper=True,
        isolates="more compute (the growth arms' step count)",
    ),
    "static_budget": Arm(name="static_budget", growth=False, isolates="the baseline"),
    "geometric_trigger": Arm(
        name="geometric_trigger",
        growth=True,
        trigger="calibrated",
        isolates="the calibrated trigger vs the fixed schedule",
    ),
    "geometric": Arm(name="geometric", growth=True, isolates="growth with the geometric operator"),
    "copy": Arm(
        name="copy", growth=True, operator="copy", isolates="the operator control (copy + zero-out)"
    ),
    "gstack": Arm(
        name="gstack",
        growth=True,
        operator="copy",
        preserve="none",
        isolates="duplication without preservation",
    ),
    "zero_init": Arm(name="zero_init", growth=True, operator="random", isolates="zero-init growth"),
    "reference": Arm(
        name="reference", growth=True, operator="reference", isolates="the original coded rule"
    ),
}
DEFAULT = Size(
    d=64, heads=4, l_max=4, seq=64, batch=16, budget_steps=600, schedule_fracs=(0.2, 0.4, 0.6)
)
QUICK = Size(
    d=32,
    heads=2,
    l_max=2,
    seq=64,
    batch=16,
    budget_steps=150,
    schedule_fracs=(0.4,),
    eval_points=5,
    curve_iters=4,
    final_iters=10,
    warmup_steps=20,
)
ABLATION: tuple[dict[str, Any], ...] = (
    {"beta0": 0.0},
    {"beta0": 0.1},
    {"beta0": 0.5},
    {"gamma0": 0.0},
    {"gamma0": 0.1},
    {"eta0": 0.0},
    {"eta0": 0.1},
)


def _overhead(size: Size, device: torch.device) -> dict[str, Any]:
    """Snapshot and metric cost against a full-depth training step, interleaved."""
    from aiether import AIetherGPT

    torch.manual_seed(0)
    model = AIetherGPT(gpt_config(size), initial_active=size.l_max).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(0, 256, (100_000,), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    tracker = TrajectoryTracker(
        model.h[0].named_parameters(), window=size.tracker_window, interval=1
    )
    for _ in range(size.tracker_window):
        tracker.snapshot()

    def train_step() -> None:
        x, y = get_batch(data, size.batch, size.seq, gen, device)
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def metrics() -> None:
        agg = tracker.aggregate()
        agg.as_floats()

    t = interleaved_timing(
        {"step": train_step, "snapshot": tracker.snapshot, "metrics": metrics},
        warmup=5,
        iters=30,
        device=device,
    )
    per_step = (
        t["snapshot"].median_ms / size.tracker_interval
        + t["metrics"].median_ms / size.trigger_every
    )
    return {
        "step_ms": t["step"].median_ms,
        "snapshot_ms": t["snapshot"].median_ms,
        "metrics_ms": t["metrics"].median_ms,
        "tracker_interval": size.tracker_interval,
        "metrics_every": size.trigger_every,
        "overhead_per_step_ms": per_step,
        "overhead_ratio": per_step / t["step"].median_ms,
    }


def _plot(records: list[dict[str, Any]], arms: list[str]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        runs = [r for r in records if r["arm"] == arm and r.get("phase") == "report"]
        if not runs:
            continue
        n = min(len(r["curve"]) for r in runs)
        xs = [runs[0]["curve"][i]["flops_frac"] for i in range(n)]
        ys = [sum(r["curve"][i]["val_bpb"] for r in runs) / len(runs) for i in range(n)]
        ax.plot(xs, ys, marker=".", label=arm)
    ax.set_xlabel("training FLOPs / budget")
    ax.set_ylabel("validation bits per byte (mean over seeds)")
    ax.set_title("aiether growth at equal FLOPs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default=None, help="comma-separated subset of " + ",".join(ARMS))
    parser.add_argument(
        "--lr", type=float, default=None, help="skip the lr grids: one lr for every arm"
    )
    parser.add_argument("--no-ablation", action="store_true", help="skip the β₀/γ₀/η₀ ablation")
    args = parser.parse_args(argv)
    if args.gpu:
        raise SystemExit("bench_aiether_growth: --gpu sizes are not implemented yet")
    device = setup_run(args)
    size = QUICK if args.quick else DEFAULT
    arms = (
        args.arms.split(",")
        if args.arms
        else (["static_budget", "geometric", "zero_init"] if args.quick else list(ARMS))
    )
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    corpus = corpus_for_args(args)
    records: list[dict[str, Any]] = []

    def run(
        arm: str, lr: float, seed: int, params: GeometricParams | None = None
    ) -> dict[str, Any]:
        r = run_arm(
            ARMS[arm],
            size=size,
            lr=lr,
            seed=seed,
            train=corpus.train,
            val=corpus.val,
            device=device,
            params=params,
        )
        print(
            f"{arm:18s} seed {seed:3d} lr {lr:.3g}: {r['val_bpb']:.4f} bits/byte, {r['steps']} steps, depth {r['final_depth']}, grew at {r['growth_steps']}",
            flush=True,
        )
        return r

    selection: dict[str, dict[str, Any]] = {}
    for family, tuned_arm in (("static", "static_budget"), ("growth", "geometric")):
        members = [a for a in arms if ARMS[a].growth == (family == "growth")]
        if not members:
            continue
        if args.lr is not None or args.quick:
            selection[family] = fixed_lr(args.lr if args.lr is not None else 3e-3)
            continue

        def tune(lr: float, a: str = tuned_arm) -> dict[str, Any]:
            return run(a, lr, SELECTION_SEED)

        grid, selection[family] = select_lr(tune, 3e-3, points=3)
        records.extend({**r, "family": family} for r in grid)
    lr_of = {a: selection["growth" if ARMS[a].growth else "static"]["selected_lr"] for a in arms}

    ablation: list[dict[str, Any]] = []
    if not args.quick and not args.no_ablation and "geometric" in arms:
        for change in ({}, *ABLATION):
            params = dataclasses.replace(GeometricParams(), **change)
            r = run("geometric", lr_of["geometric"], SELECTION_SEED, params)
            r.update(phase="ablation", change=change, params=params.as_dict())
            ablation.append(r)
            records.append(r)

    report: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    for seed in seeds:
        for arm in arms:
            r = run(arm, lr_of[arm], seed)
            r["phase"] = "report"
            report[arm].append(r)
            records.append(r)
    overhead = _overhead(size, device)

    base = "static_budget" if "static_budget" in arms else arms[0]
    rows = []
    for arm in arms:
        vals = [r["val_bpb"] for r in report[arm]]
        m, s = mean_std(vals)
        target = [b["val_bpb"] for b in report[base]]
        # the crossing is read on the curves (same validation windows at every point and arm)
        curve_target = [b["curve"][-1]["val_bpb"] for b in report[base]]
        reach = [
            flops_to_reach(r["curve"], t) for r, t in zip(report[arm], curve_target, strict=True)
        ]
        reach_txt = (
            "never"
            if any(x is None for x in reach)
            else f"{sum(x for x in reach if x is not None) / len(reach):.2f}"
        )
        spikes = [sp["max_rise_50"] for r in report[arm] for sp in r["spikes"]]
        rows.append(
            [
                arm,
                f"{lr_of[arm]:.3g}",
                f"{m:.4f} ± {s:.4f}",
                paired_t_interval(vals, target).fmt(4) if arm != base else "—",
                reach_txt,
                f"{sum(r['train_flops'] for r in report[arm]) / len(seeds) / report[base][0]['budget_flops']:.2f}",
                f"{max(spikes):+.3f}" if spikes else "—",
                f"{sum(r['tokens_per_s'] for r in report[arm]) / len(seeds):,.0f}",
                f"{sum(r['train_s'] for r in report[arm]) / len(seeds):.1f}",
                ARMS[arm].isolates,
            ]
        )
    md = [
        f"Our GPT (d={size.d}, {size.heads} heads, L_max {size.l_max}, growth from 1), sequence {size.seq}, batch {size.batch}, "
        f"{corpus.name} bytes; budget = static-{size.l_max} × {size.budget_steps} steps of training FLOPs; scheduled growths at "
        f"{', '.join(f'{f:.0%}' for f in size.schedule_fracs)} of it; seeds {seeds}; lr per family on seed {SELECTION_SEED}.",
        "",
        markdown_table(
            [
                "arm",
                "lr",
                "val bits/byte (mean ± std)",
                f"− {base} [95% t]",
                f"FLOPs to reach {base}'s final",
                "FLOPs / budget",
                "max probe rise ≤50 steps after growth",
                "train tokens/s",
                "train s",
                "isolates",
            ],
            rows,
        ),
        "",
        "Lower bits/byte is better; a negative difference favours the arm. 'FLOPs to reach' is the budget fraction at which the arm's "
        "validation curve (mean of seeds' interpolated crossings) first reaches the static baseline's value at the budget on the same seed and curve windows; "
        "≤ 0.75 would meet the goal of 25% less compute.",
        "",
        "## Operator and trigger contrasts (paired, same schedule and lr)",
        "",
        markdown_table(["difference", "val bits/byte [95% t]", "excludes 0"], _contrasts(report)),
        "",
        "## lr selection",
        "",
        markdown_table(
            ["family", "grid", "selected", "interior"],
            [
                [
                    f,
                    ", ".join(f"{x:.3g}" for x in s["grid_lrs"]),
                    f"{s['selected_lr']:.3g}",
                    str(s["interior"]),
                ]
                for f, s in selection.items()
            ],
        ),
        "",
        "## Snapshot and metric overhead (interleaved with a full-depth training step)",
        "",
        markdown_table(
            ["step ms", "snapshot ms", "metrics ms", "per step (amortised)", "ratio"],
            [
                [
                    f"{overhead['step_ms']:.2f}",
                    f"{overhead['snapshot_ms']:.3f}",
                    f"{overhead['metrics_ms']:.3f}",
                    f"{overhead['overhead_per_step_ms']:.4f} ms",
                    f"{overhead['overhead_ratio']:.2%}",
                ]
            ],
        ),
        "",
        f"A snapshot every {overhead['tracker_interval']} steps and the metrics every {overhead['metrics_every']} steps (the calibrated trigger's evaluations); the target is ≤ 1%.",
    ]
    if ablation:
        ref = ablation[0]["val_bpb"]
        md += [
            "",
            f"## β₀/γ₀/η₀ ablation (arm geometric, selection seed {SELECTION_SEED}, one change at a time)",
            "",
            markdown_table(
                ["change", "val bits/byte", "− defaults"],
                [
                    [json_change(r["change"]), f"{r['val_bpb']:.4f}", f"{r['val_bpb'] - ref:+.4f}"]
                    for r in ablation
                ],
            ),
        ]
    config = {
        "size": dataclasses.asdict(size),
        "arms": arms,
        "seeds": seeds,
        "selection_seed": SELECTION_SEED,
        "selection": selection,
        "corpus": corpus.name,
        "overhead": overhead,
    }
    path = write_results(
        "aiether",
        "growth",
        config=config,
        records=records,
        markdown="\n".join(md),
        figures={"": _plot(records, arms)},
        out_dir=args.out,
        device=device,
    )
    print(f"wrote {path}")


CONTRASTS = (
    ("geometric", "copy", "the geometric extrapolation vs copying the source"),
    ("geometric", "zero_init", "the geometric extrapolation vs the slot's own random init"),
    ("copy", "zero_init", "copying vs random init"),
    ("reference", "geometric", "the original coded rule vs the corrected one"),
    ("gstack", "copy", "duplication without vs with zero-out preservation"),
    ("geometric_trigger", "geometric", "the calibrated trigger vs the fixed schedule"),
    ("static_upper", "static_budget", "more compute at full depth"),
)


def _contrasts(report: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for a, b, what in CONTRASTS:
        if report.get(a) and report.get(b):
            ci = paired_t_interval(
                [r["val_bpb"] for r in report[a]], [r["val_bpb"] for r in report[b]]
            )
            rows.append(
                [f"{a} − {b} ({what})", ci.fmt(4), "yes" if ci.n > 1 and ci.excludes_zero else "no"]
            )
    return rows


def json_change(change: dict[str, float]) -> str:
    return "defaults" if not change else ", ".join(f"{k} = {v:g}" for k, v in change.items())


if __name__ == "__main__":
    main()
