"""AION step overhead: full training steps (forward, backward, AdamW) against a plain residual.

Arms are timed interleaved in one process (A B C A B C …), warm-up discarded, medians reported
with the ratio to the plain residual measured in the same run:

* ``gpt``: the harness GPT (causal SDPA attention + 4× GELU MLP, pre-LN), 4 blocks, byte tokens,
  cross-entropy; at the CPU-friendly size ``[B, T, D] = [4, 64, 256]`` and at the original
  aion-torch benchmark size ``[8, 128, 512]``.
* ``ffn``: the original aion-torch overhead setup, 4 pre-LN FFN-only blocks, MSE, ``[8, 128, 512]``.

Arms: ``plain`` (x + y), ``fixed`` (x + 0.1·y), ``aion`` (default mode, ``sync_stats="none"``),
``aion_deferred`` (default mode, ``sync_stats="deferred"`` + ``sync_stats(model)`` per step),
``aion_reference`` (aion-torch 1.0.x numerics); eager, and ``torch.compile(fullgraph=True)`` for
``plain``/``aion``/``aion_deferred``. Every step runs ``loss.backward()``, ``AdamW.step()``
and ``zero_grad(set_to_none=True)``. Also reported: host syncs per step (``Tensor.item``,
``__bool__``, ``tolist`` counted by patching, in forward+backward and, separately, in
``torch.optim.AdamW.step``, which reads each parameter's CPU step count), graph breaks of the
compiled forward, ATen operators dispatched per step (forward+backward) and per residual call
(forward and backward of one residual module on the setup's shape, counted with a dispatch mode;
each operator is a kernel launch in eager mode), and a profile of where the AION time goes (time
inside ``AionResidual.forward`` per step and the top operators). Every setup discards 10 warm-up
rounds and measures 50 (``--quick``: 5 and 20); the JSON keeps every sample (µs, 4 significant
digits).

Run: ``uv run python -m benchmarks.bench_aion_overhead [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aion_torch import AionBlock, AionResidual, sync_stats, weight_decay_param_groups
from aion_torch.residuals import make_residual
from benchmarks.harness import (
    GPT,
    GPTConfig,
    Timing,
    common_parser,
    count_aten_ops,
    count_host_syncs,
    interleaved_timing,
    markdown_table,
    seed_everything,
    setup_run,
    write_results,
)

_KIND = {
    "plain": "plain",
    "fixed": "fixed",
    "aion": "aion",
    "aion_deferred": "aion",
    "aion_reference": "aion_reference",
}


def _residual(arm: str, dim: int, layers: int) -> nn.Module:
    kw: dict[str, Any] = {}
    if arm == "aion_deferred":
        kw["sync_stats"] = "deferred"
    return make_residual(_KIND[arm], dim=dim, num_layers=layers, **kw)  # type: ignore[arg-type]


class _FFN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


def _build(
    model_kind: str, arm: str, shape: tuple[int, int, int], compiled: bool, device: torch.device
) -> tuple[Callable[[], None], nn.Module, Callable[[], object]]:
    """Return (training step, model, forward-only callable for graph-break analysis)."""
    b, t, d = shape
    seed_everything(0)
    gen = torch.Generator().manual_seed(0)
    loss_fn: Callable[[], torch.Tensor]
    model: nn.Module
    if model_kind == "gpt":
        config = GPTConfig(d_model=d, n_heads=max(1, d // 64), seq_len=t, n_layers=4)
        gpt = GPT(config, residual_factory=lambda i, c: _residual(arm, c.d_model, c.n_layers))
        model = gpt.to(device)
        idx = torch.randint(0, 256, (b, t), generator=gen).to(device)
        tgt = torch.randint(0, 256, (b, t), generator=gen).to(device)
        raw_loss: Callable[[], torch.Tensor] = lambda: gpt.loss(idx, tgt)  # noqa: E731
    else:
        blocks = nn.Sequential(
            *(AionBlock(_FFN(d), d, residual=_residual(arm, d, 4)) for _ in range(4))
        )
        model = blocks.to(device)
        x = torch.randn(b, t, d, generator=gen).to(device)
        target = torch.randn(b, t, d, generator=gen).to(device)
        raw_loss = lambda: F.mse_loss(blocks(x), target)  # noqa: E731
    loss_fn = torch.compile(raw_loss, fullgraph=True) if compiled else raw_loss
    opt = torch.optim.AdamW(
        weight_decay_param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), foreach=True
    )
    deferred = arm == "aion_deferred"

    def forward_backward() -> None:
        torch.autograd.backward(loss_fn())

    opt_ms: list[float] = []

    def step() -> None:
        forward_backward()
        _sync(device)
        t0 = time.perf_counter()
        opt.step()
        if deferred:
            sync_stats(model)
        _sync(device)
        opt_ms.append((time.perf_counter() - t0) * 1e3)
        opt.zero_grad(set_to_none=True)

    def count_syncs() -> tuple[int, int]:
        fb = count_host_syncs(forward_backward)
        total = count_host_syncs(lambda: (opt.step(), sync_stats(model) if deferred else None))
        opt.zero_grad(set_to_none=True)
        return fb, total

    def count_ops() -> int:
        n = count_aten_ops(forward_backward)
        opt.zero_grad(set_to_none=True)
        return n

    step.count_syncs = count_syncs  # type: ignore[attr-defined]
    step.count_ops = count_ops  # type: ignore[attr-defined]
    step.opt_ms = opt_ms  # type: ignore[attr-defined]
    return step, model, raw_loss


def _residual_ops(arm: str, shape: tuple[int, int, int], device: torch.device) -> dict[str, int]:
    """ATen operators of one residual call ``res(x, y, x_norm=n)`` (eager, after 3 warm-up calls):
    forward, and backward from the output to ``x``, ``y`` and the residual's own parameters (the
    norm that makes ``n`` is outside the count)."""
    b, t, d = shape
    res = _residual(arm, d, 4).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, d, generator=gen).to(device).requires_grad_()
    y = torch.randn(b, t, d, generator=gen).to(device).requires_grad_()
    n = F.layer_norm(x.detach(), (d,))
    g = torch.randn(b, t, d, generator=gen).to(device)
    for _ in range(3):
        torch.autograd.backward(res(x, y, x_norm=n), g)
    out: list[torch.Tensor] = []
    fwd = count_aten_ops(lambda: out.append(res(x, y, x_norm=n)))
    bwd = count_aten_ops(lambda: torch.autograd.backward(out[0], g))
    return {"aten_ops_residual_fwd": fwd, "aten_ops_residual_bwd": bwd}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _aion_forward_ms(model: nn.Module, step: Callable[[], None], n: int) -> float:
    """Wall time per step spent inside ``AionResidual.forward`` (eager), in ms."""
    acc = [0.0]
    starts: dict[int, float] = {}

    def pre(mod: nn.Module, args: Any, kwargs: Any) -> None:
        starts[id(mod)] = time.perf_counter()

    def post(mod: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        acc[0] += time.perf_counter() - starts[id(mod)]

    handles = []
    for m in model.modules():
        if isinstance(m, AionResidual):
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        for _ in range(n):
            step()
    finally:
        for h in handles:
            h.remove()
    return acc[0] / n * 1e3


def _profile_table(step: Callable[[], None], n: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    table: str = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return table


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("AION step overhead vs a plain residual")
    parser.add_argument("--no-compile", action="store_true", help="eager arms only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    device = setup_run(args)
    eager_arms = ["plain", "fixed", "aion", "aion_deferred", "aion_reference"]
    compiled_arms = ["plain", "aion", "aion_deferred"]
    if args.quick:
        setups = [("gpt", (4, 64, 256), 5, 20, False)]
    elif args.gpu:
        setups = [
            ("gpt", (8, 128, 512), 10, 50, True),
            ("ffn", (8, 128, 512), 10, 50, True),
            ("gpt", (8, 1024, 768), 10, 50, True),
        ]
    else:  # CPU default (≈ 7 min on 2 quiet cores; the d=512 steps take 0.25–0.45 s)
        setups = [
            ("gpt", (4, 64, 256), 10, 50, True),
            ("gpt", (8, 128, 512), 10, 50, True),
            ("ffn", (8, 128, 512), 10, 50, False),
        ]
    if args.no_compile:
        setups = [(m, s, w, i, False) for m, s, w, i, _ in setups]
    records: list[dict[str, Any]] = []
    md: list[str] = []
    profile_md = ""
    start = time.perf_counter()
    for model_kind, shape, warmup, iters, with_compile in setups:
        variants = [(arm, False) for arm in eager_arms]
        if with_compile:
            variants += [(arm, True) for arm in compiled_arms]
        steps: dict[str, Callable[[], None]] = {}
        extras: dict[str, dict[str, Any]] = {}
        for arm, compiled in variants:
            label = f"{arm}{' (compiled)' if compiled else ''}"
            step, model, raw = _build(model_kind, arm, shape, compiled, device)
            t0 = time.perf_counter()
            step()  # first call: compilation for compiled arms
            info: dict[str, Any] = {"first_step_s": time.perf_counter() - t0}
            fb, opt_syncs = step.count_syncs()  # type: ignore[attr-defined]
            info["host_syncs_fwd_bwd"] = fb
            info["host_syncs_optimizer"] = opt_syncs
            if not compiled:
                info["aten_ops_fwd_bwd"] = step.count_ops()  # type: ignore[attr-defined]
                info.update(_residual_ops(arm, shape, device))
            if compiled:
                explanation = torch._dynamo.explain(raw)()
                info["graph_breaks"] = explanation.graph_break_count
            elif arm.startswith("aion"):
                info["aion_forward_ms"] = _aion_forward_ms(model, step, 3)
            steps[label] = step
            extras[label] = info
            if not args.no_progress:
                print(f"{model_kind} {shape} {label}: ready {info}", flush=True)
        timings: dict[str, Timing] = interleaved_timing(
            steps, warmup=warmup, iters=iters, device=device
        )
        rows = []
        for label, timing in timings.items():
            compiled = label.endswith("(compiled)")
            base = timings["plain (compiled)" if compiled else "plain"]
            ratio = timing.ratio(base)
            # The optimiser's share of this arm's measured steps (the last `iters` recorded).
            opt_ms = statistics.median(steps[label].opt_ms[-iters:])  # type: ignore[attr-defined]
            rec = {
                "model": model_kind,
                "shape": list(shape),
                "arm": label,
                "median_ms": timing.median_ms,
                "q1_ms": timing.q1_ms,
                "q3_ms": timing.q3_ms,
                "ratio_vs_plain": ratio,
                "optimizer_median_ms": opt_ms,
                "samples_us": timing.samples_us(),
                **extras[label],
            }
            records.append(rec)
            rows.append(
                [
                    label,
                    f"{timing.median_ms:.2f}",
                    f"{timing.q1_ms:.2f}–{timing.q3_ms:.2f}",
                    f"{(ratio - 1) * 100:+.1f}%",
                    f"{opt_ms:.2f}",
                    f"{extras[label]['host_syncs_fwd_bwd']} / {extras[label]['host_syncs_optimizer']}",
                    extras[label].get("graph_breaks", ""),
                    f"{extras[label]['aion_forward_ms']:.2f}"
                    if "aion_forward_ms" in extras[label]
                    else "",
                    extras[label].get("aten_ops_fwd_bwd", ""),
                    f"{extras[label]['aten_ops_residual_fwd']} / "
                    f"{extras[label]['aten_ops_residual_bwd']}"
                    if "aten_ops_residual_fwd" in extras[label]
                    else "",
                ]
            )
        b, t, d = shape
        md.append(
            f"## {model_kind} [B, T, D] = [{b}, {t}, {d}], 4 blocks "
            f"({warmup} warm-up, {iters} measured steps per arm, interleaved)\n"
        )
        md.append(
            markdown_table(
                [
                    "arm",
                    "median ms/step",
                    "IQR ms",
                    "vs plain (same mode)",
                    "of which AdamW step ms",
                    "host syncs/step: fwd+bwd / AdamW step",
                    "graph breaks",
                    "ms/step inside AionResidual.forward (eager)",
                    "ATen ops/step fwd+bwd (eager)",
                    "ATen ops per residual call: fwd / bwd (eager)",
                ],
                rows,
            )
        )
        if model_kind == "gpt" and shape == (4, 64, 256) and not profile_md:
            step, _, _ = _build(model_kind, "aion", shape, False, device)
            profile_md = (
                "\n## Profile: AION default, eager, gpt [4, 64, 256] (5 steps, top operators by "
                "self CPU time)\n\n```text\n" + _profile_table(step, 5) + "```\n"
            )
    seconds = time.perf_counter() - start
    md.append(profile_md)
    md.append(f"\nTotal wall time {seconds / 60:.1f} min.\n")
    config = {
        "setups": [
            {"model": m, "shape": list(s), "warmup": w, "iters": i, "compiled": c}
            for m, s, w, i, c in setups
        ],
        "eager_arms": eager_arms,
        "compiled_arms": compiled_arms,
        "optimizer": "AdamW lr 1e-3 betas (0.9, 0.95) foreach, wd 0.1 (0 on residual scalars)",
    }
    name = "overhead_quick" if args.quick else "overhead"
    folder = write_results(
        "aion-torch",
        name,
        config=config,
        records=records,
        markdown="\n".join(md),
        out_dir=args.out,
        device=device,
    )
    print(f"wrote {folder}/{name}.md")


if __name__ == "__main__":
    main()
