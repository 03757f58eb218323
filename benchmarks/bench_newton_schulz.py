"""Newton–Schulz benchmark: our time against the plain matrix products it performs, and torch's.

For each shape and dtype, these arms are timed interleaved in one process (10 warm-up rounds
discarded, 50 measured; every raw sample is kept in the JSON, in µs to 4 significant digits):

* ``ns``: ``adaptnn_core.newton_schulz`` (5 Keller steps), input and compute in the given dtype;
* ``ns_pe``: the same with the Polar Express coefficients;
* ``matmul``: only the three matrix products per step that Newton–Schulz performs
  (``XXᵀ``, ``A·A``, ``B·X`` on an already normalised, already transposed input; the products are
  not chained, so values stay normal numbers); this is the floor our implementation is measured
  against (target: ``ns / matmul ≤ 1.15``);
* ``torch``: ``torch.optim.Muon``'s own Newton–Schulz iteration (bf16, 2-D only), when the
  installed torch has it (target: ``ns / torch ≤ 1``).

An accuracy table reports the singular values (float64 SVD) of the output for Gaussian and
ill-conditioned inputs. Results go to ``docs/results/adaptnn-core/bench_newton_schulz.*``.

    uv run python -m benchmarks.bench_newton_schulz            # CPU default size (< 5 min)
    uv run python -m benchmarks.bench_newton_schulz --quick    # smoke size (< 1 min)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from adaptnn_core import KELLER_COEFFICIENTS, newton_schulz, newton_schulz_flops
from benchmarks.harness import (
    common_parser,
    interleaved_timing,
    markdown_table,
    progress,
    setup_run,
    write_results,
)

Shape = tuple[int, ...]

CPU_SHAPES: list[Shape] = [
    (256, 256),
    (256, 1024),
    (1024, 256),
    (512, 512),
    (512, 2048),
    (2048, 512),
    (1024, 1024),
    (2048, 2048),
    (16, 128, 128),
]
QUICK_SHAPES: list[Shape] = [(256, 256), (256, 1024), (1024, 256), (512, 512), (16, 128, 128)]
GPU_SHAPES: list[Shape] = [
    (768, 768),
    (768, 3072),
    (3072, 768),
    (2048, 2048),
    (4096, 4096),
    (4096, 14336),
    (16, 768, 768),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _torch_muon_iteration() -> Callable[..., torch.Tensor] | None:
    """torch.optim.Muon's Newton–Schulz function, if this torch has one (benchmark use only)."""
    try:
        from torch.optim import _muon
    except ImportError:
        return None
    fn = getattr(_muon, "_zeropower_via_newtonschulz", None)
    return fn if callable(fn) else None


def _matmul_only(x: torch.Tensor, steps: int) -> Callable[[], object]:
    """The products of ``steps`` Newton–Schulz steps on a prepared (m ≤ n) input, not chained."""
    y = x.mT if x.shape[-2] > x.shape[-1] else x
    y = (y / torch.linalg.vector_norm(y.float(), dim=(-2, -1), keepdim=True)).to(x.dtype)
    y = y.contiguous()
    a = y @ y.mT

    def run() -> object:
        out = None
        for _ in range(steps):
            g = y @ y.mT
            out = (a @ a) @ y
        return g, out

    return run


def _ours(
    x: torch.Tensor, steps: int, dtype: torch.dtype, coefficients: str = "keller"
) -> Callable[[], object]:
    def run() -> object:
        return newton_schulz(x, steps, coefficients=coefficients, compute_dtype=dtype)  # type: ignore[arg-type]

    return run


def _theirs(fn: Callable[..., torch.Tensor], x: torch.Tensor, steps: int) -> Callable[[], object]:
    def run() -> object:
        return fn(x, KELLER_COEFFICIENTS, steps, 1e-7)

    return run


def _singular_values(out: torch.Tensor) -> torch.Tensor:
    s: torch.Tensor = torch.linalg.svdvals(out.double())
    return s


