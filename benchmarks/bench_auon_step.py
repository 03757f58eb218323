"""Optimiser step time: AuON vs AdamW vs Muon on a GPT's hidden matrices and on square matrices.

Times ``step()`` only, on pre-filled gradients, arms interleaved in rounds (harness
``interleaved_timing``), and reports medians, ratios to ``torch.optim.AdamW`` (foreach) measured in
the same run, µs per million parameters, host syncs per step, ATen operators per step (each an
eager kernel launch) and, on CUDA, peak memory. 10 warm-up rounds are discarded and 50 measured
(``--quick``: 2 and 5); every raw sample is kept in the JSON (µs, 4 significant digits). Eager
only (compiled AuON is not timed here). Targets (issue 4): AuON step ≤ 1.25× AdamW's; ≥ 3× faster
than Muon at 1024² and above. Also writes ``brake_factor.*``: how much the opt-in RMS brake
changes unit-Frobenius AuON updates (``--brake-only`` writes just that file).

    uv run python -m benchmarks.bench_auon_step            # GPT d=256 and d=512, squares 512..2048
    uv run python -m benchmarks.bench_auon_step --quick    # GPT d=128, squares 512 and 1024
    uv run python -m benchmarks.bench_auon_step --brake-only
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from auon import AuON, HybridAuON, Muon, cosh_factor, matrix_param_groups, rms_brake_factor
from benchmarks.harness import (
    GPT,
    GPTConfig,
    common_parser,
    count_aten_ops,
    count_host_syncs,
    interleaved_timing,
    markdown_table,
    setup_run,
    write_results,
)

Arm = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def _arms() -> dict[str, Arm]:
    arms: dict[str, Arm] = {
        "adamw_foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
        "adamw_fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "auon_foreach": lambda ps: AuON(ps, lr=0.02, foreach=True),
        "auon_foreach_propagate": lambda ps: AuON(ps, lr=0.02, foreach=True, nonfinite="propagate"),
        "auon_loop": lambda ps: AuON(ps, lr=0.02, foreach=False),
        "hybrid_1step": lambda ps: HybridAuON(ps, lr=0.02),
        "muon_ours": lambda ps: Muon(ps, lr=0.02, weight_decay=0.0),
        "muon_polar_express": lambda ps: Muon(
            ps, lr=0.02, weight_decay=0.0, ns_coefficients="polar_express"
        ),
    }
    if hasattr(torch.optim, "Muon"):
        arms["torch_muon"] = lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0)
    return arms


def _gpt_shapes(d_model: int, n_layers: int) -> list[tuple[int, ...]]:
    model = GPT(GPTConfig(d_model=d_model, n_layers=n_layers, n_heads=max(1, d_model // 64)))
    mats, _ = matrix_param_groups(model, lr=0.02, adamw_lr=1e-3)
    return [tuple(p.shape) for g in mats for p in g["params"]]


def _measure(
    name: str, shapes: list[tuple[int, ...]], warmup: int, iters: int, device: torch.device
) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(s, generator=gen) * 0.02 for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    opts: dict[str, torch.optim.Optimizer] = {}
    for arm, make in _arms().items():
        ps = [nn.Parameter(b.clone().to(device)) for b in base]
        for p, g in zip(ps, grads, strict=True):
            p.grad = g.clone().to(device)
        opts[arm] = make(ps)
    timings = interleaved_timing(
        {arm: opt.step for arm, opt in opts.items()}, warmup=warmup, iters=iters, device=device
    )
    n_params = sum(b.numel() for b in base)
    ref = timings["adamw_foreach"]
    records = []
    for arm, t in timings.items():
        peak_mb: float | None = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            opts[arm].step()
            torch.cuda.synchronize(device)
            peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        records.append(
            {
                "setting": name,
                "arm": arm,
                "n_tensors": len(shapes),
                "n_params": n_params,
                "median_ms": t.median_ms,
                "q1_ms": t.q1_ms,
                "q3_ms": t.q3_ms,
                "ratio_vs_adamw_foreach": t.ratio(ref),
                "us_per_mparam": t.median_ms * 1e3 / (n_params / 1e6),
                "host_syncs_per_step": count_host_syncs(opts[arm].step),
                "aten_ops_per_step": count_aten_ops(opts[arm].step),
                "peak_memory_mb": peak_mb,
                "warmup": warmup,
                "iters": iters,
                "samples_us": t.samples_us(),
            }
        )
    return records


def _brake_table(out: str, device: torch.device) -> None:
    """How much the opt-in RMS brake changes unit-Frobenius AuON updates of various kinds."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # StudentT samples from the global generator
    n = 512
    kinds: dict[str, torch.Tensor] = {
        "gaussian": torch.randn(n, n, generator=gen),
        "student_t_df3": torch.distributions.StudentT(3.0).sample((n, n)),
        "student_t_df1 (Cauchy)": torch.distributions.StudentT(1.0).sample((n, n)),
        "rank_1": torch.outer(torch.randn(n, generator=gen), torch.randn(n, generator=gen)),
        "one_row_spike": torch.cat(
            [100 * torch.randn(1, n, generator=gen), torch.randn(n - 1, n, generator=gen)]
        ),
        "single_entry_spike": torch.randn(n, n, generator=gen) * 1e-3
        + torch.eye(n)[0:1].T @ torch.eye(n)[0:1],
    }
    rows, records = [], []
    for name, g in kinds.items():
        x = g / torch.linalg.vector_norm(g)
        r = float(cosh_factor(g.double(), 1.0, compute_dtype=torch.float64))
        for tau in (1.0, 3.0, 10.0):
            f = float(rms_brake_factor(x, tau))
            smax = float(torch.linalg.matrix_norm(x, ord=2))
            records.append(
                {
                    "kind": name,
                    "tau": tau,
                    "brake_factor": f,
                    "cosh_r": r,
                    "sigma_max_before": smax,
                    "sigma_max_after": smax * f,
                }
            )
            rows.append([name, tau, f"{r - 1:.2e}", f"{f:.3g}", f"{smax:.3g}", f"{smax * f:.3g}"])
    md = (
        "AuON update U = G/‖G‖_F on 512×512 matrices of different kinds. `r − 1` is the paper's cosh "
        "factor minus one (γ = 1): it is the whole effect of the published method. The RMS brake "
        "multiplies every singular value by the same factor, so σmax/σmin is unchanged and σmax "
        "shrinks by the factor.\n\n"
        + markdown_table(
            ["update kind", "τ", "r − 1 (paper)", "brake factor", "σmax before", "σmax after"], rows
        )
        + "\n"
    )
    write_results(
        "auon",
        "brake_factor",
        config={"n": n, "taus": [1.0, 3.0, 10.0]},
        records=records,
        markdown=md,
        out_dir=out,
        device=device,
    )
    print(md)


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument(
        "--brake-only", action="store_true", help="write only brake_factor.* (no timing)"
    )
    args = parser.parse_args(argv)
    device = setup_run(args)
    if args.gpu:
        settings = [("gpt_d768_L12", 768, 12), ("gpt_d2048_L24", 2048, 24)]
        squares = [1024, 2048, 4096]
        warmup, iters = 10, 50
    elif args.quick:
        settings = [("gpt_d128_L2", 128, 2)]
        squares = [512, 1024]
        warmup, iters = 2, 5
    else:
        settings = [("gpt_d256_L4", 256, 4), ("gpt_d512_L4", 512, 4)]
        squares = [512, 1024, 2048]
        warmup, iters = 10, 50
    _brake_table(args.out, device)
    if args.brake_only:
        return
    records: list[dict[str, Any]] = []
    for name, d, layers in settings:
        print(f"timing {name} ...", flush=True)
        records += _measure(name, _gpt_shapes(d, layers), warmup, iters, device)
    for n in squares:
        print(f"timing square {n} ...", flush=True)
        records += _measure(f"square_{n}x{n}_x4", [(n, n)] * 4, warmup, iters, device)

    rows = []
    for r in records:
        rows.append(
            [
                r["setting"],
                r["arm"],
                f"{r['n_params'] / 1e6:.2f}M",
                f"{r['median_ms']:.2f}",
                f"{r['q1_ms']:.2f}–{r['q3_ms']:.2f}",
                f"{r['ratio_vs_adamw_foreach']:.2f}",
                f"{r['us_per_mparam']:.0f}",
                r["host_syncs_per_step"],
                r["aten_ops_per_step"],
            ]
        )
        if device.type == "cuda":
            rows[-1].append(f"{r['peak_memory_mb']:.0f}")
    summary = []
    for setting in dict.fromkeys(r["setting"] for r in records):
        by = {r["arm"]: r for r in records if r["setting"] == setting}
        auon = by["auon_foreach"]["median_ms"]
        line = [
            setting,
            f"{auon / by['adamw_foreach']['median_ms']:.2f}",
            f"{by['muon_ours']['median_ms'] / auon:.1f}",
        ]
        line.append(f"{by['torch_muon']['median_ms'] / auon:.1f}" if "torch_muon" in by else "n/a")
        summary.append(line)
    md = (
        f"Warm-up/measured rounds per arm: {warmup}/{iters}, arms interleaved; 4 tensors per "
        "square setting; time of `step()` only, eager. ATen ops: operators dispatched by one "
        "step (counted with a dispatch mode; each is a kernel launch in eager mode).\n\n"
        "Targets: AuON (foreach) ≤ 1.25× AdamW (foreach); Muon/AuON ≥ 3 at ≥ 1024².\n\n"
        + markdown_table(
            ["setting", "AuON / AdamW", "our Muon / AuON", "torch Muon / AuON"], summary
        )
        + "\n\n"
        + markdown_table(
            [
                "setting",
                "arm",
                "params",
                "median ms",
                "IQR ms",
                "× AdamW foreach",
                "µs/M params",
                "host syncs",
                "ATen ops/step",
            ]
            + (["peak MB"] if device.type == "cuda" else []),
            rows,
        )
        + "\n"
    )
    config = {
        "quick": args.quick,
        "gpu": args.gpu,
        "settings": settings,
        "squares": squares,
        "warmup": warmup,
        "iters": iters,
        "threads": torch.get_num_threads(),
    }
    path = write_results(
        "auon",
        "step_time_quick" if args.quick else "step_time",
        config=config,
        records=records,
        markdown=md,
        out_dir=args.out,
        device=device,
    )
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
