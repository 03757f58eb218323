"""INL per-token halting: iterations saved vs change in validation bits/byte (inl-llm spec §5 (b)).

A byte-level ``INLForCausalLM`` of the (c) default size (d 64, 2 layers, 4 heads, INL between
attention and a narrowed SwiGLU FFN, one shared controller, full embeddings; see
``benchmarks/_inl_lm.py``) is trained with halting off, at T = 8 rather than (c)'s T = 3: halting
can only save iterations when tokens converge before T, and with T = 3 the frontier would have
only three points (1, 2 or 3 steps). The result also tabulates the relative step per iteration
(the quantity compared with halt_eps), which shows whether tokens converge within T at all. The trained
weights are then loaded into models with ``halting="threshold"`` at halt_eps ∈ {1e-3, 3e-3, 1e-2,
3e-2, 1e-1} and ``min_iterations`` ∈ {1, 2} (a fresh ``INLForCausalLM`` per setting, then
``load_state_dict``: the layer config is frozen). A second model is trained with halting on
(``--train-halt-eps``, min_iterations 1) and evaluated at its own setting and with halting off.

Per setting: mean INL iterations per token (over layers and real tokens; fraction saved = 1 −
mean/T), validation bits/byte on fixed windows of the validation split and its change vs halting
off (paired by seed: same weights, same windows; Student-t 95% interval over seeds), the eval
forward time of one validation batch, timed interleaved over all settings (A B C …, warm-up
discarded, medians) and as a ratio to halting off, and the INL share of that forward time (wall
time inside the INL sub-layers, forward hooks, over the whole forward). Control: the same weights
with every INL sub-layer removed (all iterations saved). The target of the issue
is ≥ 30% of the iterations saved at ≤ 1% more bits/byte (relative); the table is the measured
frontier either way. lr: a 3-point grid (×3) per trained arm on selection seed 100 (not reported),
extended at an edge optimum; ``--quick`` and ``--lr`` use one fixed lr.

    uv run python -m benchmarks.bench_inl_halting             # default (CPU, Shakespeare, 3 seeds)
    uv run python -m benchmarks.bench_inl_halting --quick     # ≈ 1 min smoke run (pydoc, 1 seed)
    uv run python -m benchmarks.bench_inl_halting --gpu       # d 512, 8 layers, 5 seeds
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from benchmarks._inl_lm import (
    Arm,
    ByteLM,
    INLTimer,
    RunSpec,
    Shape,
    Trainer,
    arm_config,
    build_lm,
    common_config,
    evaluate,
    match_arm,
    publish,
    sync,
)
from benchmarks.harness import (
    common_parser,
    corpus_for_args,
    get_batch,
    interleaved_timing,
    markdown_table,
    mean_std,
    setup_run,
    t_interval,
)
from inl_llm.modeling_inl import INLDecoderLayer

ARM = Arm(name="inl_between")
HALT_EPS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
MIN_ITERATIONS = (1, 2)
SELECTION_SEED = 100
TARGET_SAVED, TARGET_LOSS = 0.30, 0.01

Setting = tuple[float | None, int]  # (halt_eps or None for off, min_iterations)
REMOVED: Setting = (None, 0)  # the control: INL sub-layers removed from the trained model


def _label(s: Setting) -> str:
    if s == REMOVED:
        return "removed"
    return "off" if s[0] is None else f"{s[0]:g}/min{s[1]}"


def _variant(model: ByteLM, shape: Shape, setting: Setting, device: torch.device) -> ByteLM:
    """The trained weights in a model built with another halting setting; ``REMOVED``: the same
    weights with every INL sub-layer removed (zero update, the "100% saved" control)."""
    if setting == REMOVED:
        cfg, _ = match_arm(shape, ARM)
        other = build_lm(cfg, inl=False).to(device)
        state = {k: v for k, v in model.state_dict().items() if k in other.state_dict()}
        other.load_state_dict(state)
        return other.eval()
    cfg, _ = match_arm(shape, ARM, halt_eps=setting[0], min_iterations=setting[1])
    other = build_lm(cfg).to(device)
    other.load_state_dict(model.state_dict())
    return other.eval()


@torch.no_grad()
def _step_profile(model: ByteLM, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer and iteration t = 1..T: the 10/50/90% quantiles over tokens of the relative step
    ‖x_t − x_{t−1}‖ / (‖x₀‖ + 1e-6) that halting compares with halt_eps (fixed-T path)."""
    captured: list[tuple[nn.Module, tuple[Any, ...], dict[str, Any]]] = []

    def grab(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((module, args, kwargs))

    layers = [cast(INLDecoderLayer, layer).inl for layer in model.lm.model.layers]
    hooks = [inl.register_forward_pre_hook(grab, with_kwargs=True) for inl in layers]
    model(x)
    for h in hooks:
        h.remove()
    out = []
    q = torch.tensor([0.1, 0.5, 0.9], device=x.device)
    for i, (module, args, kwargs) in enumerate(captured):
        _, stats = module(
            args[0], args[1], mask=kwargs.get("mask"), return_stats=True, return_trajectory=True
        )
        traj = stats.trajectory
        assert traj is not None
        num = torch.linalg.vector_norm(traj[1:] - traj[:-1], dim=-1)
        den = torch.linalg.vector_norm(traj[0], dim=-1) + 1e-6
        quant = torch.quantile((num / den).flatten(1).float(), q, dim=1)
        out.append(
            {
                "layer": i,
                "q10": quant[0].tolist(),
                "median": quant[1].tolist(),
                "q90": quant[2].tolist(),
            }
        )
    return out


def _inl_share(model: ByteLM, x: torch.Tensor, device: torch.device, calls: int) -> float:
    """Median over ``calls`` forwards of (time inside INL sub-layers) / (forward time)."""
    timer = INLTimer(model, device)
    shares = []
    with torch.no_grad():
        for _ in range(calls):
            timer.seconds = 0.0
            sync(device)
            t0 = time.perf_counter()
            model(x)
            sync(device)
            shares.append(timer.seconds / (time.perf_counter() - t0))
    timer.remove()
    return statistics.median(shares)


def _measure(
    model: ByteLM,
    settings: list[Setting],
    shape: Shape,
    corpus: Any,
    spec: RunSpec,
    device: torch.device,
    timing: tuple[int, int],
) -> dict[Setting, dict[str, Any]]:
    """Evaluate ``model`` at every setting: loss, iterations, interleaved forward time, INL share."""
    variants = {s: _variant(model, shape, s, device) for s in settings}
    out = {s: evaluate(m, corpus.val, spec, device) for s, m in variants.items()}
    x, _ = get_batch(corpus.val, spec.val_batch, spec.seq_len, torch.Generator().manual_seed(7))
    x = x.to(device)

    def forward(m: ByteLM) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad():
                return m(x)

        return call

    times = interleaved_timing(
        {_label(s): forward(m) for s, m in variants.items()},
        warmup=timing[0],
        iters=timing[1],
        device=device,
    )
    for s, m in variants.items():
        t = times[_label(s)]
        out[s].update(
            forward_ms_median=t.median_ms,
            forward_ms_q1_q3=[t.q1_ms, t.q3_ms],
            forward_samples_us=t.samples_us(),
            inl_time_share=_inl_share(m, x, device, max(3, timing[1] // 2)),
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=8, help="T of every INL sub-layer")
    parser.add_argument(
        "--train-halt-eps", type=float, default=1e-2, help="halt_eps of the halting-on model"
    )
    parser.add_argument("--selection-seed", type=int, default=SELECTION_SEED)
    parser.add_argument("--max-extend", type=int, default=3)
    parser.add_argument("--lr-centre", type=float, default=None)
    parser.add_argument("--lr", type=float, default=None, help="fixed lr for both models (no grid)")
    args = parser.parse_args(argv)
    device = setup_run(args)
    corpus = corpus_for_args(args)
    t_iter = args.iterations
    if args.gpu:
        shape = Shape(d_model=512, num_layers=8, num_heads=8, num_iterations=t_iter, seq_len=512)
        spec = RunSpec(steps=2000, batch=32, seq_len=512, val_batches=16)
        seeds, centre, timing = 5, 1e-3, (3, 20)
    elif args.quick:
        shape = Shape(d_model=64, num_layers=2, num_heads=4, num_iterations=t_iter, seq_len=64)
        spec = RunSpec(steps=100, batch=16, seq_len=64, val_batches=4)
        seeds, centre, timing = 1, 3e-3, (1, 3)
    else:
        shape = Shape(d_model=64, num_layers=2, num_heads=4, num_iterations=t_iter, seq_len=64)
        spec = RunSpec(steps=300, batch=16, seq_len=64, val_batches=16)
        seeds, centre, timing = 3, 3e-3, (3, 15)
    if args.steps:
        spec = dataclasses.replace(spec, steps=args.steps)
    seeds = args.seeds or seeds
    centre = args.lr_centre or centre
    fixed = args.lr if args.lr is not None else (centre if args.quick else None)
    report_seeds = list(range(seeds))
    if fixed is None and args.selection_seed in report_seeds:
        raise SystemExit(f"--selection-seed {args.selection_seed} is among the reported seeds")
    trainer = Trainer(corpus=corpus, spec=spec, device=device, progress=not args.no_progress)
    t_start = time.perf_counter()

    off: Setting = (None, 1)
    grid: list[Setting] = [off] + [(e, m) for m in MIN_ITERATIONS for e in HALT_EPS] + [REMOVED]
    trained_on: Setting = (args.train_halt_eps, 1)
    models = {"halting_off": off, "halting_on": trained_on}
    configs = {
        k: match_arm(shape, ARM, halt_eps=s[0], min_iterations=s[1]) for k, s in models.items()
    }
    records: list[dict[str, Any]] = []
    selection: dict[str, dict[str, Any]] = {}
    for key, (cfg, _) in configs.items():
        tuning, selection[key] = trainer.choose_lr(
            cfg,
            ARM,
            fixed=fixed,
            centre=centre,
            max_extend=args.max_extend,
            selection_seed=args.selection_seed,
            tag=key,
        )
        records += tuning
    results: dict[str, dict[int, dict[Setting, dict[str, Any]]]] = {k: {} for k in models}
    profiles: dict[str, list[dict[str, Any]]] = {}
    for seed in report_seeds:
        for key, setting in models.items():
            model, rec = trainer.run(configs[key][0], ARM, selection[key]["selected_lr"], seed, key)
            rec.update(phase="report", model=key)
            records.append(rec)
            evals = grid if key == "halting_off" else [off, setting]
            results[key][seed] = _measure(model, evals, shape, corpus, spec, device, timing)
            if seed == report_seeds[0]:
                xb, _ = get_batch(
                    corpus.val, spec.val_batch, spec.seq_len, torch.Generator().manual_seed(7)
                )
                profiles[key] = _step_profile(_variant(model, shape, off, device), xb.to(device))
            for s, r in results[key][seed].items():
                records.append(
                    {
                        "phase": "eval",
                        "model": key,
                        "seed": seed,
                        "halt_eps": s[0],
                        "min_iterations": s[1],
                        **r,
                    }
                )
                print(
                    f"{key} seed {seed} {_label(s):>12s}: {r['iterations']:.2f} it/token, "
                    f"val {r['val_bpb']:.4f} bits/byte, forward {r['forward_ms_median']:.1f} ms, "
                    f"INL share {r['inl_time_share']:.2f}",
                    flush=True,
                )
    wall = time.perf_counter() - t_start

    def row(key: str, s: Setting) -> dict[str, Any]:
        ref = [results["halting_off"][k][off] for k in report_seeds]
        cur = [results[key][k][s] for k in report_seeds]
        it = [c["iterations"] for c in cur]
        d = [c["val_bpb"] - r["val_bpb"] for c, r in zip(cur, ref, strict=True)]
        rel = [c["val_bpb"] / r["val_bpb"] - 1.0 for c, r in zip(cur, ref, strict=True)]
        ratio = [
            c["forward_ms_median"] / o["forward_ms_median"]
            for c, o in zip(cur, [results[key][k][off] for k in report_seeds], strict=True)
        ]
        ci, ci_rel = t_interval(d), t_interval(rel)
        mean_it = mean_std(it)[0]
        return {
            "model": key,
            "setting": _label(s),
            "halt_eps": s[0],
            "min_iterations": s[1],
            "iterations_mean": mean_it,
            "fraction_saved": 1.0 - mean_it / t_iter,
            "val_bpb_mean": mean_std([c["val_bpb"] for c in cur])[0],
            "delta_bpb": ci.as_dict(),
            "delta_relative": ci_rel.as_dict(),
            "forward_time_ratio_vs_off": mean_std(ratio)[0],
            "forward_ms_median": mean_std([c["forward_ms_median"] for c in cur])[0],
            "inl_time_share": mean_std([c["inl_time_share"] for c in cur])[0],
        }

    frontier = [row("halting_off", s) for s in grid]
    trained = [row("halting_on", s) for s in (off, trained_on)]
    reached = [
        f
        for f in frontier + trained
        if f["halt_eps"] is not None
        and f["fraction_saved"] >= TARGET_SAVED
        and f["delta_relative"]["mean"] <= TARGET_LOSS
    ]

    def fmt_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
        out = []
        for f in rows:
            ci, rel = f["delta_bpb"], f["delta_relative"]
            interval = "n/a" if ci["n"] < 2 else f"[{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
            out.append(
                [
                    f["model"],
                    f["setting"].split("/")[0],
                    f["min_iterations"] or "—",
                    f"{f['iterations_mean']:.2f} / {t_iter}",
                    f"{100 * f['fraction_saved']:.1f}%",
                    f"{f['val_bpb_mean']:.4f}",
                    f"{ci['mean']:+.4f}",
                    interval,
                    f"{100 * rel['mean']:+.2f}%",
                    f"{f['forward_time_ratio_vs_off']:.2f}",
                    f"{f['forward_ms_median']:.1f}",
                    f"{100 * f['inl_time_share']:.0f}%",
                ]
            )
        return out

    headers = [
        "trained",
        "halt_eps",
        "min it",
        "iterations/token",
        "saved",
        "val bits/byte",
        "Δ bits/byte",
        "Δ 95% t-interval",
        "Δ relative",
        "forward time / off",
        "forward ms",
        "INL time share",
    ]
    if fixed is None:
        lr_text = "; ".join(
            f"{k}: grid {', '.join(f'{lr:.3g}' for lr in v['grid_lrs'])} → {v['selected_lr']:.3g}"
            f" ({'interior' if v['interior'] else 'edge'})"
            for k, v in selection.items()
        )
        lr_text = f"lr per trained model on selection seed {args.selection_seed}: {lr_text}."
    else:
        lr_text = f"fixed lr {fixed:g} (no grid)."
    verdict = (
        "Target (≥ 30% of INL iterations saved at ≤ 1% more bits/byte) **reached** by: "
        + ", ".join(
            f"{f['model']} halt_eps {f['halt_eps']:g}/min {f['min_iterations']} "
            f"({100 * f['fraction_saved']:.0f}% saved, {100 * f['delta_relative']['mean']:+.2f}%)"
            for f in reached
        )
        + "."
        if reached
        else "Target (≥ 30% of INL iterations saved at ≤ 1% more bits/byte) **not reached**; the "
        "table is the measured frontier."
    )
    removed = next(f for f in frontier if f["setting"] == "removed")
    verdict += (
        f" Control: removing every INL sub-layer from the trained model (100% saved) changes "
        f"validation bits/byte by {100 * removed['delta_relative']['mean']:+.2f}%: the scale of "
        "what INL contributes at all."
    )
    if removed["delta_relative"]["mean"] <= TARGET_LOSS:
        verdict += (
            " Removing INL altogether costs ≤ 1% here, so meeting the target says little about "
            "halting: at this size and budget INL contributes little to the loss."
        )
    profile_rows = [
        [key, p["layer"] + 1]
        + [
            f"{m:.3g} ({lo:.2g}–{hi:.2g})"
            for m, lo, hi in zip(p["median"], p["q10"], p["q90"], strict=True)
        ]
        for key, ps in profiles.items()
        for p in ps
    ]
    md = (
        f"Corpus {corpus.name}, byte-level. Model: INL between attention and a narrowed SwiGLU "
        f"FFN, d {shape.d_model}, {shape.num_layers} layers, {shape.num_heads} heads, T = {t_iter}, "
        f"shared controller; sequence {spec.seq_len}, batch {spec.batch}, {spec.steps} steps, "
        f"AdamW (0.9, 0.95), clip {spec.clip}, 10% warm-up + cosine. {lr_text} Seeds "
        f"{report_seeds}. Validation: {spec.val_batches} fixed batches of {spec.val_batch} × "
        f"{spec.seq_len} bytes. Forward time: one validation batch, eval mode, "
        f"{timing[0]} warm-up / {timing[1]} measured interleaved rounds, median; the ratio is to "
        f"halting off with the same weights in the same round. Δ is vs the halting-off model "
        f"evaluated with halting off, paired by seed. Wall time {wall / 60:.1f} min.\n\n"
        f"{verdict}\n\n"
        "## Model trained with halting off, evaluated at each halt_eps\n\n"
        + markdown_table(headers, fmt_rows(frontier))
        + f"\n## Model trained with halting on (halt_eps {args.train_halt_eps:g}, min it 1)\n\n"
        + markdown_table(headers, fmt_rows(trained))
        + f"\n## Relative step per iteration, seed {report_seeds[0]}, halting off (median over "
        "tokens, 10–90% range)\n\nA token halts after step t ≥ min_iterations when this is below "
        "halt_eps.\n\n"
        + markdown_table(
            ["trained", "layer"] + [f"t = {t}" for t in range(1, t_iter + 1)], profile_rows
        )
    )
    config = {
        **common_config(args, corpus, shape, spec, report_seeds),
        "selection_seed": args.selection_seed if fixed is None else None,
        "fixed_lr": fixed,
        "lr_centre": centre,
        "selection": selection,
        "halt_eps_grid": list(HALT_EPS),
        "min_iterations_grid": list(MIN_ITERATIONS),
        "train_halt_eps": args.train_halt_eps,
        "timing": {"warmup": timing[0], "iters": timing[1]},
        "models": {k: arm_config(c, ARM) for k, (c, _) in configs.items()},
        "parameters": build_lm(configs["halting_off"][0]).counts(),
        "target": {"fraction_saved": TARGET_SAVED, "relative_loss": TARGET_LOSS},
        "target_reached": bool(reached),
        "frontier": frontier,
        "trained_with_halting": trained,
        "step_profile": profiles,
        "wall_seconds": wall,
    }
    publish(
        args,
        "halting",
        config=config,
        records=records,
        markdown=md,
        figures={"": _figure(frontier, trained, t_iter)},
        device=device,
    )


def _figure(frontier: list[dict[str, Any]], trained: list[dict[str, Any]], t_iter: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for m, marker in zip(MIN_ITERATIONS, "os", strict=True):
        pts = [f for f in frontier if f["halt_eps"] is not None and f["min_iterations"] == m]
        xs = [100 * f["fraction_saved"] for f in pts]
        ax.plot(
            xs, [100 * f["delta_relative"]["mean"] for f in pts], marker + "-", label=f"min it {m}"
        )
        ax2.plot(
            xs, [f["forward_time_ratio_vs_off"] for f in pts], marker + "-", label=f"min it {m}"
        )
        for f, x in zip(pts, xs, strict=True):
            ax.annotate(f"{f['halt_eps']:g}", (x, 100 * f["delta_relative"]["mean"]), fontsize=7)
    on = trained[-1]
    ax.plot(
        [100 * on["fraction_saved"]],
        [100 * on["delta_relative"]["mean"]],
        "*",
        ms=12,
        label=f"trained with halting ({on['halt_eps']:g})",
    )
    removed = next(f for f in frontier if f["setting"] == "removed")
    ax.plot(
        [100.0],
        [100 * removed["delta_relative"]["mean"]],
        "kx",
        ms=9,
        label="INL removed (control)",
    )
    ax.axhline(100 * TARGET_LOSS, color="grey", lw=0.8, ls="--")
    ax.axvline(100 * TARGET_SAVED, color="grey", lw=0.8, ls="--")
    ax.set_title(f"Halting frontier (T = {t_iter}; dashed: the target)")
    ax.set_xlabel("INL iterations saved (%)")
    ax.set_ylabel("Δ validation bits/byte vs off (%)")
    ax.legend(fontsize=7)
    ax2.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax2.set_title("Eval forward time vs halting off (interleaved medians)")
    ax2.set_xlabel("INL iterations saved (%)")
    ax2.set_ylabel("forward time / off")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
