"""AION crash and stability test with controls, on the harness GPT (causal attention, pre-LN).

Deep, narrow byte-level GPTs are trained with AdamW (betas 0.9/0.95, weight decay 0.1 on matrices,
0 on gains, biases and residual scalars), 10% warm-up then cosine, gradient clipping at 1.0, with
the same data order and the same initial weights for every method at a given seed (paired design).
The learning-rate grid runs from 1e-3 up to 3, far past the usual range, so that the plain
residual itself fails in the top cells: a stability test is only informative where the control
can fail.

Methods (``aion_torch.residuals.make_residual`` kinds): ``plain`` (x + y), ``aion`` (default mode),
``aion_reference`` (aion-torch 1.0.x numerics), ``aion_fixed`` (β = 0 frozen, α0 = 0.1 learnable:
the control that isolates the adaptivity of α), ``fixed`` (constant α = 0.1), ``rezero``,
``layerscale``, and the post-LN peers ``deepnorm`` (DeepNet scaling and init) and ``admin``
(learnable per-channel skip weight, closed-form init).

Crash definition, fixed before running: a run **crashes** if any training loss is non-finite, or
if its final training loss (mean of the last 10% of steps) is above its initial loss (step 0).
Reported separately, the spec's "did not learn" failure: final validation loss > ℓ₀ − 1.0 nats
(ℓ₀ = the run's step-0 loss), or non-finite. Exceptions (e.g. out of memory) are recorded as
``error`` and never counted as crashes.

Reported: crash and did-not-learn rates per method × depth × lr with Wilson 95% intervals, final
validation loss mean ± std with every seed at every lr (no lr is selected on reported seeds),
paired differences of AION against ``aion_fixed``, ``plain`` and ``fixed`` with Student-t 95%
intervals (n − 1 df), the best lr per method (flagged when at the edge of the grid), pre-clip
gradient norms and clip rate, and the adaptive factor 1/(1 + β·r̄) per layer over training.

Run: ``uv run python -m benchmarks.bench_aion_crash --threads 1`` (the committed grid: depth 48 at
8 learning rates 1e-3…3 and depth 96 at the crash edge 0.3, 1, 3; 9 methods, 5 seeds, 40 steps;
about an hour on one loaded CPU core). ``--grid 48:1e-3,1e-2 96:1`` or ``--depths``/``--lrs``,
``--methods``, ``--steps`` select another grid.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from aion_torch import AionResidual
from aion_torch.residuals import AdminResidual, ReZeroResidual, deepnorm_init_, make_residual
from benchmarks.harness import (
    GPT,
    GPTConfig,
    common_parser,
    corpus_for_args,
    cosine_schedule,
    downsample,
    estimate_loss,
    markdown_table,
    mean_std,
    seed_everything,
    setup_run,
    t_interval,
    train_lm,
    wilson_interval,
    write_results,
)

ALL_METHODS = (
    "plain",
    "aion",
    "aion_reference",
    "aion_fixed",
    "fixed",
    "rezero",
    "layerscale",
    "deepnorm",
    "admin",
)
ALPHA_METHODS = ("aion", "aion_reference", "aion_fixed")
TRACED_METHOD = "aion"
"""Per-step traces (adaptive factor and α per layer) are kept for this method at seed 0 only."""
DID_NOT_LEARN_MARGIN = 1.0
"""Spec failure (d): final validation loss above ℓ₀ − 1.0 nats."""
CONTRASTS = (
    ("aion", "aion_fixed"),
    ("aion", "plain"),
    ("aion", "fixed"),
    ("aion_reference", "aion_fixed"),
)
PLOT_TOP = 7.0
"""Validation losses above this (nats/byte) are drawn at the top edge of the loss-vs-lr plot."""

DEFAULT_GRID: dict[int, list[float]] = {
    48: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0],
    96: [3e-1, 1.0, 3.0],
}


def _parse_grid(items: list[str]) -> dict[int, list[float]]:
    grid: dict[int, list[float]] = {}
    for item in items:
        depth, _, lrs = item.partition(":")
        if not lrs:
            raise SystemExit(f"--grid entries are DEPTH:LR,LR,…; got {item!r}")
        grid[int(depth)] = [float(v) for v in lrs.split(",")]
    return grid


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser(__doc__.splitlines()[0] if __doc__ else "AION crash test")
    parser.add_argument(
        "--grid", nargs="+", default=None, help="per-depth lr grids, e.g. 48:1e-3,1e-2 96:1,3"
    )
    parser.add_argument("--depths", type=int, nargs="+", default=None)
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help="same lrs per depth")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval-iters", type=int, default=None)
    parser.add_argument("--name", default=None, help="results file name (default: crash[_quick])")
    args = parser.parse_args(argv)
    if args.quick:
        size: dict[str, Any] = {
            "grid": {8: [3e-3]},
            "methods": ["plain", "aion", "aion_fixed"],
            "steps": 60,
            "seeds": 3,
            "d_model": 32,
            "heads": 2,
            "seq_len": 32,
            "batch": 8,
            "eval_iters": 4,
        }
    elif args.gpu:
        sqrt10 = [1e-4 * 10 ** (k / 2) for k in range(11)]  # 1e-4 … 1 in ×√10 steps
        size = {
            "grid": {12: sqrt10, 48: sqrt10, 192: sqrt10},
            "methods": list(ALL_METHODS),
            "steps": 2000,
            "seeds": 5,
            "d_model": 256,
            "heads": 4,
            "seq_len": 256,
            "batch": 32,
            "eval_iters": 16,
        }
    else:
        size = {
            "grid": {d: list(v) for d, v in DEFAULT_GRID.items()},
            "methods": list(ALL_METHODS),
            "steps": 40,
            "seeds": 5,
            "d_model": 32,
            "heads": 2,
            "seq_len": 32,
            "batch": 8,
            "eval_iters": 8,
        }
    if args.grid is not None:
        size["grid"] = _parse_grid(args.grid)
    if args.depths is not None or args.lrs is not None:
        depths = args.depths if args.depths is not None else list(size["grid"])
        size["grid"] = {
            d: list(args.lrs) if args.lrs is not None else size["grid"].get(d, DEFAULT_GRID[48])
            for d in depths
        }
    for key, value in (
        ("methods", args.methods),
        ("steps", args.steps),
        ("seeds", args.seeds),
        ("eval_iters", args.eval_iters),
    ):
        if value is not None:
            size[key] = value
    args.size = size
    return args


def _residual_factory(method: str) -> Callable[[int, GPTConfig], nn.Module]:
    def factory(index: int, config: GPTConfig) -> nn.Module:
        kw: dict[str, Any] = {"scale": 0.1} if method == "fixed" else {}
        return make_residual(method, dim=config.d_model, num_layers=config.n_layers, **kw)  # type: ignore[arg-type]

    return factory


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW, weight decay 0.1 on matrices, 0 on gains, biases and residual scalars."""
    residual_ids: set[int] = set()
    for m in model.modules():
        if isinstance(getattr(type(m), "post_norm", None), bool):
            residual_ids.update(id(p) for p in m.parameters())
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in residual_ids else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        foreach=True,
    )


