"""INL LM generation: KV-cached vs uncached greedy decoding, and the INL share of decode time.

Spec inl-llm §5 (a). A randomly initialised :class:`~inl_llm.modeling_inl.INLForCausalLM` (byte
vocabulary 256, seed 0, eval mode, fp32, no dropout) with every INL output gate set to 1, so each
INL sub-layer adds its full update ``x_T − x₀`` to the residual stream (at the package's default
init the gate is 0 and the sub-layer is a zero update — it would still cost its compute, but it
would not change the output). Default (CPU) size d 128, 4 layers, 4 heads, T = 3, SwiGLU 512;
``--gpu``: d 768, 12 layers, 12 heads, T = 5, SwiGLU 3072. INL halting is off (fixed T, the
compilable path) in the main grid; one extra row uses the LM default ``use_adaptive_stopping=True``
(per-token halting, eager, host syncs).

**Speed.** For each cell (prompt 64/256, new tokens 64/256, batch 1/8; ``--quick``: prompt 64,
32 new tokens, batch 1/8) the two arms ``model.generate(ids, attention_mask=ones,
do_sample=False, use_cache=True|False, min_new_tokens=N, max_new_tokens=N)`` run interleaved
(cached, uncached, cached, …) in one process; the model has no EOS token, so every call produces
exactly N tokens (checked). Before each cell one short call per arm (``min(8, N)`` new tokens, same
prompt and batch) is discarded as warm-up. The uncached arm re-runs the whole prefix for every new
token, so its cost grows as B·N·(P + N/2) token positions; the number of measured rounds per cell is
``clamp(⌊budget / that cost⌋, 1, 5)`` (``--quick``: at most 3; budget 4·10⁵ positions on CPU: the two batch-8 cells with 256
new tokens get fewer rounds, not fewer cells, so the default run stays near 10 minutes on 2 cores).
Reported: median wall time per call, tokens/s = B·N / median (prefill included), and the speed-up
``uncached median / cached median`` measured in the same run. In every round the cached and
uncached outputs must be identical token for token; a mismatch stops the benchmark.

**INL share of decode time** (prompt 64, the largest N, batch 1 and 8, cached, halting off), two
ways. (1) Profiler: forward pre/post hooks open and close ``torch.profiler.record_function`` ranges
around every ``INLLayer`` call and every model forward, named by phase (prefill = the forward that
starts from an empty cache; decode = every later one), and one range around the whole ``generate``
call; under ``torch.profiler.profile`` (CPU activity) the share is the summed inclusive CPU time of
the decode-phase INL ranges over the decode time (``generate`` minus the prefill forward, so the
generation loop's own overhead — logits processing, stopping criteria, cache bookkeeping — counts
as decode time), and also over the decode forwards alone. (2) Wall clock without the profiler: the
same hooks read ``time.perf_counter`` instead (synchronising CUDA around each range on a GPU), which
avoids the profiler's per-operator overhead that inflates op-heavy code such as INL's small
elementwise steps. Also reported: host syncs (``Tensor.item``/``__bool__``/``tolist``, counted by
patching) in one cached decode forward with halting off and on, and per generated token in a whole
cached ``generate`` call (the generation loop checks its stopping criteria on the host every step).

Run::

    uv run python -m benchmarks.bench_inl_generation            # full grid, ≈ 10 min on 2 cores
    uv run python -m benchmarks.bench_inl_generation --quick    # ≈ 1 min
    uv run python -m benchmarks.bench_inl_generation --gpu      # accelerator sizes (CUDA)
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from benchmarks.harness import (
    Timing,
    common_parser,
    count_host_syncs,
    markdown_table,
    progress,
    seed_everything,
    setup_run,
    write_results,
)
from inl_llm import INLLayer
from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.modeling_inl import INLForCausalLM

VOCAB = 256
SEED = 0
MAX_ROUNDS = 5
QUICK_MAX_ROUNDS = 3
WARMUP_TOKENS = 8
TARGET_SPEEDUP = 5.0  # issue (a): ≥ 5× at prompt 64 + 256 new tokens on the default CPU size
TARGET_CELL = (64, 256)

_SIZES: dict[str, dict[str, Any]] = {
    "cpu": {
        "d_model": 128,
        "num_layers": 4,
        "num_heads": 4,
        "num_iterations_per_layer": 3,
        "feedforward_dim": 512,
    },
    "gpu": {
        "d_model": 768,
        "num_layers": 12,
        "num_heads": 12,
        "num_iterations_per_layer": 5,
        "feedforward_dim": 3072,
    },
}

Cell = tuple[int, int, int]  # (prompt length P, new tokens N, batch B)


def build_model(size: dict[str, Any], *, halting: bool, device: torch.device) -> INLForCausalLM:
    """The benchmark model: seeded random init, eval, fp32, no EOS, INL gates at 1."""
    config = INLLLMConfig(
        vocab_size=VOCAB,
        **size,
        max_seq_len=512,
        dropout=0.0,
        use_adaptive_stopping=halting,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    seed_everything(SEED)
    model = INLForCausalLM(config)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, INLLayer):
                layer.gate.fill_(1.0)
    # transformers' annotations of PreTrainedModel.to/eval are untyped; both act in place.
    movable: Any = model
    movable.to(device)
    movable.eval()
    return model


def uncached_cost(cell: Cell) -> int:
    """Token positions the uncached arm runs through the model: Σ_{i<N} B·(P + i)."""
    p, n, b = cell
    return b * (n * p + n * (n - 1) // 2)


def rounds_for(cell: Cell, budget: int, max_rounds: int = MAX_ROUNDS) -> int:
    """Measured rounds of a cell: ⌊budget / uncached cost⌋ clamped to [1, max_rounds]."""
    return max(1, min(max_rounds, budget // uncached_cost(cell)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(
    model: INLForCausalLM, ids: Tensor, new_tokens: int, *, use_cache: bool
) -> Callable[[], Tensor]:
    mask = torch.ones_like(ids)
    generate: Any = getattr(model, "generate")  # noqa: B009  (GenerationMixin's self annotation)

    def call() -> Tensor:
        out = generate(
            ids,
            attention_mask=mask,
            do_sample=False,
            use_cache=use_cache,
            min_new_tokens=new_tokens,
            max_new_tokens=new_tokens,
        )
        return cast(Tensor, out)

    return call


def check_same_tokens(cached: Tensor, uncached: Tensor, expected_shape: tuple[int, int]) -> None:
    """Raise ``RuntimeError`` unless both outputs have ``expected_shape`` and equal tokens."""
    for name, out in (("cached", cached), ("uncached", uncached)):
        if tuple(out.shape) != expected_shape:
            raise RuntimeError(
                f"{name} generate returned shape {tuple(out.shape)}, expected {expected_shape}"
            )
    if not torch.equal(cached, uncached):
        diff = (cached != uncached).nonzero()
        row, col = (int(v) for v in diff[0].tolist())
        raise RuntimeError(
            "cached and uncached greedy outputs differ: first at batch row "
            f"{row}, position {col} ({int(cached[row, col])} vs {int(uncached[row, col])}); "
            f"{diff.shape[0]} differing tokens in total"
        )


def time_cell(
    model: INLForCausalLM, cell: Cell, rounds: int, device: torch.device, gen: torch.Generator
) -> dict[str, Any]:
    """Warm up, then time cached and uncached generate interleaved; check the outputs match."""
    p, n, b = cell
    ids = torch.randint(0, VOCAB, (b, p), generator=gen).to(device)
    arms = {
        "cached": _generate(model, ids, n, use_cache=True),
        "uncached": _generate(model, ids, n, use_cache=False),
    }
    warm = min(WARMUP_TOKENS, n)
    for use_cache in (True, False):
        _generate(model, ids, warm, use_cache=use_cache)()
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(rounds):
        outs: dict[str, Tensor] = {}
        for name, fn in arms.items():
            _sync(device)
            t0 = time.perf_counter()
            outs[name] = fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) * 1e3)
        check_same_tokens(outs["cached"], outs["uncached"], (b, p + n))
    timings = {name: Timing(tuple(v)) for name, v in samples.items()}
    cached, uncached = timings["cached"], timings["uncached"]
    return {
        "prompt": p,
        "new_tokens": n,
        "batch": b,
        "rounds": rounds,
        "uncached_token_positions": uncached_cost(cell),
        "outputs_match": True,  # check_same_tokens raised otherwise, in every round
        "cached_median_ms": cached.median_ms,
        "uncached_median_ms": uncached.median_ms,
        "cached_tokens_per_s": b * n / (cached.median_ms / 1e3),
        "uncached_tokens_per_s": b * n / (uncached.median_ms / 1e3),
        "speedup": uncached.ratio(cached),
        "cached_samples_us": cached.samples_us(),
        "uncached_samples_us": uncached.samples_us(),
    }


# ---------------------------------------------------------------------------- INL share


def _is_prefill(kwargs: dict[str, Any]) -> bool:
    cache = kwargs.get("past_key_values")
    return cache is None or int(cache.get_seq_length()) == 0


@contextmanager
def _phase_hooks(
    model: INLForCausalLM,
    enter: Callable[[str], None],
    leave: Callable[[str], None],
) -> Iterator[None]:
    """Call ``enter(name)``/``leave(name)`` around every model forward (``forward_<phase>``) and
    every INLLayer call (``inl_<phase>``), phase ∈ {prefill, decode}."""
    phase = ["prefill"]

    def model_pre(mod: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        phase[0] = "prefill" if _is_prefill(kwargs) else "decode"
        enter(f"forward_{phase[0]}")

    def model_post(mod: nn.Module, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        leave(f"forward_{phase[0]}")

    def inl_pre(mod: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        enter(f"inl_{phase[0]}")

    def inl_post(mod: nn.Module, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        leave(f"inl_{phase[0]}")

    handles = [
        model.register_forward_pre_hook(model_pre, with_kwargs=True),
        model.register_forward_hook(model_post, with_kwargs=True),
    ]
    for m in model.modules():
        if isinstance(m, INLLayer):
            handles.append(m.register_forward_pre_hook(inl_pre, with_kwargs=True))
            handles.append(m.register_forward_hook(inl_post, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _shares(ms: dict[str, float]) -> dict[str, float]:
    decode_ms = ms["generate"] - ms["forward_prefill"]
    return {
        "generate_ms": ms["generate"],
        "prefill_forward_ms": ms["forward_prefill"],
        "decode_ms": decode_ms,
        "decode_forward_ms": ms["forward_decode"],
        "decode_inl_ms": ms["inl_decode"],
        "inl_share_of_decode": ms["inl_decode"] / decode_ms,
        "inl_share_of_decode_forwards": ms["inl_decode"] / ms["forward_decode"],
    }


def inl_share_wall(
    model: INLForCausalLM, ids: Tensor, new_tokens: int, device: torch.device
) -> dict[str, float]:
    """Wall-clock INL share of a cached decode, timed with perf_counter in module hooks."""
    acc: dict[str, float] = {}
    starts: dict[str, float] = {}

    def enter(name: str) -> None:
        _sync(device)
        starts[name] = time.perf_counter()

    def leave(name: str) -> None:
        _sync(device)
        acc[name] = acc.get(name, 0.0) + (time.perf_counter() - starts[name]) * 1e3

    call = _generate(model, ids, new_tokens, use_cache=True)
    call()  # warm-up
    with _phase_hooks(model, enter, leave):
        enter("generate")
        call()
        leave("generate")
    return _shares(acc)


def inl_share_profiler(
    model: INLForCausalLM, ids: Tensor, new_tokens: int, top_ops: int = 0
) -> tuple[dict[str, float], str]:
    """Profiler (CPU activity) INL share of a cached decode: record_function ranges in hooks."""
    from torch.profiler import ProfilerActivity, profile, record_function

    open_ranges: dict[str, Any] = {}

    def enter(name: str) -> None:
        rf: Any = record_function(name)
        rf.__enter__()
        open_ranges[name] = rf

    def leave(name: str) -> None:
        open_ranges.pop(name).__exit__(None, None, None)

    call = _generate(model, ids, new_tokens, use_cache=True)
    call()  # warm-up
    with (
        profile(activities=[ProfilerActivity.CPU]) as prof,
        _phase_hooks(model, enter, leave),
        record_function("generate"),
    ):
        call()
    averages = prof.key_averages()
    names = ("generate", "forward_prefill", "forward_decode", "inl_prefill", "inl_decode")
    ms = {name: 0.0 for name in names}
    for event in averages:
        if event.key in ms:
            ms[event.key] = float(event.cpu_time_total) / 1e3
    table = ""
    if top_ops:
        table = str(averages.table(sort_by="self_cpu_time_total", row_limit=top_ops))
    return _shares(ms), table


def decode_host_syncs(model: INLForCausalLM, ids: Tensor) -> int:
    """Host syncs of one cached decode forward (after a prefill of ``ids``)."""
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        cache = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        return count_host_syncs(
            lambda: model(nxt, attention_mask=mask, past_key_values=cache, use_cache=True)
        )


# ---------------------------------------------------------------------------- output


def _figure(records: list[dict[str, Any]], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in records})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.0), squeeze=False)
    for ax, b in zip(axes[0], batches, strict=True):
        for prompt in sorted({r["prompt"] for r in records}):
            rows = sorted(
                (r for r in records if r["batch"] == b and r["prompt"] == prompt),
                key=lambda r: r["new_tokens"],
            )
            xs = [r["new_tokens"] for r in rows]
            for arm, style in (("cached", "o-"), ("uncached", "s--")):
                ys = [r[f"{arm}_tokens_per_s"] for r in rows]
                ax.plot(xs, ys, style, label=f"{arm}, prompt {prompt}")
        ns = sorted({r["new_tokens"] for r in records})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("new tokens")
        ax.set_ylabel("generated tokens/s (median)")
        ax.set_title(f"batch {b}")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("INL LM: cached vs uncached generation and the INL share of decode")
    parser.add_argument(
        "--rounds", type=int, default=None, help="measured rounds per cell (default: cost rule)"
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="uncached token positions per cell that set the rounds (default 4e5 CPU, 4e6 GPU)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    device = setup_run(args)
    size = _SIZES["gpu" if args.gpu else "cpu"]
    budget = args.budget or (4_000_000 if args.gpu else 400_000)
    if args.quick:
        cells: list[Cell] = [(64, 32, 1), (64, 32, 8)]
    else:
        cells = [(p, n, b) for b in (1, 8) for p in (64, 256) for n in (64, 256)]
    halting_cell: Cell = (64, 32 if args.quick else 64, 1)
    profile_new = max(n for _, n, _ in cells)
    start = time.perf_counter()
    model = build_model(size, halting=False, device=device)
    halting_model = build_model(size, halting=True, device=device)
    halting_model.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(SEED)

    records: list[dict[str, Any]] = []
    jobs = [(cell, False) for cell in cells] + [(halting_cell, True)]
    for cell, halting in progress(jobs, desc="cells", disable=args.no_progress):
        rounds = args.rounds or rounds_for(
            cell, budget, QUICK_MAX_ROUNDS if args.quick else MAX_ROUNDS
        )
        rec = time_cell(halting_model if halting else model, cell, rounds, device, gen)
        rec["halting"] = "threshold" if halting else "none"
        records.append(rec)
    grid = [r for r in records if r["halting"] == "none"]

    shares: list[dict[str, Any]] = []
    top_table = ""
    for b in (1, 8):
        ids = torch.randint(0, VOCAB, (b, 64), generator=gen).to(device)
        prof, table = inl_share_profiler(model, ids, profile_new, top_ops=12 if b == 1 else 0)
        top_table = top_table or table
        wall = inl_share_wall(model, ids, profile_new, device)
        shares.append(
            {"prompt": 64, "new_tokens": profile_new, "batch": b, "profiler": prof, "wall": wall}
        )

    ids = torch.randint(0, VOCAB, (1, 64), generator=gen).to(device)
    syncs = {
        "decode_forward_halting_none": decode_host_syncs(model, ids),
        "decode_forward_halting_threshold": decode_host_syncs(halting_model, ids),
        "generate_per_token_halting_none": count_host_syncs(
            _generate(model, ids, profile_new, use_cache=True)
        )
        / profile_new,
    }
    with torch.no_grad():
        iters = halting_model(ids).inl_iterations
    mean_iterations = [float(v) for v in iters.tolist()] if iters is not None else []
    seconds = time.perf_counter() - start

    md = _markdown(records, grid, shares, syncs, mean_iterations, top_table, size, seconds)
    config = {
        "quick": args.quick,
        "gpu": args.gpu,
        "model": {
            "vocab_size": VOCAB,
            **size,
            "seed": SEED,
            "inl_gate": 1.0,
            "dtype": "float32",
            "eos_token_id": None,
        },
        "cells": [list(c) for c in cells],
        "halting_cell": list(halting_cell),
        "rounds_rule": "clamp(budget // uncached_token_positions, 1, "
        f"{QUICK_MAX_ROUNDS if args.quick else MAX_ROUNDS})",
        "budget": budget,
        "rounds_override": args.rounds,
        "warmup": f"one call per arm with min({WARMUP_TOKENS}, N) new tokens before each cell",
        "profile": {"prompt": 64, "new_tokens": profile_new, "batches": [1, 8]},
        "wall_time_s": seconds,
    }
    name = "generation_quick" if args.quick else "generation"
    figure = _figure(grid, f"INL LM greedy generation, cached vs uncached ({device.type})")
    folder = write_results(
        "inl-llm",
        name,
        config=config,
        records=[*records, *({"inl_share": s} for s in shares), {"host_syncs": syncs}],
        markdown=md,
        figures={"": figure},
        out_dir=args.out,
        device=device,
    )
    print(md)
    print(f"wrote {folder}/{name}.md")


def _markdown(
    records: list[dict[str, Any]],
    grid: list[dict[str, Any]],
    shares: list[dict[str, Any]],
    syncs: dict[str, float],
    mean_iterations: list[float],
    top_table: str,
    size: dict[str, Any],
    seconds: float,
) -> str:
    d, layers, t = size["d_model"], size["num_layers"], size["num_iterations_per_layer"]
    md = [
        f"INL causal LM, random init (seed {SEED}), d {d}, {layers} layers, "
        f"{size['num_heads']} heads, T = {t}, SwiGLU {size['feedforward_dim']}, byte vocab "
        f"{VOCAB}, fp32, eval, every INL output gate set to 1 (INL contributes its full "
        "update). Greedy `generate(do_sample=False, min_new_tokens=N, max_new_tokens=N)`, no EOS "
        "token; cached (`use_cache=True`, DynamicCache) and uncached arms interleaved in one "
        f"process, one short warm-up call per arm and cell discarded. Rounds per cell: "
        f"`clamp(budget // uncached token positions, 1, {MAX_ROUNDS})` (column `rounds`), "
        "so the costliest uncached cells are measured fewer times. Tokens/s count generated "
        "tokens (B·N) over the median wall time of the whole call (prefill included). "
        "Outputs: cached and uncached token ids identical in every round of every cell "
        "(the run stops otherwise).\n",
        "## Speed-up of the KV cache\n",
    ]
    rows = [
        [
            r["prompt"],
            r["new_tokens"],
            r["batch"],
            "on (threshold)" if r["halting"] == "threshold" else "off (fixed T)",
            r["rounds"],
            f"{r['cached_median_ms']:.1f}",
            f"{r['uncached_median_ms']:.1f}",
            f"{r['cached_tokens_per_s']:.1f}",
            f"{r['uncached_tokens_per_s']:.1f}",
            f"{r['speedup']:.2f}×",
            "yes" if r["outputs_match"] else "NO",
        ]
        for r in records
    ]
    md.append(
        markdown_table(
            [
                "prompt",
                "new tokens",
                "batch",
                "INL halting",
                "rounds",
                "cached ms",
                "uncached ms",
                "cached tok/s",
                "uncached tok/s",
                "speed-up",
                "outputs match",
            ],
            rows,
        )
    )
    target = [r for r in grid if (r["prompt"], r["new_tokens"]) == TARGET_CELL]
    if target:
        verdicts = ", ".join(
            f"batch {r['batch']}: {r['speedup']:.2f}× "
            f"({'meets' if r['speedup'] >= TARGET_SPEEDUP else 'misses'} the target)"
            for r in target
        )
        md.append(
            f"\nTarget (issue a): ≥ {TARGET_SPEEDUP:g}× at prompt {TARGET_CELL[0]} + "
            f"{TARGET_CELL[1]} new tokens — {verdicts}. The model card claimed 1.1–1.3×.\n"
        )
    else:
        md.append(
            f"\nTarget (issue a, ≥ {TARGET_SPEEDUP:g}× at prompt {TARGET_CELL[0]} + "
            f"{TARGET_CELL[1]} new tokens) is not measured at this size (`--quick`).\n"
        )
    speedups = [r["speedup"] for r in grid]
    md.append(
        f"Speed-up over the fixed-T grid: {min(speedups):.2f}× to {max(speedups):.2f}× "
        f"(geometric mean {math.exp(sum(math.log(s) for s in speedups) / len(speedups)):.2f}×).\n"
    )
    md.append(
        "\n## INL share of decode time (cached, halting off)\n\n"
        "Decode = the `generate` call minus its prefill forward (the generation loop's own "
        "per-step work counts as decode). Profiler: `torch.profiler` (CPU activity) with "
        "`record_function` ranges opened and closed by forward pre/post hooks on every "
        "`INLLayer` and on the model, inclusive CPU time. Wall clock: the same hooks reading "
        "`time.perf_counter` (no profiler overhead).\n"
    )
    share_rows = []
    for s in shares:
        for method in ("profiler", "wall"):
            v = s[method]
            share_rows.append(
                [
                    s["prompt"],
                    s["new_tokens"],
                    s["batch"],
                    method,
                    f"{v['decode_ms']:.1f}",
                    f"{v['decode_forward_ms']:.1f}",
                    f"{v['decode_inl_ms']:.1f}",
                    f"{100 * v['inl_share_of_decode']:.1f}%",
                    f"{100 * v['inl_share_of_decode_forwards']:.1f}%",
                ]
            )
    md.append(
        markdown_table(
            [
                "prompt",
                "new tokens",
                "batch",
                "method",
                "decode ms",
                "decode forwards ms",
                "INL ms",
                "INL share of decode",
                "INL share of decode forwards",
            ],
            share_rows,
        )
    )
    md.append(
        "\n## Host syncs\n\n"
        f"One cached decode forward: {syncs['decode_forward_halting_none']:g} with halting off, "
        f"{syncs['decode_forward_halting_threshold']:g} with halting on (the compact halting path "
        "asks the host whether any token halted after each step from `min_iterations` on, in "
        f"every layer). A whole cached `generate` call: "
        f"{syncs['generate_per_token_halting_none']:.2f} per generated token with halting off "
        "(the generation loop's stopping-criteria check). Halting-on mean INL iterations per "
        "token and layer on a 64-token prompt: "
        + ", ".join(f"{v:.2f}" for v in mean_iterations)
        + f" (of T = {t}).\n"
    )
    if top_table:
        md.append(
            "\n## Profile, batch 1 cached decode (top operators by self CPU time)\n\n"
            "```text\n" + top_table.rstrip() + "\n```\n"
        )
    md.append(f"\nTotal wall time {seconds / 60:.1f} min ({seconds:.0f} s).\n")
    return "\n".join(md)


if __name__ == "__main__":
    main()
