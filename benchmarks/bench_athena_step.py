"""Training-step cost of the athena methods on MiniLM: interleaved step times and FLOPs.

Spec athena §5 and the issue's step-time targets: PolyAdapter (LoRA only) ≤ 1.05× PEFT LoRA, and
LoRA + MoE (E 4, k 1) ≤ 1.3× LoRA. Every arm is one full training step (forward, backward,
AdamW step, zero_grad) of the LexSent model (all-MiniLM-L6-v2 + mean-pooling head) on the same
batch; the arms are timed interleaved in one process (`benchmarks.harness.interleaved_timing`),
and ratios are quoted against PEFT LoRA measured in the same run.

Also measured:

* FLOPs of one training step, counted by `torch.utils.flop_counter.FlopCounterMode` (matrix
  products and attention; elementwise work is not counted). This is what the original's
  "3–4× FLOPs reduction at metric parity" claim can be checked against: which FLOPs a method
  saves, relative to full fine-tuning.
* Freezing: LoRA with the first 0, 2, 4 of 6 encoder blocks frozen (requires_grad off, as the
  progressive freezing scheduler leaves them), so backward stops early.
* Memory is `benchmarks.bench_athena_memory` (the process high-water mark this module once
  reported was set while loading, the same for every arm).
* MoE implementations: the dense batched expert mix against gathering the selected experts.

`--quick`: fewer arms and iterations. Run: `uv run python -m benchmarks.bench_athena_step`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from athena import PolyAdapter
from benchmarks import _athena_bench as ab
from benchmarks._lexsent import build_lexsent, config_for, encode, load_tokenizer
from benchmarks.harness import common_parser, interleaved_timing, markdown_table, write_results

TARGETS = {"poly_lora": ("peft_lora", 1.05), "poly_moe_k1": ("peft_lora", 1.3)}
ARMS = (
    "probe",
    "full",
    "peft_lora",
    "poly_lora",
    "peft_lora_all",
    "peft_ia3",
    "poly_ia3",
    "poly_lora_ia3",
    "poly_moe_k1",
    "poly_moe_k1_gather",
    "poly_moe_k2",
    "poly_moe_soft",
    "lora_r42",
    "poly_lora_frozen2",
    "poly_lora_frozen4",
)
QUICK_ARMS = ("peft_lora", "poly_lora", "poly_moe_k1", "poly_lora_frozen4")


def _freeze_blocks(model: nn.Module, depth: int) -> None:
    """Freeze the adapters of encoder blocks 0 … depth−1 (what the scheduler does)."""
    for name, param in model.named_parameters():
        for i in range(depth):
            if f"encoder.layer.{i}." in name:
                param.requires_grad_(False)


def make_arm(arm: str, seed: int = 0) -> nn.Module:
    """The model of `arm` (a method of `_athena_bench`, or a frozen / gather variant)."""
    if arm.startswith("poly_lora_frozen"):
        model = ab.build("poly_lora", seed)
        _freeze_blocks(model, int(arm.removeprefix("poly_lora_frozen")))
        return model
    if arm == "poly_moe_k1_gather":
        model = ab.build("poly_moe_k1", seed)
        for module in model.modules():
            if isinstance(module, PolyAdapter):
                spec = module.specs["default"]
                module.specs["default"] = type(spec)(**{**spec.__dict__, "moe_impl": "gather"})
        return model
    return ab.build(arm, seed)


def step_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One training step on a fixed batch (lr small so the model stays sane over many calls)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    model.train()

    def step() -> None:
        out = model(**batch)
        loss = out.loss
        extra = ab.aux_loss(model)
        (loss + extra if extra is not None else loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (matrix products and attention)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("athena training-step cost on MiniLM: interleaved times and FLOPs")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per arm (30; quick 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    arms = QUICK_ARMS if args.quick else ARMS
    iters = args.iters or (5 if args.quick else 30)
    tokenizer = load_tokenizer()
    data = encode(build_lexsent(tokenizer, config_for(quick=True)).train, tokenizer)
    batch = {k: v[:32] for k, v in data.items()}
    models = {arm: make_arm(arm) for arm in arms}
    steps = {arm: step_fn(model, batch) for arm, model in models.items()}
    flops = {arm: count_flops(steps[arm]) for arm in arms}
    timings = interleaved_timing(steps, warmup=3 if args.quick else 5, iters=iters)
    base = timings["peft_lora"]
    full_flops = flops.get("full")
    records: list[dict[str, Any]] = []
    rows = []
    for arm in arms:
        trainable, total = ab.count_parameters(models[arm])
        record = {
            "arm": arm,
            "median_ms": timings[arm].median_ms,
            "q1_ms": timings[arm].q1_ms,
            "q3_ms": timings[arm].q3_ms,
            "ratio_to_peft_lora": timings[arm].ratio(base),
            "flops": flops[arm],
            "trainable": trainable,
            "total": total,
            "samples_us": timings[arm].samples_us(),
        }
        records.append(record)
        rows.append(
            [
                arm,
                f"{timings[arm].median_ms:.1f} [{timings[arm].q1_ms:.1f}, {timings[arm].q3_ms:.1f}]",
                f"{timings[arm].ratio(base):.3f}",
                f"{flops[arm] / 1e9:.2f}",
                f"{full_flops / flops[arm]:.2f}×" if full_flops else "—",
                f"{trainable:,d}",
            ]
        )
    text = (
        f"One training step (forward, backward, AdamW, zero_grad) of MiniLM + mean-pooling head on "
        f"a LexSent batch of {batch['input_ids'].shape[0]} × {batch['input_ids'].shape[1]} tokens; "
        f"arms interleaved, {iters} timed steps each, median [quartiles].\n\n"
    )
    text += markdown_table(
        [
            "arm",
            "step ms",
            "× PEFT LoRA",
            "GFLOPs/step",
            "full FT FLOPs ÷ arm",
            "trainable",
        ],
        rows,
    )
    checks = []
    for arm, (ref, limit) in TARGETS.items():
        if arm in timings and ref in timings:
            ratio = timings[arm].ratio(timings[ref])
            checks.append(
                [
                    f"{arm} / {ref}",
                    f"{ratio:.3f}",
                    f"≤ {limit}",
                    "met" if ratio <= limit else "missed",
                ]
            )
    if "poly_moe_k1" in timings and "poly_lora" in timings:
        ratio = timings["poly_moe_k1"].ratio(timings["poly_lora"])
        checks.append(
            [
                "poly_moe_k1 / poly_lora",
                f"{ratio:.3f}",
                "≤ 1.3",
                "met" if ratio <= 1.3 else "missed",
            ]
        )
    text += "\n\n## Step-time targets\n\n" + markdown_table(
        ["ratio", "measured", "target", ""], checks
    )
    config = {"arms": list(arms), "iters": iters, "batch_shape": list(batch["input_ids"].shape)}
    folder = write_results(
        "athena", "step", config=config, records=records, markdown=text, out_dir=args.out
    )
    print(text)
    print(f"results in {folder}")


if __name__ == "__main__":
    main()