def _alphas(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(α, α0, adaptive factor 1/(1 + max(β,0)·r̄)) per residual for AION models, else ``None``.

    α is the value of the last training forward (``alpha_cached``); α0 and the factor are read
    from the current parameters and EMA (between backward and the optimiser step they are the
    ones that produced α, so α = α0 · factor there).
    """
    mods = [m for m in model.modules() if isinstance(m, AionResidual)]
    if not mods:
        return None
    # one scalar per residual, whatever the stored shapes (0-dim or (1,))
    alpha = torch.cat([m.alpha_cached.reshape(1) for m in mods])
    alpha0 = torch.cat([m.alpha0.detach().reshape(1) for m in mods])
    beta = torch.cat([m.beta.detach().reshape(1) for m in mods]).clamp(min=0.0)
    factor = 1.0 / (1.0 + beta * torch.cat([m.ratio_ema.reshape(1) for m in mods]))
    return alpha, alpha0, factor


def _round(values: list[float], digits: int = 4) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]


def _spread(prefix: str, values: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_min": min(values),
        f"{prefix}_median": statistics.median(values),
        f"{prefix}_max": max(values),
    }


def _run_one(
    method: str,
    depth: int,
    lr: float,
    seed: int,
    size: dict[str, Any],
    corpus_train: torch.Tensor,
    corpus_val: torch.Tensor,
    device: torch.device,
    keep_trace: bool,
) -> dict[str, Any]:
    config = GPTConfig(
        d_model=size["d_model"],
        n_heads=size["heads"],
        seq_len=size["seq_len"],
        n_layers=depth,
    )
    steps = int(size["steps"])
    seed_everything(seed)
    model = GPT(config, residual_factory=_residual_factory(method)).to(device)
    if method == "deepnorm":
        deepnorm_init_(model, depth)
    optimizer = _optimizer(model, lr)
    trace_steps: list[int] = []
    trace_factor: list[torch.Tensor] = []
    trace_alpha: list[torch.Tensor] = []
    factor_extremes: list[float] = [math.inf, -math.inf]

    def on_step(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, m: nn.Module) -> None:
        a = _alphas(m)
        if a is None:
            return
        lo, hi = float(a[2].min()), float(a[2].max())
        factor_extremes[0] = min(factor_extremes[0], lo)
        factor_extremes[1] = max(factor_extremes[1], hi)
        if keep_trace:
            trace_steps.append(step)
            trace_alpha.append(a[0].clone())
            trace_factor.append(a[2].clone())

    record: dict[str, Any] = {"method": method, "depth": depth, "lr": lr, "seed": seed}
    start = time.perf_counter()
    try:
        log = train_lm(
            model,
            optimizer,
            corpus_train,
            steps=steps,
            batch_size=size["batch"],
            seq_len=size["seq_len"],
            seed=seed,
            device=device,
            clip=1.0,
            schedule=lambda s: cosine_schedule(s, steps),
            on_step=on_step,
            progress_bar=False,
        )
    except Exception as exc:  # recorded separately, never counted as a crash
        record.update(error=f"{type(exc).__name__}: {exc}", crashed=None, did_not_learn=None)
        return record
    losses = log.losses
    tail = losses[-max(1, steps // 10) :]
    initial = losses[0]
    nonfinite = log.crashed or not all(math.isfinite(v) for v in losses)
    final = statistics.fmean(tail) if not nonfinite else math.nan
    crashed = nonfinite or final > initial
    reason = "non-finite loss" if nonfinite else ("final > initial" if crashed else "")
    val = (
        estimate_loss(
            model,
            corpus_val,
            batch_size=size["batch"],
            seq_len=size["seq_len"],
            iters=size["eval_iters"],
            seed=1234,
            device=device,
        )
        if not nonfinite
        else math.nan
    )
    did_not_learn = not (math.isfinite(val) and val <= initial - DID_NOT_LEARN_MARGIN)
    # spec failure (c), logged only: loss above 1.3× its running minimum
    running, spikes = math.inf, 0
    for v in losses:
        running = min(running, v)
        spikes += v > 1.3 * running
    finite_norms = [g for g in log.grad_norms if math.isfinite(g)]
    record.update(
        crashed=crashed,
        reason=reason,
        did_not_learn=did_not_learn,
        initial_loss=initial,
        final_train_loss=final,
        min_train_loss=min(losses),
        val_loss=val,
        spike_fraction=spikes / len(losses),
        steps_run=len(losses),
        grad_norm_median=statistics.median(finite_norms) if finite_norms else math.nan,
        grad_norm_max=max(finite_norms) if finite_norms else math.nan,
        clip_rate=sum(g > 1.0 for g in log.grad_norms) / max(1, len(log.grad_norms)),
        seconds=time.perf_counter() - start,
    )
    a = _alphas(model)
    if a is not None:
        record.update(_spread("alpha_final", a[0].flatten().tolist()))
        record.update(_spread("alpha0_final", a[1].flatten().tolist()))
        record.update(_spread("factor_final", a[2].flatten().tolist()))
        mods = [m for m in model.modules() if isinstance(m, AionResidual)]
        record.update(
            _spread("beta_final", torch.cat([m.beta.detach().reshape(1) for m in mods]).tolist())
        )
        record.update(
            _spread("ratio_ema_final", torch.cat([m.ratio_ema.reshape(1) for m in mods]).tolist())
        )
        record.update(factor_min_over_training=factor_extremes[0])
        record.update(factor_max_over_training=factor_extremes[1])
    rezero = [m.alpha.detach() for m in model.modules() if isinstance(m, ReZeroResidual)]
    if rezero:
        record.update(
            _spread("rezero_alpha_final", torch.cat([a.reshape(-1) for a in rezero]).tolist())
        )
    omega = [m.omega.detach().mean() for m in model.modules() if isinstance(m, AdminResidual)]
    if omega:
        record.update(_spread("admin_omega_mean_final", torch.stack(omega).tolist()))
    if keep_trace and trace_steps:  # kept in memory; _serialise keeps only the plotted ones
        record["_trace"] = {
            "step": trace_steps,
            "factor": torch.stack(trace_factor).T,  # (residuals, steps)
            "alpha": torch.stack(trace_alpha).T,
        }
    return record


TRACE_VALUE_BUDGET = 60_000
"""At most this many numbers in all kept traces together (keeps the JSON well under 1 MB)."""


def _plotted_traces(records: list[dict[str, Any]]) -> list[int]:
    """Indices of the traced runs the factor plot shows: per depth, the lowest lr and the three
    lrs where the adaptive factor moved most (1 − its minimum over training)."""
    chosen: list[int] = []
    for depth in sorted({r["depth"] for r in records if "_trace" in r}):
        idx = [i for i, r in enumerate(records) if "_trace" in r and r["depth"] == depth]
        idx.sort(key=lambda i: records[i]["lr"])
        rest = sorted(idx[1:], key=lambda i: records[i].get("factor_min_over_training", 1.0))
        chosen += sorted(idx[:1] + rest[:3], key=lambda i: records[i]["lr"])
    return chosen


def _sig(value: Any, digits: int = 7) -> Any:
    """Floats to ``digits`` significant digits (the runs are float32: nothing real is lost)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    if isinstance(value, list):
        return [_sig(v, digits) for v in value]
    return value


def _serialise(records: list[dict[str, Any]], with_traces: bool) -> list[dict[str, Any]]:
    """JSON-ready records; per-step traces only for the plotted runs, downsampled to fit."""
    keep = set(_plotted_traces(records)) if with_traces else set()
    series = sum(2 * records[i]["_trace"]["factor"].shape[0] for i in keep)
    points = max(10, min(200, TRACE_VALUE_BUDGET // max(1, series)))
    out = []
    for i, r in enumerate(records):
        rec = {k: _sig(v) for k, v in r.items() if k != "_trace"}
        if i in keep:
            t = r["_trace"]
            pos = [int(p) for p in downsample([float(j) for j in range(len(t["step"]))], points)]
            rec["trace"] = {
                "step": [t["step"][j] for j in pos],
                "factor_per_layer": [_round(row) for row in t["factor"][:, pos].tolist()],
                "alpha_per_layer": [_round(row) for row in t["alpha"][:, pos].tolist()],
            }
        out.append(rec)
    return out


def _cells(size: dict[str, Any]) -> list[tuple[int, float]]:
    return [(d, lr) for d, lrs in size["grid"].items() for lr in lrs]


def _select(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _fmt_ms(values: list[float], digits: int = 3) -> str:
    vals = [v for v in values if math.isfinite(v)]
    missing = len(values) - len(vals)
    suffix = f" ({missing} non-finite)" if missing else ""
    if not vals:
        return "–" + suffix
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}" + suffix
    m, s = mean_std(vals)
    return f"{m:.{digits}f} ± {s:.{digits}f}" + suffix


def _rate(rs: list[dict[str, Any]], key: str) -> tuple[int, int, float, float]:
    counted = [r for r in rs if r.get(key) is not None]
    k = sum(bool(r[key]) for r in counted)
    n = len(counted)
    lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
    return k, n, lo, hi


def _fmt_rate(k: int, n: int, lo: float, hi: float) -> str:
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]" if n else "–"


def _paired(
    records: list[dict[str, Any]], a: str, b: str, depth: int, lr: float
) -> dict[str, Any] | None:
    """Per-seed differences of validation loss a − b at one cell (seeds where both are finite)."""
    va = {
        r["seed"]: r.get("val_loss", math.nan)
        for r in _select(records, depth=depth, lr=lr, method=a)
    }
    vb = {
        r["seed"]: r.get("val_loss", math.nan)
        for r in _select(records, depth=depth, lr=lr, method=b)
    }
    seeds = sorted(s for s in va if s in vb and math.isfinite(va[s]) and math.isfinite(vb[s]))
    if not seeds:
        return None
    diffs = [va[s] - vb[s] for s in seeds]
    ci = t_interval(diffs)
    return {
        "kind": "paired_difference",
        "depth": depth,
        "lr": lr,
        "a": a,
        "b": b,
        "metric": "val_loss",
        "seeds": seeds,
        "diffs": diffs,
        "n_excluded_nonfinite": len(set(va) & set(vb)) - len(seeds),
        **ci.as_dict(),
        "excludes_zero": ci.n >= 2 and ci.excludes_zero,
    }


def _fmt_paired(p: dict[str, Any] | None) -> str:
    if p is None:
        return "–"
    if p["n"] < 2:
        return f"{p['mean']:+.3f} (n=1)"
    star = " *" if p["excludes_zero"] else ""
    return f"{p['mean']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}] (n={p['n']}){star}"


def _best_lr(
    records: list[dict[str, Any]], depth: int, method: str, lrs: list[float]
) -> dict[str, Any]:
    """The lr with the lowest mean validation loss among lrs where every seed is finite."""
    cells = []
    for lr in lrs:
        vals = [
            r.get("val_loss", math.nan) for r in _select(records, depth=depth, lr=lr, method=method)
        ]
        if vals and all(math.isfinite(v) for v in vals):
            cells.append((statistics.fmean(vals), lr))
    if not cells:
        return {"best_lr": None, "best_val_loss": None, "edge": None}
    best, lr = min(cells)
    edge = (
        "lowest lr of the grid"
        if lr == min(lrs)
        else ("highest lr of the grid" if lr == max(lrs) else "")
    )
    # spec LR sensitivity: mean over the grid of min(ℓ(η), ℓ₀) − ℓ*, a non-finite ℓ counted as ℓ₀
    gaps = []
    for lr_ in lrs:
        rs = _select(records, depth=depth, lr=lr_, method=method)
        if not rs:
            continue
        l0 = statistics.fmean(r.get("initial_loss", math.log(256)) for r in rs)
        vals = [r.get("val_loss", math.nan) for r in rs]
        mean = statistics.fmean(v if math.isfinite(v) else l0 for v in vals)
        gaps.append(min(mean, l0) - best)
    return {
        "best_lr": lr,
        "best_val_loss": best,
        "edge": edge,
        "lr_sensitivity": statistics.fmean(gaps) if gaps else math.nan,
    }


def _analysis(records: list[dict[str, Any]], size: dict[str, Any]) -> list[dict[str, Any]]:
    """Derived records: crash rates per cell, paired differences, best lr per method and depth."""
    out: list[dict[str, Any]] = []
    runs = [r for r in records if r.get("kind") == "run"]
    for depth, lr in _cells(size):
        for method in size["methods"]:
            rs = _select(runs, depth=depth, lr=lr, method=method)
            if not rs:
                continue
            k, n, lo, hi = _rate(rs, "crashed")
            k2, _n2, lo2, hi2 = _rate(rs, "did_not_learn")
            out.append(
                {
                    "kind": "cell",
                    "depth": depth,
                    "lr": lr,
                    "method": method,
                    "crashes": k,
                    "n": n,
                    "crash_wilson95": [lo, hi],
                    "did_not_learn": k2,
                    "did_not_learn_wilson95": [lo2, hi2],
                    "errors": len(rs) - n,
                }
            )
        for a, b in CONTRASTS:
            if a in size["methods"] and b in size["methods"]:
                p = _paired(runs, a, b, depth, lr)
                if p is not None:
                    out.append(p)
    for depth, lrs in size["grid"].items():
        for method in size["methods"]:
            rs = _select(runs, depth=depth, method=method)
            if not rs:
                continue
            k, n, lo, hi = _rate(rs, "crashed")
            out.append(
                {
                    "kind": "method_summary",
                    "depth": depth,
                    "method": method,
                    "crashes": k,
                    "n": n,
                    "crash_wilson95": [lo, hi],
                    **_best_lr(runs, depth, method, lrs),
                }
            )
    return out


def _markdown(records: list[dict[str, Any]], size: dict[str, Any], seconds: float) -> str:
    runs = [r for r in records if r.get("kind") == "run"]
    derived = [r for r in records if r.get("kind") != "run"]
    grid_text = "; ".join(
        f"L = {d}: lr ∈ {{{', '.join(f'{lr:g}' for lr in lrs)}}}" for d, lrs in size["grid"].items()
    )
    out = [
        "Pre-registered crash definition (fixed before any run): any non-finite training loss, or "
        "final training loss (mean of the last 10% of steps) above the initial (step-0) loss. "
        f"Reported separately: **did not learn** = final validation loss > ℓ₀ − "
        f"{DID_NOT_LEARN_MARGIN:g} nats (ℓ₀ = the run's step-0 loss ≈ ln 256 = 5.545) or "
        "non-finite: a separate, weaker failure than a crash (a run can fail to learn without "
        "crashing). Exceptions are listed as errors and not counted.\n",
        f"Model: harness GPT, d={size['d_model']}, {size['heads']} heads, seq {size['seq_len']}, "
        f"batch {size['batch']}, causal SDPA attention, pre-LN (DeepNorm, Admin: post-LN); "
        f"{size['steps']} AdamW steps (betas 0.9/0.95, wd 0.1 on matrices), 10% warm-up + cosine, "
        f"clip 1.0; {size['seeds']} seeds per cell, every seed reported at every lr (paired: same "
        f"init and data order across methods); validation loss in nats/byte over "
        f"{size['eval_iters']} fixed batches. Grid: {grid_text}. Methods: "
        f"{', '.join(size['methods'])}. {len(runs)} runs, total wall time {seconds / 60:.1f} min.\n",
    ]
    # summary per method and depth
    summary_rows = []
    for s in (r for r in derived if r["kind"] == "method_summary"):
        summary_rows.append(
            [
                s["depth"],
                s["method"],
                _fmt_rate(s["crashes"], s["n"], *s["crash_wilson95"]),
                f"{s['best_val_loss']:.3f}" if s["best_val_loss"] is not None else "–",
                f"{s['best_lr']:g}" if s["best_lr"] is not None else "–",
                s["edge"] or ("interior" if s["best_lr"] is not None else "–"),
                f"{s['lr_sensitivity']:.3f}" if s.get("lr_sensitivity") is not None else "–",
            ]
        )
    out.append("## Summary per depth and method\n")
    out.append(
        "Crashes over all learning rates of the depth (Wilson 95% interval). Best lr = the lr with "
        "the lowest mean validation loss among the lrs where every seed finished with a finite "
        "loss; **where it is the lowest or highest lr of that depth's grid, the optimum is not "
        "bracketed** and the best value is an upper bound of what the method reaches. LR "
        "sensitivity (spec) = mean over the grid of min(ℓ(η), ℓ₀) − ℓ*, lower = flatter.\n"
    )
    out.append(
        markdown_table(
            [
                "depth",
                "method",
                "crashes",
                "best val loss",
                "best lr",
                "best lr position",
                "lr sensitivity",
            ],
            summary_rows,
        )
    )
    edges = [
        f"{s['method']} at L = {s['depth']} ({s['edge']}, {s['best_lr']:g})"
        for s in derived
        if s["kind"] == "method_summary" and s.get("edge")
    ]
    if edges:
        out.append("Best lr at the edge of the grid: " + "; ".join(edges) + ".\n")
    # per-cell table
    rows = []
    for depth, lr in _cells(size):
        for method in size["methods"]:
            rs = _select(runs, depth=depth, lr=lr, method=method)
            if not rs:
                continue
            k, n, lo, hi = _rate(rs, "crashed")
            k2, n2, lo2, hi2 = _rate(rs, "did_not_learn")
            errors = len(rs) - n
            counted = [r for r in rs if r.get("crashed") is not None]
            rows.append(
                [
                    depth,
                    f"{lr:g}",
                    method,
                    _fmt_rate(k, n, lo, hi) + (f" ({errors} errors)" if errors else ""),
                    _fmt_rate(k2, n2, lo2, hi2),
                    _fmt_ms([r.get("val_loss", math.nan) for r in counted]),
                    _fmt_ms([r.get("final_train_loss", math.nan) for r in counted]),
                    _fmt_ms([r.get("grad_norm_median", math.nan) for r in counted]),
                    _fmt_ms([r.get("grad_norm_max", math.nan) for r in counted], 1),
                    _fmt_ms([r.get("clip_rate", math.nan) for r in counted], 2),
                ]
            )
    out.append("\n## Crash rate, validation loss, gradient norms per cell\n")
    out.append(
        "Crashes and did-not-learn k/n with Wilson 95% interval; val loss and final train loss "
        "mean ± std over the seeds with a finite value (non-finite ones counted); gradient norms "
        "are pre-clip (mean ± std over seeds of the per-run median and max); clip rate = fraction "
        "of steps with norm > 1. Per-seed values are in the JSON (`kind: run`).\n"
    )
    out.append(
        markdown_table(
            [
                "depth",
                "lr",
                "method",
                "crashes",
                "did not learn",
                "val loss",
                "final train loss",
                "grad norm (median)",
                "grad norm (max)",
                "clip rate",
            ],
            rows,
        )
    )
    # paired differences
    prow = []
    contrasts = [(a, b) for a, b in CONTRASTS if a in size["methods"] and b in size["methods"]]
    for depth, lr in _cells(size):
        cells = []
        for a, b in contrasts:
            match = [
                p
                for p in derived
                if p["kind"] == "paired_difference"
                and p["depth"] == depth
                and p["lr"] == lr
                and p["a"] == a
                and p["b"] == b
            ]
            cells.append(_fmt_paired(match[0] if match else None))
        prow.append([depth, f"{lr:g}", *cells])
    if contrasts:
        out.append("\n## Paired differences of validation loss (nats/byte)\n")
        out.append(
            "Mean over seeds of (method − control) at the same seed (same init and data order), "
            "Student-t 95% interval with n − 1 df; negative = lower loss than the control. Seeds "
            "where either run has a non-finite validation loss are left out (n says how many "
            "remain). `*` = the interval excludes 0. `aion_fixed` is the attribution control "
            "(same learnable α0, β = 0): a difference against it is the effect of the adaptive "
            "factor alone.\n"
        )
        out.append(markdown_table(["depth", "lr", *[f"{a} − {b}" for a, b in contrasts]], prow))
    # adaptive factor
    arows = []
    for depth, lr in _cells(size):
        for method in ALPHA_METHODS:
            rs = [
                r
                for r in _select(runs, depth=depth, lr=lr, method=method)
                if "factor_final_min" in r
            ]
            if not rs:
                continue
            arows.append(
                [
                    depth,
                    f"{lr:g}",
                    method,
                    f"{min(r['alpha_final_min'] for r in rs):.4f} / "
                    f"{statistics.median(r['alpha_final_median'] for r in rs):.4f} / "
                    f"{max(r['alpha_final_max'] for r in rs):.4f}",
                    f"{min(r['alpha0_final_min'] for r in rs):.4f} / "
                    f"{max(r['alpha0_final_max'] for r in rs):.4f}",
                    f"{min(r['factor_final_min'] for r in rs):.4f} / "
                    f"{statistics.median(r['factor_final_median'] for r in rs):.4f} / "
                    f"{max(r['factor_final_max'] for r in rs):.4f}",
                    f"{min(r['factor_min_over_training'] for r in rs):.4f} / "
                    f"{max(r['factor_max_over_training'] for r in rs):.4f}",
                    f"{min(r['beta_final_min'] for r in rs):.3g} / "
                    f"{max(r['beta_final_max'] for r in rs):.3g}",
                    f"{min(r['ratio_ema_final_min'] for r in rs):.3g} / "
                    f"{statistics.median(r['ratio_ema_final_median'] for r in rs):.3g} / "
                    f"{max(r['ratio_ema_final_max'] for r in rs):.3g}",
                ]
            )
    if arows:
        out.append("\n## Does α adapt? α, α0 and the adaptive factor over layers and seeds\n")
        out.append(
            "α = α0 · 1/(1 + β·r̄). The adaptive factor 1/(1 + max(β, 0)·r̄) is the only part of α "
            "that depends on the energy ratio; α0 is a learnable scalar in AION and in "
            "`aion_fixed` alike (β = 0 there: factor 1). Final values = after the last step "
            "(min over layers and seeds / median of the per-run medians / max); 'over training' = "
            "the smallest and largest factor of any layer at any step of any seed (crashed runs "
            "included). β is learnable (a negative β acts as 0); r̄ is the EMA of the energy ratio "
            f"(γ = 0.99, starting at 1, so after {size['steps']} steps it has moved only "
            f"{1 - 0.99 ** size['steps']:.0%} of the way to the batch ratio).\n"
        )
        out.append(
            markdown_table(
                [
                    "depth",
                    "lr",
                    "method",
                    "final α min / median / max",
                    "final α0 min / max",
                    "final factor min / median / max",
                    "factor over training min / max",
                    "final β min / max",
                    "final r̄ (EMA) min / median / max",
                ],
                arows,
            )
        )
    return "\n".join(out)


def _figures(records: list[dict[str, Any]], size: dict[str, Any]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    runs = [r for r in records if r.get("kind") == "run" and r.get("crashed") is not None]
    figures: dict[str, Any] = {}
    depths = list(size["grid"])
    # (a) validation loss vs lr per method
    fig, axes = plt.subplots(
        1, len(depths), figsize=(6.4 * len(depths), 4.6), squeeze=False, sharex=True, sharey=True
    )
    cmap = plt.get_cmap("tab10")
    methods = list(size["methods"])
    for i, depth in enumerate(depths):
        ax = axes[0][i]
        lrs = size["grid"][depth]
        for j, method in enumerate(methods):
            colour = cmap(j % 10)
            jitter = 10 ** ((j - (len(methods) - 1) / 2) * 0.012)
            xs, means = [], []
            for lr in lrs:
                rs = _select(runs, depth=depth, lr=lr, method=method)
                if not rs:
                    continue
                vals = [r["val_loss"] for r in rs]
                shown = [min(v, PLOT_TOP) if math.isfinite(v) else PLOT_TOP for v in vals]
                ok = [
                    (s, r)
                    for s, r in zip(shown, rs, strict=True)
                    if not r["crashed"] and s < PLOT_TOP
                ]
                bad = [s for s, r in zip(shown, rs, strict=True) if r["crashed"]]
                top = [
                    s for s, r in zip(shown, rs, strict=True) if not r["crashed"] and s >= PLOT_TOP
                ]
                ax.scatter(
                    [lr * jitter] * len(ok), [s for s, _ in ok], s=9, color=colour, alpha=0.5
                )
                if bad:
                    ax.scatter([lr * jitter] * len(bad), bad, s=30, marker="x", color=colour)
                if top:
                    ax.scatter([lr * jitter] * len(top), top, s=20, marker="^", color=colour)
                xs.append(lr * jitter)
                means.append(statistics.fmean(shown))
            ax.plot(xs, means, color=colour, lw=1.2, label=method)
        l0 = statistics.fmean(r["initial_loss"] for r in runs if r["depth"] == depth)
        ax.axhline(l0, color="black", lw=0.8, ls="--", label=f"ℓ₀ = {l0:.2f} (initial)")
        ax.axhline(
            l0 - DID_NOT_LEARN_MARGIN,
            color="grey",
            lw=0.8,
            ls=":",
            label="ℓ₀ − 1 (did not learn above)",
        )
        ax.set_xscale("log")
        ax.set_ylim(top=PLOT_TOP + 0.15)
        ax.set_xlabel("peak learning rate (AdamW)")
        ax.set_ylabel("final validation loss (nats/byte)")
        ax.set_title(
            f"L = {depth}, {size['steps']} steps, {size['seeds']} seeds: dots = seeds, "
            f"× = crashed, line = mean\n(values ≥ {PLOT_TOP:g} or non-finite drawn at {PLOT_TOP:g})",
            fontsize=9,
        )
        if i == len(depths) - 1:
            ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.suptitle("AION crash test: final validation loss vs learning rate")
    fig.tight_layout()
    figures["val_loss_vs_lr"] = fig
    # (b) adaptive factor per layer over training, traced runs
    traced = [r for r in runs if "trace" in r]
    if traced:
        cells = [
            (d, lr)
            for d, lr in _cells(size)
            if any(r["depth"] == d and r["lr"] == lr for r in traced)
        ]
        ncols = min(4, len(cells))
        nrows = math.ceil(len(cells) / ncols)
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(4.2 * ncols, 3.2 * nrows + 0.6),
            squeeze=False,
            layout="constrained",
        )
        vir = plt.get_cmap("viridis")
        max_layers = 1
        for k, (depth, lr) in enumerate(cells):
            ax = axes[k // ncols][k % ncols]
            r = next(r for r in traced if r["depth"] == depth and r["lr"] == lr)
            series = r["trace"]["factor_per_layer"]
            max_layers = max(max_layers, len(series))
            for layer, ys in enumerate(series):
                ax.plot(r["trace"]["step"], ys, color=vir(layer / max(1, len(series) - 1)), lw=0.6)
            ax.set_title(
                f"{r['method']}, L={depth}, lr={lr:g}, seed {r['seed']}"
                + (" (crashed)" if r["crashed"] else ""),
                fontsize=8,
            )
            ax.set_xlabel("step")
            ax.set_ylabel("1/(1 + β·r̄)")
        for k in range(len(cells), nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        sm = plt.cm.ScalarMappable(cmap=vir, norm=Normalize(0, max_layers - 1))
        fig.colorbar(sm, ax=axes, label="residual index (0 = first attention sublayer)", shrink=0.8)
        fig.suptitle(
            "AION adaptive factor 1/(1 + β·r̄) per residual over training (α = α0 × factor)"
        )
        figures["adaptive_factor"] = fig
    return figures


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    device = setup_run(args)
    size = args.size
    corpus = corpus_for_args(args)
    name = args.name or ("crash_quick" if args.quick else "crash")
    config = {
        **{k: v for k, v in size.items() if k != "grid"},
        "grid": {str(d): lrs for d, lrs in size["grid"].items()},
        "corpus": corpus.name,
        "crash_definition": "non-finite training loss, or mean loss of the last 10% of steps "
        "> loss at step 0",
        "did_not_learn_definition": f"final validation loss > step-0 loss − "
        f"{DID_NOT_LEARN_MARGIN:g} nats, or non-finite",
        "optimizer": "AdamW betas (0.9, 0.95), wd 0.1 on matrices, 0 on gains/biases/residual "
        "scalars, 10% warm-up + cosine to 0.1, clip 1.0",
        "traces": f"method {TRACED_METHOD}, seed 0; kept for the plotted cells only (per depth the "
        "lowest lr and the 3 lrs where the factor moved most), ≤ 200 points, 4 significant digits; "
        "run scalars rounded to 7 significant digits",
        "threads": torch.get_num_threads(),
    }
    records: list[dict[str, Any]] = []
    cells = _cells(size)
    total_runs = len(cells) * size["seeds"] * len(size["methods"])
    done = 0
    start = time.perf_counter()

    def write(final: bool) -> Any:
        seconds = time.perf_counter() - start
        full = _serialise(records, with_traces=final) + _analysis(records, size)
        return write_results(
            "aion-torch",
            name,
            config={
                **config,
                "completed_cells": len({(r["depth"], r["lr"]) for r in records}),
                "complete": final,
            },
            records=full,
            markdown=_markdown(full, size, seconds),
            figures=_figures(full, size) if final else None,
            out_dir=args.out,
            device=device,
        )

    for depth, lr in cells:
        for seed in range(size["seeds"]):
            for method in size["methods"]:
                rec = _run_one(
                    method,
                    depth,
                    lr,
                    seed,
                    size,
                    corpus.train,
                    corpus.val,
                    device,
                    keep_trace=seed == 0 and method == TRACED_METHOD,
                )
                records.append({"kind": "run", **rec})
                done += 1
                if not args.no_progress:
                    elapsed = time.perf_counter() - start
                    print(
                        f"[{done}/{total_runs}] L={depth} lr={lr:g} seed={seed} "
                        f"{method}: crashed={rec.get('crashed')} "
                        f"val={rec.get('val_loss', math.nan):.3f} "
                        f"({rec.get('seconds', 0):.1f}s, eta "
                        f"{elapsed / done * (total_runs - done) / 60:.1f} min)",
                        flush=True,
                    )
        write(final=False)  # checkpoint after every cell
    folder = write(final=True)
    print(f"wrote {folder}/{name}.md")


if __name__ == "__main__":
    main()