def _accuracy(device: torch.device) -> list[dict[str, Any]]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    m, n = 256, 1024
    gauss = torch.randn(m, n, generator=gen, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=torch.float64))
    sigma = torch.logspace(-4, 0, m, dtype=torch.float64)
    ill = (u * sigma) @ v.mT
    for input_name, g in (("gaussian", gauss), ("ill-conditioned 1e-4..1", ill)):
        for coeffs in ("keller", "polar_express"):
            for dname, dt in (("fp64", torch.float64), *DTYPES.items()):
                out = newton_schulz(g.to(device), coefficients=coeffs, compute_dtype=dt)
                s = _singular_values(out.cpu())
                rows.append(
                    {
                        "kind": "accuracy",
                        "input": input_name,
                        "coefficients": coeffs,
                        "dtype": dname,
                        "shape": [m, n],
                        "sv_min": float(s.min()),
                        "sv_max": float(s.max()),
                        "sv_mean": float(s.mean()),
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=None, help="discarded rounds (default 10)")
    parser.add_argument("--iters", type=int, default=None, help="measured rounds (default 50)")
    args = parser.parse_args(argv)
    device = setup_run(args)
    shapes = GPU_SHAPES if args.gpu else QUICK_SHAPES if args.quick else CPU_SHAPES
    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 10)
    iters = args.iters if args.iters is not None else (10 if args.quick else 50)
    torch_ns = _torch_muon_iteration()
    records: list[dict[str, Any]] = []
    gen = torch.Generator(device=device).manual_seed(0)
    cases = [(s, d) for s in shapes for d in DTYPES]
    for shape, dname in progress(cases, desc="newton-schulz", disable=args.no_progress):
        dtype = DTYPES[dname]
        x = torch.randn(*shape, generator=gen, device=device).to(dtype)
        arms: dict[str, Callable[[], object]] = {
            "ns": _ours(x, args.steps, dtype),
            "ns_pe": _ours(x, args.steps, dtype, "polar_express"),
            "matmul": _matmul_only(x, args.steps),
        }
        if torch_ns is not None and dtype == torch.bfloat16 and x.ndim == 2:
            arms["torch"] = _theirs(torch_ns, x, args.steps)
        timings = interleaved_timing(arms, warmup=warmup, iters=iters, device=device)
        m, n = shape[-2:]
        batch = math.prod(shape[:-2])
        flops = batch * newton_schulz_flops(m, n, args.steps)
        rec: dict[str, Any] = {
            "kind": "timing",
            "shape": list(shape),
            "dtype": dname,
            "steps": args.steps,
            "warmup": warmup,
            "iters": iters,
            "flops": flops,
        }
        for name, t in timings.items():
            rec[f"{name}_median_ms"] = t.median_ms
            rec[f"{name}_q1_ms"] = t.q1_ms
            rec[f"{name}_q3_ms"] = t.q3_ms
            rec[f"{name}_samples_us"] = t.samples_us()
        rec["ns_tflops"] = flops / (timings["ns"].median_ms * 1e-3) / 1e12
        rec["ns_pe_tflops"] = flops / (timings["ns_pe"].median_ms * 1e-3) / 1e12
        rec["ratio_vs_matmul"] = timings["ns"].ratio(timings["matmul"])
        rec["pe_ratio_vs_keller"] = timings["ns_pe"].ratio(timings["ns"])
        if "torch" in timings:
            rec["ratio_vs_torch"] = timings["ns"].ratio(timings["torch"])
        records.append(rec)
    records += _accuracy(device)

    timing_rows = [
        [
            "×".join(map(str, r["shape"])),
            r["dtype"],
            r["ns_median_ms"],
            r["matmul_median_ms"],
            r["ratio_vs_matmul"],
            r["ns_pe_median_ms"],
            r["pe_ratio_vs_keller"],
            r.get("torch_median_ms", "—"),
            r.get("ratio_vs_torch", "—"),
            r["ns_tflops"],
        ]
        for r in records
        if r["kind"] == "timing"
    ]
    ratios = [r["ratio_vs_matmul"] for r in records if r["kind"] == "timing"]
    torch_ratios = [r["ratio_vs_torch"] for r in records if "ratio_vs_torch" in r]
    summary = (
        f"ns / matmul-only: max {max(ratios):.3f}, median {sorted(ratios)[len(ratios) // 2]:.3f} "
        f"over {len(ratios)} cases (target ≤ 1.15).\n"
    )
    if torch_ratios:
        summary += (
            f"ns / torch.optim.Muon iteration (bf16, 2-D): max {max(torch_ratios):.3f}, "
            f"min {min(torch_ratios):.3f} over {len(torch_ratios)} cases (target ≤ 1).\n"
        )
    else:
        summary += "The installed torch has no torch.optim.Muon iteration to compare with.\n"
    acc_rows = [
        [r["input"], r["coefficients"], r["dtype"], r["sv_min"], r["sv_mean"], r["sv_max"]]
        for r in records
        if r["kind"] == "accuracy"
    ]
    markdown = (
        f"{args.steps} Newton–Schulz steps, eager (compiled is not timed); times are medians of "
        f"{iters} interleaved calls after {warmup} discarded rounds (ns, ns_pe, matmul, torch in "
        "rounds), in milliseconds; the JSON holds every sample and the quartiles.\n\n"
        + summary
        + "\n"
        + markdown_table(
            [
                "shape",
                "dtype",
                "ns ms",
                "matmul-only ms",
                "ns/matmul",
                "Polar Express ms",
                "PE/Keller",
                "torch ms",
                "ns/torch",
                "ns TFLOP/s",
            ],
            timing_rows,
        )
        + "\n## Accuracy: singular values of the output (256×1024 input, float64 SVD)\n\n"
        + markdown_table(
            ["input", "coefficients", "compute dtype", "σ min", "σ mean", "σ max"], acc_rows
        )
    )
    folder = write_results(
        "adaptnn-core",
        "bench_newton_schulz",
        config={
            "shapes": [list(s) for s in shapes],
            "dtypes": list(DTYPES),
            "steps": args.steps,
            "warmup": warmup,
            "iters": iters,
            "quick": args.quick,
            "gpu": args.gpu,
        },
        records=records,
        markdown=markdown,
        out_dir=args.out,
        device=device,
    )
    print(markdown)
    print(f"wrote {folder}/bench_newton_schulz.{{json,md}}")


if __name__ == "__main__":
    main()
