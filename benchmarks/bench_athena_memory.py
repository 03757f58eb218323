"""Training memory of the athena methods on MiniLM: what 10 training steps add to a process's RSS.

A process's peak resident memory (`getrusage`'s high-water mark, what `step.md` reported) is set
while torch, the tokenizer and the model load, above anything training adds, so it is the same for
every method. Here each arm runs in a fresh subprocess that builds the model and the batch, then
resets the kernel's high-water mark (`/proc/self/clear_refs`, Linux) and runs 10 training steps
(forward, backward, AdamW step, zero_grad; the arms of `benchmarks.bench_athena_step`). Reported
per arm: the RSS before training, the peak during the steps, and their difference, the memory
training adds: activations kept for backward, gradients and optimiser state. Each arm runs
`--repeats` times (3), the rounds interleaved; the table gives the median and the range.

`--quick`: four arms, 3 steps, one round. Run: `uv run python -m benchmarks.bench_athena_memory`.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import _athena_bench as ab
from benchmarks.bench_athena_step import ARMS, QUICK_ARMS, make_arm, step_fn
from benchmarks.harness import common_parser, markdown_table, write_results

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mib(key: str) -> float:
    match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {key} in {_STATUS}")
    return int(match.group(1)) / 1024


def measure(arm: str, steps: int) -> dict[str, Any]:
    """In this process: build `arm`, reset the RSS high-water mark, train `steps` steps."""
    from benchmarks._lexsent import build_lexsent, config_for, encode, load_tokenizer

    tokenizer = load_tokenizer()
    data = encode(build_lexsent(tokenizer, config_for(quick=True)).train, tokenizer)
    batch = {k: v[:32] for k, v in data.items()}
    model = make_arm(arm)
    step = step_fn(model, batch)
    trainable, _ = ab.count_parameters(model)
    gc.collect()
    before = _status_mib("VmRSS")
    _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
    for _ in range(steps):
        step()
    peak = _status_mib("VmHWM")
    return {
        "arm": arm,
        "rss_before_mib": before,
        "peak_mib": peak,
        "training_mib": peak - before,
        "trainable": trainable,
        "steps": steps,
    }


def _in_subprocess(arm: str, steps: int, threads: int) -> dict[str, Any]:
    code = (
        "import json, torch\n"
        f"torch.set_num_threads({threads})\n"
        "from benchmarks.bench_athena_memory import measure\n"
        f"print(json.dumps(measure({arm!r}, {steps})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("athena training memory on MiniLM: RSS added by 10 training steps")
    parser.add_argument("--steps", type=int, default=None, help="training steps per arm (10)")
    parser.add_argument("--repeats", type=int, default=None, help="processes per arm (3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not _CLEAR_REFS.exists():
        raise SystemExit("needs Linux /proc/self/clear_refs to reset the RSS high-water mark")
    arms = QUICK_ARMS if args.quick else ARMS
    steps = args.steps or (3 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 3)
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for round_ in range(repeats):  # rounds interleave the arms
        for arm in arms:
            run = _in_subprocess(arm, steps, args.threads)
            runs[arm].append(run)
            if not args.no_progress:
                print(f"round {round_}: {arm} +{run['training_mib']:.0f} MiB", flush=True)
    records = []
    for arm in arms:
        added = sorted(r["training_mib"] for r in runs[arm])
        records.append(
            {
                "arm": arm,
                "training_mib_median": statistics.median(added),
                "training_mib_min": added[0],
                "training_mib_max": added[-1],
                "rss_before_mib_median": statistics.median(r["rss_before_mib"] for r in runs[arm]),
                "peak_mib_median": statistics.median(r["peak_mib"] for r in runs[arm]),
                "trainable": runs[arm][0]["trainable"],
                "runs": runs[arm],
            }
        )
    base = next((r for r in records if r["arm"] == "peft_lora"), None)
    rows = [
        [
            r["arm"],
            f"{r['rss_before_mib_median']:.0f}",
            f"{r['peak_mib_median']:.0f}",
            f"{r['training_mib_median']:.0f} [{r['training_mib_min']:.0f}, {r['training_mib_max']:.0f}]",
            f"{r['training_mib_median'] / base['training_mib_median']:.2f}" if base else "—",
            f"{r['trainable']:,d}",
        ]
        for r in records
    ]
    text = (
        f"Each arm in a fresh process: MiniLM + mean-pooling head built, the RSS high-water mark "
        f"reset, then {steps} training steps (forward, backward, AdamW, zero_grad) on a LexSent "
        f"batch of 32 sentences, {repeats} processes per arm (medians; range in brackets). "
        f"'added' = peak during the steps − RSS before them.\n\n"
    )
    text += markdown_table(
        [
            "arm",
            "RSS before MiB",
            "peak MiB",
            "added by training MiB",
            "added × PEFT LoRA",
            "trainable",
        ],
        rows,
    )
    config = {"arms": list(arms), "steps": steps, "repeats": repeats, "batch_sentences": 32}
    folder = write_results(
        "athena", "memory", config=config, records=records, markdown=text, out_dir=args.out
    )
    print(text)
    print(f"results in {folder}")


if __name__ == "__main__":
    main()
