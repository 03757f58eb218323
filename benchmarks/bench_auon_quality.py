"""Loss vs controls: AuON (paper, repo, brake) against AdamW, Muon, SGD-Nesterov and normalised SGD.

Small pre-norm GPT (RMSNorm, untied embedding/head) on Shakespeare bytes (``--quick``: the
embedded pydoc corpus). Embeddings, head and vectors always use AdamW (betas (0.9, 0.95), same lr in
every arm); only the optimiser of the hidden matrices varies. Every arm gets a learning-rate grid
(×3 spacing around its default), 5% warm-up then linear decay to 0, the best lr is picked on the
validation loss of seed 0, then more seeds run at that lr; same token budget for all arms.
Also records the singular-value spread σmax/σmin of the applied updates of the middle layer.

    uv run python -m benchmarks.bench_auon_quality           # default (≈10 min on 2 cores)
    uv run python -m benchmarks.bench_auon_quality --quick   # ≈1 min smoke run
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from auon import AuON, HybridAuON, Muon, param_groups
from benchmarks.harness import (
    GPT,
    GPTConfig,
    bits_per_byte,
    common_parser,
    corpus_for_args,
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
    mats, others = param_groups(model, lr=lr, adamw_lr=_ADAMW_LR)
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
) -> dict[str, Any]:
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

    def on_step(step: int, loss: Tensor, grad_norm: Tensor, m: nn.Module) -> None:
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
    val = estimate_loss(
        model, corpus.val, batch_size=32, seq_len=cfg.seq_len, iters=16, seed=1234, device=device
    )
    return {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "val_loss": val,
        "val_bpb": bits_per_byte(val) if math.isfinite(val) else float("nan"),
        "crashed": log.crashed,
        "seconds": time.perf_counter() - t0,
        "tokens": steps * batch * cfg.seq_len,
        "losses": log.losses,
        "spectra": spectra,
    }


def _smooth(xs: list[float], k: int = 10) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--arms", default=None, help="comma-separated subset of arms")
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
    spectra_at = tuple(s for s in (10, 100, steps - 2) if s < steps - 1)
    progress = not args.no_progress
    grid = tuple(grid)
    records: list[dict[str, Any]] = []
    best: dict[str, float] = {}
    for arm in arms:
        default = ARMS[arm][1]
        tuning = [
            _run(arm, default * f, 0, cfg, corpus, steps, batch, device, spectra_at, progress)
            for f in grid
        ]
        for r in tuning:
            r["phase"] = "tune"
            print(
                f"{arm:15s} lr={r['lr']:.4g} seed 0: val {r['val_bpb']:.4f} bits/byte", flush=True
            )
        ok = [r for r in tuning if math.isfinite(r["val_loss"])]
        chosen = min(ok, key=lambda r: r["val_loss"]) if ok else tuning[0]
        best[arm] = chosen["lr"]
        records += tuning
        for seed in range(1, seeds):
            r = _run(
                arm, chosen["lr"], seed, cfg, corpus, steps, batch, device, spectra_at, progress
            )
            r["phase"] = "seed"
            print(
                f"{arm:15s} lr={r['lr']:.4g} seed {seed}: val {r['val_bpb']:.4f} bits/byte",
                flush=True,
            )
            records.append(r)

    def finals(arm: str) -> list[dict[str, Any]]:
        return sorted(
            [
                r
                for r in records
                if r["arm"] == arm
                and r["lr"] == best[arm]
                and (r["phase"] == "seed" or r["seed"] == 0)
            ],
            key=lambda r: int(r["seed"]),
        )

    rows, summary = [], {}
    for arm in arms:
        vals = [float(r["val_bpb"]) for r in finals(arm)]
        m, s = mean_std(vals)
        summary[arm] = {"lr": best[arm], "mean_bpb": m, "std_bpb": s, "per_seed": vals}
        lr_curve = ", ".join(
            f"{r['lr']:.3g}: {r['val_bpb']:.3f}"
            for r in records
            if r["arm"] == arm and r["phase"] == "tune"
        )
        rows.append([arm, f"{best[arm]:.3g}", f"{m:.4f} ± {s:.4f}", len(vals), lr_curve])
    diff_rows = []
    for ref in ("muon", "normalized_sgd"):
        if ref not in arms:
            continue
        for arm in arms:
            if arm == ref:
                continue
            a = {int(r["seed"]): float(r["val_bpb"]) for r in finals(arm)}
            b = {int(r["seed"]): float(r["val_bpb"]) for r in finals(ref)}
            d = [a[k] - b[k] for k in sorted(a) if k in b]
            if not d:
                continue
            ci = t_interval(d)
            diff_rows.append([arm, ref, f"{ci.mean:+.4f}", f"[{ci.lo:+.4f}, {ci.hi:+.4f}] (n={ci.n})"])
    spec_rows = []
    for arm in arms:
        r0 = next(r for r in finals(arm) if int(r["seed"]) == 0)
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

    md = (
        f"Corpus {corpus.name}; GPT d={cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, seq {cfg.seq_len}, "
        f"batch {batch}, {steps} steps ({steps * batch * cfg.seq_len:,} tokens per run), clip 1.0, 5% warm-up + "
        f"linear decay; embeddings/head/vectors AdamW lr {_ADAMW_LR} in every arm; lr grid ×{list(grid)} around "
        f"each arm's default, best lr on seed 0's validation loss; {seeds} seed(s) at the best lr.\n\n"
        "## Final validation bits/byte (lower is better)\n\n"
        + markdown_table(
            ["arm", "best lr", "val bits/byte mean ± std", "seeds", "lr: val bits/byte (seed 0)"],
            rows,
        )
        + "\n\n## Paired differences (arm − reference, same seeds; 95% bootstrap CI of the mean)\n\n"
        + markdown_table(["arm", "reference", "mean diff bits/byte", "95% CI"], diff_rows)
        + "\n\n## Update spectra, middle layer, seed 0 at the best lr (σmax/σmin over σ > 1e-6·σmax)\n\n"
        + markdown_table(["arm", "step", "matrix", "σmax/σmin", "effective rank / full"], spec_rows)
        + "\n"
    )
    figures = _figures(arms, records, best, finals)
    config = {
        "quick": args.quick,
        "gpu": args.gpu,
        "model": cfg.__dict__,
        "steps": steps,
        "batch": batch,
        "seeds": seeds,
        "lr_grid_factors": list(grid),
        "defaults": {a: ARMS[a][1] for a in arms},
        "adamw_lr_aux": _ADAMW_LR,
        "corpus": corpus.name,
        "summary": summary,
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
    best: dict[str, float],
    finals: Callable[[str], list[dict[str, Any]]],
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in arms:
        runs = finals(arm)
        n = min(len(r["losses"]) for r in runs)
        mean = [sum(r["losses"][i] for r in runs) / len(runs) for i in range(n)]
        ax.plot(
            [bits_per_byte(v) for v in _smooth(mean)], label=f"{arm} (lr {best[arm]:.3g})", lw=1
        )
    ax.set_xlabel("step")
    ax.set_ylabel("train bits/byte (10-step mean, seed mean)")
    ax.set_ylim(top=6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig2, ax2 = plt.subplots(figsize=(7, 4))
    for arm in arms:
        pts = sorted(
            (r["lr"], r["val_bpb"]) for r in records if r["arm"] == arm and r["phase"] == "tune"
        )
        ax2.plot([p[0] / pts[len(pts) // 2][0] for p in pts], [p[1] for p in pts], "o-", label=arm)
    ax2.set_xscale("log")
    ax2.set_xlabel("lr / arm default")
    ax2.set_ylabel("val bits/byte (seed 0)")
    ax2.legend(fontsize=7)
    fig2.tight_layout()
    return {"": fig, "lr": fig2}


if __name__ == "__main__":
    main()
