"""Loss vs controls: AuON (paper, repo, brake) against AdamW, Muon, SGD-Nesterov and normalised SGD.

Small pre-norm GPT (RMSNorm, untied embedding/head) on Shakespeare bytes (``--quick``: the
embedded pydoc corpus). Embeddings, head and vectors always use AdamW (betas (0.9, 0.95), same lr in
every arm); only the optimiser of the hidden matrices varies. Every arm gets a learning-rate grid
(×3 spacing around its default), 5% warm-up then linear decay to 0, the best lr is picked on the
validation loss of a selection seed (100) that is not reported, and the reported seeds (0, 1, 2)
then run at that lr; same token budget for all arms. When the selected lr lies on the edge of the
grid, the grid is extended by one ×3 step on that side (up to ``--max-extend`` times) until the
optimum is interior; the JSON and markdown record the final grid and whether it is interior.
Paired differences use Student-t 95% intervals over the reported seeds. Also records the
singular-value spread σmax/σmin of the applied updates of the middle layer.

    uv run python -m benchmarks.bench_auon_quality --threads 1   # default (≈15 min)
    uv run python -m benchmarks.bench_auon_quality --quick       # ≈1 min smoke run
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from auon import AuON, HybridAuON, Muon, matrix_param_groups
from benchmarks.harness import (
    GPT,
    GPTConfig,
    bits_per_byte,
    common_parser,
    corpus_for_args,
    downsample,
    estimate_loss,
    markdown_table,
    mean_std,
    seed_everything,
    setup_run,
    t_interval,
    train_lm,
    write_results,
)

_ADAMW_LR = 3e-3
_SELECTION_SEED = 100
_FINAL_ITERS = 16  # validation batches at the end of a run
_CURVE_ITERS = 4  # validation batches at the intermediate points of a plotted run
# the comparisons the documentation discusses, besides "vs Muon" and "vs normalised SGD"
_EXTRA_PAIRS = (("hybrid_1step", "adamw"), ("auon_repo", "sgd_nesterov"))


class _EMANesterov(Optimizer):
    """Controls: SGD-Nesterov in EMA form, optionally Frobenius-normalised with AuON's shape factor.

    ``m ← lerp(m, g, 1−μ)``; ``G = lerp(g, m, μ)``; ``p ← p − lr·G`` (``normalise=False``) or
    ``p ← p − lr·sqrt(max(1, rows/cols))·G/(‖G‖_F + 1e-7)`` (the cosh-free AuON control).
    """

    def __init__(
        self, params: list[Tensor], lr: float, *, normalise: bool, momentum: float = 0.95
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "normalise": normalise})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                m = st["momentum_buffer"]
                m.lerp_(p.grad, 1 - mu)
                G = p.grad.lerp(m, mu)
                if group["normalise"]:
                    rows = p.shape[0]
                    cols = p.numel() // rows
                    G = G * (
                        math.sqrt(max(1.0, rows / cols)) / (torch.linalg.vector_norm(G) + 1e-7)
                    )
                p.add_(G, alpha=-group["lr"])
        return None


class _Chain:
    """Two optimisers driven as one (``param_groups`` concatenated so schedules reach both)."""

    def __init__(self, *opts: Optimizer) -> None:
        self.opts = opts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.opts for g in o.param_groups]

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)


MatrixFactory = Callable[[list[Tensor], float], Optimizer]

# arm → (matrix optimiser factory, grid centre). Centres: AdamW/Muon at their usual values; the
# others at the best lr of a first 3-point run (×3 around 0.24 / 0.3 / 0.02), whose optimum fell on
# a grid edge — the 5-point grid below then spans ×81 around them.
ARMS: dict[str, tuple[MatrixFactory | None, float]] = {
    "adamw": (None, _ADAMW_LR),
    "muon": (lambda ps, lr: Muon(ps, lr=lr, weight_decay=0.0), 0.02),
    "auon_paper": (lambda ps, lr: AuON(ps, lr=lr), 0.08),
    "auon_repo": (lambda ps, lr: AuON(ps, lr=lr, variant="repo"), 0.9),
    "auon_brake": (lambda ps, lr: AuON(ps, lr=lr, brake="rms"), 0.08),
    "hybrid_1step": (lambda ps, lr: HybridAuON(ps, lr=lr), 0.06),
    "sgd_nesterov": (lambda ps, lr: _EMANesterov(ps, lr, normalise=False), 0.9),
    "normalized_sgd": (lambda ps, lr: _EMANesterov(ps, lr, normalise=True), 0.08),
}
QUICK_ARMS = ("adamw", "muon", "auon_paper", "normalized_sgd")


def _build(model: GPT, arm: str, lr: float) -> _Chain:
    mats, others = matrix_param_groups(model, lr=lr, adamw_lr=_ADAMW_LR)
    factory, _ = ARMS[arm]
    if factory is None:  # AdamW everywhere: matrices get the tuned lr, the rest the shared one
        groups = [{**g, "lr": lr} for g in mats] + others
        return _Chain(torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.0))
    matrix_params = [p for g in mats for p in g["params"]]
    return _Chain(
        factory(matrix_params, lr), torch.optim.AdamW(others, betas=(0.9, 0.95), weight_decay=0.0)
    )


def _schedule(steps: int) -> Callable[[int], float]:
    warm = max(1, round(0.05 * steps))

    def mult(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / (steps - warm))

    return mult


def _spectrum(delta: Tensor) -> dict[str, float]:
    s = torch.linalg.svdvals(delta.double())
    s = s[s > 1e-6 * s.max()]
    p = s.square() / s.square().sum()
    return {
        "spread": float(s.max() / s.min()),
        "effective_rank": float(torch.exp(-(p * p.log()).sum())),
        "full_rank": float(min(delta.shape)),
    }


def _run(
    arm: str,
    lr: float,
    seed: int,
    cfg: GPTConfig,
    corpus: Any,
    steps: int,
    batch: int,
    device: torch.device,
    spectra_at: tuple[int, ...],
    progress: bool,
    *,
    traces: bool,
) -> dict[str, Any]:
    """One training run; ``traces`` keeps the (downsampled) curves and spectra for the plots."""
    seed_everything(seed)
    model = GPT(cfg).to(device)
    opt = _build(model, arm, lr)
    mid: Any = model.blocks[len(model.blocks) // 2]
    watched = {
        "attn.q_proj": mid.attn.q_proj.weight,
        "mlp.fc1": mid.mlp.fc1.weight,
        "mlp.fc2": mid.mlp.fc2.weight,
    }
    prev: dict[str, Tensor] = {}
    spectra: list[dict[str, Any]] = []
    eval_every = max(1, steps // 10)
    val_curve: list[tuple[int, float]] = []
    eval_seconds = [0.0]

    def val_loss(iters: int) -> float:
        """Validation loss on the first ``iters`` of the fixed validation batches."""
        return estimate_loss(
            model,
            corpus.val,
            batch_size=32,
            seq_len=cfg.seq_len,
            iters=iters,
            seed=1234,
            device=device,
        )

    def on_step(step: int, loss: Tensor, grad_norm: Tensor, m: nn.Module) -> None:
        # called before the update of ``step``: the model has had ``step`` updates
        if not traces:
            return
        if step > 0 and step % eval_every == 0:
            e0 = time.perf_counter()
            v = val_loss(_CURVE_ITERS)
            val_curve.append((step, bits_per_byte(v) if math.isfinite(v) else math.nan))
            eval_seconds[0] += time.perf_counter() - e0
        if prev:  # the update applied at step - 1
            for name, w in watched.items():
                spectra.append(
                    {"step": step - 1, "matrix": name, **_spectrum(w.detach() - prev[name])}
                )
            prev.clear()
        if step in spectra_at:
            prev.update({name: w.detach().clone() for name, w in watched.items()})

    t0 = time.perf_counter()
    log = train_lm(
        model,
        cast(Optimizer, opt),
        corpus.train,
        steps=steps,
        batch_size=batch,
        seq_len=cfg.seq_len,
        seed=seed,
        device=device,
        clip=1.0,
        schedule=_schedule(steps),
        on_step=on_step,
        progress_bar=progress,
        desc=f"{arm} lr={lr:.3g} s{seed}",
    )
    train_seconds = log.seconds - eval_seconds[0]  # the curve evaluations are not training
    val = val_loss(_FINAL_ITERS)
    bpb = bits_per_byte(val) if math.isfinite(val) else math.nan
    tokens = steps * batch * cfg.seq_len
    rec: dict[str, Any] = {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "val_loss": val,
        "val_bpb": bpb,
        "crashed": log.crashed,
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / train_seconds if train_seconds > 0 else math.nan,
    }
    if traces:
        val_curve.append((len(log.losses), bpb))
        idx = downsample(list(range(len(log.losses))))
        rec["train_loss_steps"] = [int(i) for i in idx]
        rec["train_loss"] = [float(f"{log.losses[int(i)]:.5g}") for i in idx]
        rec["val_curve_steps"] = [s for s, _ in val_curve]
        rec["val_curve_bpb"] = [float(f"{v:.5g}") for _, v in val_curve]
        rec["spectra"] = spectra
    return rec


def _smooth(xs: list[float], k: int = 10) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _score(r: dict[str, Any]) -> float:
    """Selection key: validation loss, a crashed or non-finite run ranks last."""
    v = float(r["val_loss"])
    return v if math.isfinite(v) and not r["crashed"] else math.inf


def _tune(
    arm: str,
    factors: list[float],
    max_extend: int,
    run: Callable[[str, float, int, bool], dict[str, Any]],
    selection_seed: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the lr grid on the selection seed, extending it by ×3 at an edge optimum.

    Returns the tuning records (sorted by lr) and the selection summary.
    """
    default = ARMS[arm][1]
    by_factor: dict[float, dict[str, Any]] = {}

    def visit(f: float) -> None:
        if f in by_factor:
            return
        r = run(arm, default * f, selection_seed, False)
        r["phase"] = "tune"
        r["lr_factor"] = f
        by_factor[f] = r
        print(
            f"{arm:15s} lr={r['lr']:.4g} selection seed {selection_seed}: "
            f"val {r['val_bpb']:.4f} bits/byte",
            flush=True,
        )

    for f in factors:
        visit(f)
    extensions: list[float] = []
    while True:
        fs = sorted(by_factor)
        best_f = min(fs, key=lambda f: (_score(by_factor[f]), f))
        at_low, at_high = best_f == fs[0], best_f == fs[-1]
        if len(fs) < 3 or not (at_low or at_high) or len(extensions) >= max_extend:
            break
        if not math.isfinite(_score(by_factor[best_f])):
            break  # every run diverged: nothing to extend towards
        new = fs[0] / 3.0 if at_low else fs[-1] * 3.0
        extensions.append(new)
        visit(new)
    fs = sorted(by_factor)
    best_f = min(fs, key=lambda f: (_score(by_factor[f]), f))
    interior: bool | None = None if len(fs) < 3 else fs[0] < best_f < fs[-1]
    summary = {
        "default_lr": default,
        "grid_factors": fs,
        "grid_lrs": [default * f for f in fs],
        "initial_grid_factors": list(factors),
        "extensions": extensions,
        "selected_factor": best_f,
        "selected_lr": default * best_f,
        "interior": interior,
        "selection_seed": selection_seed,
    }
    return [by_factor[f] for f in fs], summary


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--arms", default=None, help="comma-separated subset of arms")
    parser.add_argument(
        "--selection-seed",
        type=int,
        default=_SELECTION_SEED,
        help="seed of the lr grid (not among the reported seeds 0..n-1)",
    )
    parser.add_argument(
        "--max-extend",
        type=int,
        default=3,
        help="at most this many ×3 extensions of an arm's grid when its optimum is on an edge",
    )
    args = parser.parse_args(argv)
    device = setup_run(args)
    corpus = corpus_for_args(args)
    grid: tuple[float, ...]
    if args.gpu:
        cfg = GPTConfig(
            d_model=512, n_layers=8, n_heads=8, seq_len=512, norm="rmsnorm", tie_embeddings=False
        )
        steps, batch, seeds, grid = 1000, 32, 5, (1 / 9, 1 / 3, 1.0, 3.0, 9.0)
        arms = list(ARMS)
    elif args.quick:
        cfg = GPTConfig(
            d_model=64, n_layers=2, n_heads=2, seq_len=64, norm="rmsnorm", tie_embeddings=False
        )
        steps, batch, seeds, grid = 100, 16, 1, (1.0,)
        arms = list(QUICK_ARMS)
    else:
        cfg = GPTConfig(
            d_model=64, n_layers=2, n_heads=2, seq_len=64, norm="rmsnorm", tie_embeddings=False
        )
        steps, batch, seeds, grid = 300, 16, 3, (1 / 9, 1 / 3, 1.0, 3.0, 9.0)
        arms = list(ARMS)
    steps = args.steps or steps
    seeds = args.seeds or seeds
    if args.arms:
        arms = args.arms.split(",")
    report_seeds = list(range(seeds))
    tuned = len(grid) > 1
    if tuned and args.selection_seed in report_seeds:
        raise SystemExit(f"--selection-seed {args.selection_seed} is among the reported seeds")
    spectra_at = tuple(s for s in (10, 100, steps - 2) if s < steps - 1)
    progress = not args.no_progress

    def run(arm: str, lr: float, seed: int, traces: bool) -> dict[str, Any]:
        return _run(
            arm, lr, seed, cfg, corpus, steps, batch, device, spectra_at, progress, traces=traces
        )

    records: list[dict[str, Any]] = []
    selection: dict[str, dict[str, Any]] = {}
    final: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        if tuned:
            tuning, selection[arm] = _tune(
                arm, list(grid), args.max_extend, run, args.selection_seed
            )
            records += tuning
        else:  # --quick: each arm's default lr, no selection
            selection[arm] = {
                "default_lr": ARMS[arm][1],
                "grid_factors": [1.0],
                "grid_lrs": [ARMS[arm][1]],
                "initial_grid_factors": [1.0],
                "extensions": [],
                "selected_factor": 1.0,
                "selected_lr": ARMS[arm][1],
                "interior": None,
                "selection_seed": None,
            }
        lr = selection[arm]["selected_lr"]
        final[arm] = []
        for seed in report_seeds:
            r = run(arm, lr, seed, True)
            r["phase"] = "report"
            r["lr_factor"] = selection[arm]["selected_factor"]
            print(
                f"{arm:15s} lr={lr:.4g} seed {seed}: val {r['val_bpb']:.4f} bits/byte", flush=True
            )
            final[arm].append(r)
            records.append(r)

    rows, summary = [], {}
    for arm in arms:
        sel = selection[arm]
        vals = [float(r["val_bpb"]) for r in final[arm]]
        m, s = mean_std(vals)
        tps = [float(r["tokens_per_s"]) for r in final[arm]]
        secs = [float(r["train_seconds"]) for r in final[arm]]
        summary[arm] = {
            **sel,
            "mean_bpb": m,
            "std_bpb": s,
            "n": len(vals),
            "seeds": [int(r["seed"]) for r in final[arm]],
            "per_seed_bpb": vals,
            "crashed": [bool(r["crashed"]) for r in final[arm]],
            "mean_train_seconds": sum(secs) / len(secs),
            "mean_tokens_per_s": sum(tps) / len(tps),
        }
        interior = {True: "yes", False: "**no (edge)**", None: "not tuned"}[sel["interior"]]
        ext = ", ".join(f"×{f:.4g}" for f in sel["extensions"]) if sel["extensions"] else "none"
        rows.append(
            [
                arm,
                f"{sel['selected_lr']:.4g}",
                interior,
                ext,
                f"{m:.4f} ± {s:.4f}",
                len(vals),
                f"{summary[arm]['mean_train_seconds']:.1f}",
                f"{summary[arm]['mean_tokens_per_s']:,.0f}",
            ]
        )
    curve_rows = [
        [
            arm,
            ", ".join(
                f"{r['lr']:.3g}: {r['val_bpb']:.4f}"
                for r in records
                if r["arm"] == arm and r["phase"] == "tune"
            ),
        ]
        for arm in arms
        if tuned
    ]
    pairs: list[tuple[str, str]] = []
    for ref in ("muon", "normalized_sgd"):
        if ref in arms:
            pairs += [(arm, ref) for arm in arms if arm != ref]
    pairs += [(a, b) for a, b in _EXTRA_PAIRS if a in arms and b in arms and (a, b) not in pairs]
    diffs: list[dict[str, Any]] = []
    diff_rows = []
    for arm, ref in pairs:
        a = {int(r["seed"]): float(r["val_bpb"]) for r in final[arm]}
        b = {int(r["seed"]): float(r["val_bpb"]) for r in final[ref]}
        common = sorted(k for k in a if k in b)
        d = [a[k] - b[k] for k in common]
        if not d:
            continue
        ci = t_interval(d)
        diffs.append(
            {
                "arm": arm,
                "reference": ref,
                "seeds": common,
                "per_seed_diff": d,
                **ci.as_dict(),
                "excludes_zero": ci.excludes_zero if ci.n > 1 else None,
            }
        )
        verdict = "n/a" if ci.n < 2 else ("yes" if ci.excludes_zero else "no")
        interval = "n/a" if ci.n < 2 else f"[{ci.lo:+.4f}, {ci.hi:+.4f}]"
        diff_rows.append([arm, ref, f"{ci.mean:+.4f}", interval, ci.n, verdict])
    spec_rows = []
    for arm in arms:
        r0 = final[arm][0]
        for sp in r0["spectra"]:
            spec_rows.append(
                [
                    arm,
                    sp["step"],
                    sp["matrix"],
                    f"{sp['spread']:.1f}",
                    f"{sp['effective_rank']:.1f} / {sp['full_rank']:.0f}",
                ]
            )

    grid_text = ", ".join(f"{f:.4g}" for f in grid)
    if tuned:
        protocol = (
            f"lr grid ×[{grid_text}] around each arm's default, run on selection seed "
            f"{args.selection_seed} (not reported); an optimum on a grid edge extends the grid by "
            f"one ×3 step on that side (at most {args.max_extend} times); the selected lr is then "
            f"run on the reported seeds {report_seeds}."
        )
    else:
        protocol = f"each arm's default lr (no tuning); seeds {report_seeds}."
    md = (
        f"Corpus {corpus.name}; GPT d={cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"seq {cfg.seq_len}, batch {batch}, {steps} steps ({steps * batch * cfg.seq_len:,} tokens "
        f"per run), clip 1.0, 5% warm-up + linear decay; embeddings/head/vectors AdamW lr "
        f"{_ADAMW_LR} in every arm; {protocol} Validation: {_FINAL_ITERS} fixed batches of 32 × "
        f"{cfg.seq_len} bytes of the validation split at the end of the schedule (the curves use "
        f"the first {_CURVE_ITERS} of them).\n\n"
        "## Final validation bits/byte at the selected lr (lower is better)\n\n"
        + markdown_table(
            [
                "arm",
                "selected lr",
                "interior",
                "grid extensions",
                "val bits/byte mean ± std",
                "n",
                "train s/run",
                "tokens/s",
            ],
            rows,
        )
        + (
            f"\n\n## lr curves on selection seed {args.selection_seed} "
            "(lr: final validation bits/byte)\n\n"
            + markdown_table(["arm", "lr: val bits/byte"], curve_rows)
            if tuned
            else ""
        )
        + "\n\n## Paired differences (arm − reference, same seeds; Student-t 95% interval, "
        "n − 1 df)\n\n"
        + markdown_table(
            ["arm", "reference", "mean diff bits/byte", "95% t-interval", "n", "excludes 0"],
            diff_rows,
        )
        + "\n\n## Update spectra, middle layer, seed 0 at the selected lr "
        "(σmax/σmin over σ > 1e-6·σmax)\n\n"
        + markdown_table(["arm", "step", "matrix", "σmax/σmin", "effective rank / full"], spec_rows)
        + "\n"
    )
    figures = _figures(arms, records, final, selection, tuned, args.selection_seed)
    config = {
        "quick": args.quick,
        "gpu": args.gpu,
        "model": cfg.__dict__,
        "steps": steps,
        "batch": batch,
        "seeds": report_seeds,
        "selection_seed": args.selection_seed if tuned else None,
        "max_extend": args.max_extend,
        "lr_grid_factors": list(grid),
        "defaults": {a: ARMS[a][1] for a in arms},
        "adamw_lr_aux": _ADAMW_LR,
        "val_iters_final": _FINAL_ITERS,
        "val_iters_curve": _CURVE_ITERS,
        "corpus": corpus.name,
        "summary": summary,
        "paired_differences": diffs,
    }
    path = write_results(
        "auon",
        "quality_quick" if args.quick else "quality",
        config=config,
        records=records,
        markdown=md,
        figures=figures,
        out_dir=args.out,
        device=device,
    )
    print(md)
    print(f"wrote {path}")


def _figures(
    arms: list[str],
    records: list[dict[str, Any]],
    final: dict[str, list[dict[str, Any]]],
    selection: dict[str, dict[str, Any]],
    tuned: bool,
    selection_seed: int,
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axt) = plt.subplots(1, 2, figsize=(12, 4.2))
    finite: list[float] = []
    train_finite: list[float] = []
    for arm in arms:
        runs = final[arm]
        lr = selection[arm]["selected_lr"]
        n = min(len(r["val_curve_bpb"]) for r in runs)
        steps_ = runs[0]["val_curve_steps"][:n]
        mean = [sum(r["val_curve_bpb"][i] for r in runs) / len(runs) for i in range(n)]
        finite += [v for v in mean if math.isfinite(v)]
        (line,) = ax.plot(steps_, mean, "o-", ms=3, lw=1, label=f"{arm} (lr {lr:.3g})")
        m = min(len(r["train_loss"]) for r in runs)
        tr = [bits_per_byte(sum(r["train_loss"][i] for r in runs) / len(runs)) for i in range(m)]
        tr = _smooth(tr, 5)
        train_finite += [v for v in tr if math.isfinite(v)]
        axt.plot(
            runs[0]["train_loss_steps"][:m],
            tr,
            lw=1,
            color=line.get_color(),
            label=arm,
        )
    n_seeds = len(next(iter(final.values())))
    ax.set_title(f"Validation bits/byte at the selected lr (mean of {n_seeds} seeds)")
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits/byte")
    if finite:
        ax.set_ylim(min(finite) - 0.05, min(max(finite), min(finite) + 2.5) + 0.05)
    ax.legend(fontsize=7)
    axt.set_title("Training loss (same runs, 5-point moving mean)")
    axt.set_xlabel("step")
    axt.set_ylabel("train bits/byte")
    if train_finite:
        lo = min(train_finite)
        axt.set_ylim(lo - 0.05, min(max(train_finite), lo + 2.5) + 0.05)
    axt.legend(fontsize=7)
    fig.tight_layout()
    figures: dict[str, Any] = {"": fig}
    if tuned:
        fig2, ax2 = plt.subplots(figsize=(7, 4.2))
        tuned_vals = [
            float(r["val_bpb"])
            for r in records
            if r["phase"] == "tune" and math.isfinite(float(r["val_bpb"]))
        ]
        for arm in arms:
            pts = sorted(
                (r["lr"], r["val_bpb"]) for r in records if r["arm"] == arm and r["phase"] == "tune"
            )
            (line,) = ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=arm)
            sel = selection[arm]["selected_lr"]
            ax2.plot([sel], [dict(pts)[sel]], "*", ms=10, color=line.get_color())
        ax2.set_xscale("log")
        ax2.set_title(
            f"Final validation bits/byte vs lr (selection seed {selection_seed}; ★ selected)"
        )
        ax2.set_xlabel("matrix learning rate")
        ax2.set_ylabel("validation bits/byte")
        if tuned_vals:
            lo = min(tuned_vals)
            ax2.set_ylim(lo - 0.05, min(max(tuned_vals), lo + 1.2) + 0.05)
        ax2.legend(fontsize=7)
        fig2.tight_layout()
        figures["lr"] = fig2
    return figures


if __name__ == "__main__":
    main()
