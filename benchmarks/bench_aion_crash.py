"""AION crash and stability test with controls, on the harness GPT (causal attention, pre-LN).

Deep, narrow byte-level GPTs are trained with AdamW (betas 0.9/0.95, weight decay 0.1 on matrices,
0 on gains, biases and residual scalars), 10% warm-up then cosine, gradient clipping at 1.0, with
the same data order and the same initial weights for every method at a given seed (paired design).

Methods (``aion_torch.residuals.make_residual`` kinds): ``plain`` (x + y), ``aion`` (default mode),
``aion_reference`` (aion-torch 1.0.x numerics), ``aion_fixed`` (β = 0 frozen, α0 = 0.1 learnable:
the control that isolates the adaptivity of α), ``fixed`` (constant α = 0.1), ``rezero``,
``layerscale`` and ``deepnorm`` (post-LN with DeepNet scaling and init).

Crash definition, fixed before running: a run **crashes** if any training loss is non-finite, or
if its final training loss (mean of the last 10% of steps) is above its initial loss (step 0).
Exceptions (e.g. out of memory) are recorded as ``error`` and never counted as crashes.

Reported: crash rate per method × depth × lr with Wilson 95% intervals, final validation loss
mean ± std, paired differences of AION against ``aion_fixed`` and ``plain`` (bootstrap 95% CI),
pre-clip gradient-norm statistics and clip rate, and α per layer over training.

Run: ``uv run python -m benchmarks.bench_aion_crash [--quick] [--threads 1]``. The default grid is
the issue's (depths 48/96/192, 4 learning rates, 5 seeds, 8 methods), which takes hours on 2 CPU
cores; ``--depths``/``--lrs``/``--methods``/``--steps`` select a sub-grid (see docs/aion-torch.md
for the commands that produced the committed results).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from aion_torch import AionResidual
from aion_torch.residuals import ReZeroResidual, deepnorm_init_, make_residual
from benchmarks.harness import (
    GPT,
    GPTConfig,
    common_parser,
    corpus_for_args,
    cosine_schedule,
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
)
ALPHA_METHODS = ("aion", "aion_reference", "aion_fixed")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser(__doc__.splitlines()[0] if __doc__ else "AION crash test")
    parser.add_argument("--depths", type=int, nargs="+", default=None)
    parser.add_argument("--lrs", type=float, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval-iters", type=int, default=None)
    parser.add_argument("--name", default=None, help="results file name (default: crash[_quick])")
    args = parser.parse_args(argv)
    if args.quick:
        size: dict[str, Any] = {
            "depths": [8],
            "lrs": [3e-3],
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
        size = {
            "depths": [600],
            "lrs": [3e-4, 1e-3, 3e-3, 1e-2],
            "methods": list(ALL_METHODS),
            "steps": 500,
            "seeds": 5,
            "d_model": 128,
            "heads": 4,
            "seq_len": 128,
            "batch": 16,
            "eval_iters": 16,
        }
    else:
        size = {
            "depths": [48, 96, 192],
            "lrs": [3e-4, 1e-3, 3e-3, 1e-2],
            "methods": list(ALL_METHODS),
            "steps": 60,
            "seeds": 5,
            "d_model": 32,
            "heads": 2,
            "seq_len": 32,
            "batch": 8,
            "eval_iters": 8,
        }
    for key, value in (
        ("depths", args.depths),
        ("lrs", args.lrs),
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
    from the current parameters and EMA.
    """
    mods = [m for m in model.modules() if isinstance(m, AionResidual)]
    if not mods:
        return None
    alpha = torch.stack([m.alpha_cached for m in mods])
    alpha0 = torch.stack([m.alpha0.detach() for m in mods])
    beta = torch.stack([m.beta.detach() for m in mods]).clamp(min=0.0)
    factor = 1.0 / (1.0 + beta * torch.stack([m.ratio_ema for m in mods]))
    return alpha, alpha0, factor


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
    every = max(1, steps // 30)
    trace: list[dict[str, Any]] = []

    def on_step(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, m: nn.Module) -> None:
        if keep_trace and (step % every == 0 or step == steps - 1):
            a = _alphas(m)
            if a is not None:
                trace.append({"step": step, "alpha": a[0].tolist(), "alpha0": a[1].tolist()})

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
        record.update(error=f"{type(exc).__name__}: {exc}", crashed=None)
        return record
    losses = log.losses
    tail = losses[-max(1, steps // 10) :]
    initial = losses[0]
    final = statistics.fmean(tail) if not log.crashed else math.nan
    nonfinite = log.crashed or not all(math.isfinite(v) for v in losses)
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
    finite_norms = [g for g in log.grad_norms if math.isfinite(g)]
    record.update(
        crashed=crashed,
        reason=reason,
        initial_loss=initial,
        final_train_loss=final,
        val_loss=val,
        steps_run=len(losses),
        grad_norm_median=statistics.median(finite_norms) if finite_norms else math.nan,
        grad_norm_max=max(finite_norms) if finite_norms else math.nan,
        clip_rate=sum(g > 1.0 for g in log.grad_norms) / max(1, len(log.grad_norms)),
        seconds=time.perf_counter() - start,
    )
    a = _alphas(model)
    if a is not None:
        record["alpha_final"] = a[0].tolist()
        record["alpha0_final"] = a[1].tolist()
        record["adaptive_factor_final"] = a[2].tolist()
    rezero = [m.alpha.detach() for m in model.modules() if isinstance(m, ReZeroResidual)]
    if rezero:
        record["rezero_alpha_final"] = torch.stack(rezero).tolist()
    if trace:
        record["alpha_trace"] = trace
    return record


def _fmt_ms(values: list[float]) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    m, s = mean_std(vals)
    return f"{m:.3f} ± {s:.3f}"


def _paired(records: list[dict[str, Any]], a: str, b: str, depth: int, lr: float) -> str:
    by = {(r["method"], r["seed"]): r for r in records if r["depth"] == depth and r["lr"] == lr}
    diffs = []
    for (method, seed), r in by.items():
        if method != a or (b, seed) not in by:
            continue
        va, vb = r.get("val_loss", math.nan), by[(b, seed)].get("val_loss", math.nan)
        if math.isfinite(va) and math.isfinite(vb):
            diffs.append(va - vb)
    if len(diffs) < 2:
        return "–"
    ci = t_interval(diffs)
    return f"{ci.mean:+.3f} [{ci.lo:+.3f}, {ci.hi:+.3f}]"


def _markdown(records: list[dict[str, Any]], size: dict[str, Any], seconds: float) -> str:
    out = [
        "Pre-registered crash definition: any non-finite training loss, or final training loss "
        "(mean of the last 10% of steps) above the initial loss. Exceptions are listed as errors "
        "and not counted.\n",
        f"Model: harness GPT, d={size['d_model']}, {size['heads']} heads, seq {size['seq_len']}, "
        f"batch {size['batch']}, causal SDPA attention, pre-LN (DeepNorm: post-LN); "
        f"{size['steps']} AdamW steps (betas 0.9/0.95, wd 0.1 on matrices), 10% warm-up + cosine, "
        f"clip 1.0; {size['seeds']} seeds per cell (paired: same init and data order); "
        f"validation loss in nats/byte over {size['eval_iters']} fixed batches. "
        f"Total wall time {seconds / 60:.1f} min.\n",
    ]
    rows = []
    for depth in size["depths"]:
        for lr in size["lrs"]:
            for method in size["methods"]:
                rs = [
                    r
                    for r in records
                    if r["depth"] == depth and r["lr"] == lr and r["method"] == method
                ]
                if not rs:
                    continue
                counted = [r for r in rs if r.get("crashed") is not None]
                k = sum(bool(r["crashed"]) for r in counted)
                n = len(counted)
                lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
                errors = len(rs) - n
                rows.append(
                    [
                        depth,
                        f"{lr:g}",
                        method,
                        f"{k}/{n} [{lo:.2f}, {hi:.2f}]" + (f" ({errors} errors)" if errors else ""),
                        _fmt_ms([r.get("val_loss", math.nan) for r in counted]),
                        _paired(records, method, "aion_fixed", depth, lr)
                        if method in ("aion", "aion_reference")
                        else "",
                        _paired(records, method, "plain", depth, lr) if method != "plain" else "",
                        _fmt_ms([r.get("grad_norm_median", math.nan) for r in counted]),
                        _fmt_ms([r.get("grad_norm_max", math.nan) for r in counted]),
                        _fmt_ms([r.get("clip_rate", math.nan) for r in counted]),
                    ]
                )
    out.append("## Crash rate, validation loss, gradient norms\n")
    out.append(
        "Crashes k/n with Wilson 95% interval; val loss mean ± std over seeds; Δ = paired "
        "difference of validation loss (method − control) with bootstrap 95% CI (negative = "
        "better than the control); gradient norms are pre-clip (mean ± std over seeds of the "
        "per-run median and max); clip rate = fraction of steps with norm > 1.\n"
    )
    out.append(
        markdown_table(
            [
                "depth",
                "lr",
                "method",
                "crashes",
                "val loss",
                "Δ vs aion_fixed",
                "Δ vs plain",
                "grad norm (median)",
                "grad norm (max)",
                "clip rate",
            ],
            rows,
        )
    )
    # best learning rate per method and depth
    best_rows = []
    for depth in size["depths"]:
        for method in size["methods"]:
            cells = []
            for lr in size["lrs"]:
                vals = [
                    r["val_loss"]
                    for r in records
                    if r["depth"] == depth
                    and r["lr"] == lr
                    and r["method"] == method
                    and r.get("crashed") is not None
                ]
                if vals and all(math.isfinite(v) for v in vals):
                    cells.append((statistics.fmean(vals), lr))
            crashes = sum(
                bool(r.get("crashed"))
                for r in records
                if r["depth"] == depth and r["method"] == method
            )
            total = sum(
                r.get("crashed") is not None
                for r in records
                if r["depth"] == depth and r["method"] == method
            )
            best = min(cells) if cells else None
            best_rows.append(
                [
                    depth,
                    method,
                    f"{crashes}/{total}",
                    f"{best[0]:.3f}" if best else "–",
                    f"{best[1]:g}" if best else "–",
                ]
            )
    out.append("\n## Summary per depth: crashes over all learning rates, best-lr validation loss\n")
    out.append(
        "Best lr = the lr with the lowest mean validation loss among those where every seed "
        "finished with a finite loss.\n"
    )
    out.append(
        markdown_table(["depth", "method", "crashes", "best val loss", "best lr"], best_rows)
    )
    # does α adapt?
    alpha_rows = []
    for depth in size["depths"]:
        for lr in size["lrs"]:
            for method in ALPHA_METHODS:
                rs = [
                    r
                    for r in records
                    if r["depth"] == depth
                    and r["lr"] == lr
                    and r["method"] == method
                    and "alpha_final" in r
                    and not r.get("crashed")
                ]
                if not rs:
                    continue
                alphas = [a for r in rs for a in r["alpha_final"]]
                factors = [f for r in rs for f in r["adaptive_factor_final"]]
                alpha0s = [a for r in rs for a in r["alpha0_final"]]
                alpha_rows.append(
                    [
                        depth,
                        f"{lr:g}",
                        method,
                        f"{min(alphas):.4f} / {statistics.median(alphas):.4f} / {max(alphas):.4f}",
                        f"{min(alpha0s):.4f} / {max(alpha0s):.4f}",
                        f"{min(factors):.4f} / {statistics.median(factors):.4f} / "
                        f"{max(factors):.4f}",
                    ]
                )
    out.append("\n## Does α adapt? Final α over all layers and non-crashed seeds\n")
    out.append(
        "α = α0 / (1 + β·r̄) (α of the last training forward). The adaptive factor 1/(1 + β·r̄) "
        "(from the final β and EMA r̄) is the only part of α that depends on the energy ratio; "
        "α0 is a learnable scalar in AION and in `aion_fixed` alike (β = 0 there: factor 1).\n"
    )
    out.append(
        markdown_table(
            [
                "depth",
                "lr",
                "method",
                "α min / median / max",
                "α0 min / max",
                "1/(1+β·r̄) min / median / max",
            ],
            alpha_rows,
        )
    )
    return "\n".join(out)


def _figure(records: list[dict[str, Any]], size: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traced = [r for r in records if "alpha_trace" in r]
    if not traced:
        return None
    depths = sorted({r["depth"] for r in traced})
    methods = [m for m in ALPHA_METHODS if any(r["method"] == m for r in traced)]
    fig, axes = plt.subplots(
        len(depths),
        len(methods),
        figsize=(4.2 * len(methods), 3.0 * len(depths)),
        squeeze=False,
        sharey="row",
    )
    for i, depth in enumerate(depths):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            rs = [r for r in traced if r["depth"] == depth and r["method"] == method]
            if not rs:
                ax.set_visible(False)
                continue
            # the lr closest to 1e-3 (a middle of the grid), first seed
            r = min(rs, key=lambda r: (abs(math.log10(r["lr"]) + 3), r["seed"]))
            steps = [t["step"] for t in r["alpha_trace"]]
            per_layer = list(zip(*(t["alpha"] for t in r["alpha_trace"]), strict=True))
            cmap = plt.get_cmap("viridis")
            for k, series in enumerate(per_layer):
                ax.plot(steps, series, color=cmap(k / max(1, len(per_layer) - 1)), lw=0.7)
            ax.set_title(f"{method}, L={depth}, lr={r['lr']:g}, seed {r['seed']}", fontsize=9)
            ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("α per residual (dark = first)")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    device = setup_run(args)
    size = args.size
    corpus = corpus_for_args(args)
    name = args.name or ("crash_quick" if args.quick else "crash")
    config = {
        **size,
        "corpus": corpus.name,
        "crash_definition": "non-finite training loss, or mean loss of the last 10% of steps "
        "> loss at step 0",
        "optimizer": "AdamW betas (0.9, 0.95), wd 0.1 on matrices, 0 on gains/biases/residual "
        "scalars, 10% warm-up + cosine to 0.1, clip 1.0",
        "threads": torch.get_num_threads(),
        "argv": argv if argv is not None else sys.argv[1:],
    }
    records: list[dict[str, Any]] = []
    total_runs = len(size["depths"]) * len(size["lrs"]) * size["seeds"] * len(size["methods"])
    done = 0
    start = time.perf_counter()
    for depth in size["depths"]:
        for lr in size["lrs"]:
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
                        keep_trace=seed == 0 and method in ALPHA_METHODS,
                    )
                    records.append(rec)
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
        # checkpoint the results after every depth
        seconds = time.perf_counter() - start
        write_results(
            "aion-torch",
            name,
            config={**config, "completed_depths": sorted({r["depth"] for r in records})},
            records=records,
            markdown=_markdown(records, size, seconds),
            figures=None,
            out_dir=args.out,
            device=device,
        )
    seconds = time.perf_counter() - start
    fig = _figure(records, size)
    folder = write_results(
        "aion-torch",
        name,
        config={**config, "completed_depths": sorted({r["depth"] for r in records})},
        records=records,
        markdown=_markdown(records, size, seconds),
        figures={"alpha": fig} if fig is not None else None,
        out_dir=args.out,
        device=device,
    )
    print(f"wrote {folder}/{name}.md")


if __name__ == "__main__":
    main()
