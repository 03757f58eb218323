"""Continual learning on LexSent tasks: sequential fine-tuning vs rehearsal with CrossTaskMemory.

Spec athena §5 ("Continual learning"). One MiniLM encoder with one PolyAdapter (LoRA r 8 on
query and value) shared by all tasks and one linear head per task, trained on the tasks in
order: sentiment → negation detection → intensity (`benchmarks._lexsent.build_continual_tasks`),
`--steps` AdamW steps of batch 32 per task. Strategies:

* `sequential`: each batch holds 32 examples of the current task (no rehearsal);
* `reservoir`: every new example is offered to a 200-example `CrossTaskMemory` (Vitter's
  Algorithm R); from the second task on, each batch holds 24 new examples and 8 drawn from the
  memory's examples of earlier tasks;
* `class_balanced`: the same with the class-balanced memory (equal slots per (task, label)).

After each task every task's test split is evaluated with its own head, filling the accuracy
matrix a[t, i] (`athena.ContinualMetrics`): A_T (final average accuracy), forgetting and
backward transfer (BWT). Seeds 0, 1, 2; Student-t intervals on the paired differences against
`sequential`. The stress variant trains sentiment on plain sentences, then on negated sentences
only (the word-to-label map flips), `--stress-steps` steps per task, where forgetting is
unavoidable without rehearsal.

The lr is fixed (`--lr`, default 1e-3, the middle of the LoRA grid of `bench_athena_lexsent`)
and the same for every strategy: the comparison is between strategies, not tuned per strategy.

`--quick`: 1,000 training sentences per task, 20 steps per task, 200 test sentences per task,
one seed, no stress variant.
Run: `uv run python -m benchmarks.bench_athena_continual`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Literal

import torch
from torch import Tensor, nn

from athena import ContinualMetrics, CrossTaskMemory, PolyAdapterConfig, get_athena_model
from benchmarks import _athena_bench as ab
from benchmarks._lexsent import build_continual_tasks, config_for, encode, load_tokenizer
from benchmarks.harness import (
    common_parser,
    markdown_table,
    mean_std,
    paired_t_interval,
    progress,
    write_results,
)

Strategy = Literal["sequential", "reservoir", "class_balanced"]
STRATEGIES: tuple[Strategy, ...] = ("sequential", "reservoir", "class_balanced")
MEMORY_SIZE = 200
REPLAY_PER_BATCH = 8
BATCH = 32


class MultiHeadClassifier(nn.Module):
    """MiniLM, masked mean pooling and one linear head per task (`task_ids` picks the head)."""

    def __init__(self, encoder: nn.Module, num_tasks: int, num_labels: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009
        self.heads = nn.ModuleList(nn.Linear(hidden, num_labels) for _ in range(num_tasks))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        task_ids: Tensor,
        labels: Tensor | None = None,
    ) -> ab.ClassifierOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        every = torch.stack([head(pooled) for head in self.heads], dim=1)  # (B, tasks, labels)
        logits = every[torch.arange(pooled.shape[0]), task_ids]
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ab.ClassifierOutput(loss, logits)


def _pad_cat(parts: list[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Concatenate batches, right-padding sequences to the longest."""
    length = max(p["input_ids"].shape[1] for p in parts)
    out: dict[str, list[Tensor]] = {
        "input_ids": [],
        "attention_mask": [],
        "labels": [],
        "task_ids": [],
    }
    for p in parts:
        extra = length - p["input_ids"].shape[1]
        out["input_ids"].append(nn.functional.pad(p["input_ids"], (0, extra), value=pad_id))
        out["attention_mask"].append(nn.functional.pad(p["attention_mask"], (0, extra), value=0))
        out["labels"].append(p["labels"])
        out["task_ids"].append(p["task_ids"])
    return {k: torch.cat(v) for k, v in out.items()}


def run_sequence(
    tasks: list[dict[str, dict[str, Tensor]]],
    strategy: Strategy,
    *,
    seed: int,
    steps: int,
    lr: float,
    pad_id: int,
) -> ContinualMetrics:
    """Train the shared adapter on `tasks` in order; return the filled accuracy matrix."""
    encoder = ab.fresh_classifier(seed).encoder
    torch.manual_seed(seed)
    net = MultiHeadClassifier(encoder, len(tasks))
    torch.manual_seed(seed + 10_000)
    model = get_athena_model(
        net, PolyAdapterConfig(r=8, lora_alpha=8, target_modules=ab.LORA_TARGETS)
    )
    net.heads.requires_grad_(True)
    memory = (
        None
        if strategy == "sequential"
        else CrossTaskMemory(
            memory_size=MEMORY_SIZE, strategy=strategy, seed=seed, pad_token_id=pad_id
        )
    )
    metrics = ContinualMetrics(len(tasks))
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    generator = torch.Generator().manual_seed(seed)
    for t, task in enumerate(tasks):
        replay = memory is not None and t > 0
        new_per_batch = BATCH - REPLAY_PER_BATCH if replay else BATCH
        model.train()
        for batch in ab.batches(task["train"], new_per_batch, steps, seed + 97 * t):
            batch = {**batch, "task_ids": torch.full_like(batch["labels"], t)}
            parts = [batch]
            if replay and memory is not None:
                old = memory.sample(REPLAY_PER_BATCH, task_ids=list(range(t)), generator=generator)
                parts.append(
                    {k: old[k] for k in ("input_ids", "attention_mask", "labels", "task_ids")}
                )
            if memory is not None:
                memory.add({k: v for k, v in batch.items() if k != "task_ids"}, task_id=t)
            out = model(**_pad_cat(parts, pad_id))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        for i, other in enumerate(tasks):
            test = {**other["test"], "task_ids": torch.full_like(other["test"]["labels"], i)}
            metrics.update(t, i, ab.accuracy(model, test))
    return metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("athena continual learning on LexSent: sequential vs rehearsal")
    parser.add_argument("--steps", type=int, default=None, help="steps per task (200; quick 20)")
    parser.add_argument("--stress-steps", type=int, default=400)
    parser.add_argument("--stress-seeds", type=int, default=2)
    parser.add_argument(
        "--stress-strategies", default="sequential,reservoir", help="strategies of the stress run"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    return parser.parse_args(argv)


def _encode_tasks(
    variant: Literal["standard", "stress"], quick: bool
) -> tuple[list[dict[str, dict[str, Tensor]]], list[str], int]:
    tokenizer = load_tokenizer()
    tasks = build_continual_tasks(tokenizer, config_for(quick=quick), variant=variant)
    encoded = [
        {s: encode(task.split(s), tokenizer) for s in ("train", "val", "test")} for task in tasks
    ]
    if quick:  # a smoke size: evaluate on the first 200 test sentences of each task
        for task_data in encoded:
            task_data["test"] = {k: v[:200] for k, v in task_data["test"].items()}
    return encoded, [task.name for task in tasks], int(tokenizer.pad_token_id)


def _section(
    title: str, names: list[str], results: dict[str, list[ContinualMetrics]]
) -> tuple[str, list[dict[str, Any]]]:
    rows, pairs, records = [], [], []
    summary: dict[str, dict[str, list[float]]] = {}
    for strategy, runs in results.items():
        vals = {
            "A_T": [100 * m.average_accuracy() for m in runs],
            "forgetting": [100 * m.forgetting() for m in runs],
            "BWT": [100 * m.bwt() for m in runs],
        }
        summary[strategy] = vals
        for seed, m in enumerate(runs):
            records.append({"variant": title, "strategy": strategy, "seed": seed, **m.to_dict()})
        matrix = torch.stack([m.accuracy_matrix() for m in runs]).mean(0) * 100
        rows.append(
            [strategy]
            + [f"{mean_std(v)[0]:.2f} ± {mean_std(v)[1]:.2f}" for v in vals.values()]
            + [" / ".join(f"{x:.1f}" for x in matrix[-1].tolist())]
        )
    for strategy in results:
        if strategy == "sequential" or "sequential" not in results:
            continue
        for key in ("A_T", "forgetting", "BWT"):
            iv = paired_t_interval(summary[strategy][key], summary["sequential"][key])
            pairs.append([f"{strategy} − sequential", key, iv.fmt(2)])
    text = f"### {title}: {' → '.join(names)}\n\n" + markdown_table(
        ["strategy", "A_T %", "forgetting (pp)", "BWT (pp)", "final accuracy per task %"], rows
    )
    if pairs:
        text += "\n\n" + markdown_table(["difference", "metric", "mean [95% t-interval]"], pairs)
    return text + "\n", records


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = args.steps or (20 if args.quick else 200)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    started = time.perf_counter()
    tasks, names, pad_id = _encode_tasks("standard", args.quick)
    standard: dict[str, list[ContinualMetrics]] = {}
    for strategy in progress(STRATEGIES, desc="strategies", disable=args.no_progress):
        standard[strategy] = [
            run_sequence(tasks, strategy, seed=s, steps=steps, lr=args.lr, pad_id=pad_id)
            for s in seeds
        ]
        print(
            f"{strategy}: A_T {[round(m.average_accuracy(), 4) for m in standard[strategy]]}",
            flush=True,
        )
    text, records = _section("standard", names, standard)
    stress_cfg: dict[str, Any] = {}
    if not args.quick and args.stress_seeds > 0:
        stress_tasks, stress_names, _ = _encode_tasks("stress", False)
        stress: dict[str, list[ContinualMetrics]] = {}
        strategies = [s for s in args.stress_strategies.split(",") if s]
        for strategy in strategies:
            stress[strategy] = [
                run_sequence(
                    stress_tasks,
                    strategy,
                    seed=s,
                    steps=args.stress_steps,
                    lr=args.lr,
                    pad_id=pad_id,
                )
                for s in range(args.stress_seeds)
            ]
        more, more_records = _section("stress", stress_names, stress)
        text += "\n" + more
        records += more_records
        stress_cfg = {
            "steps": args.stress_steps,
            "seeds": args.stress_seeds,
            "strategies": strategies,
        }
    head = (
        f"Shared LoRA r 8 (query, value) on MiniLM, one head per task, {steps} AdamW steps of batch "
        f"{BATCH} per task at lr {args.lr:g}; rehearsal: {MEMORY_SIZE}-example memory, "
        f"{REPLAY_PER_BATCH} replayed examples per batch from the second task on; seeds {seeds}. "
        "A_T: mean final test accuracy; forgetting: mean drop from each earlier task's best; "
        "BWT: mean (final − just-trained) accuracy of earlier tasks.\n\n"
    )
    config = {
        "steps": steps,
        "seeds": seeds,
        "lr": args.lr,
        "memory_size": MEMORY_SIZE,
        "replay_per_batch": REPLAY_PER_BATCH,
        "batch": BATCH,
        "tasks": names,
        "stress": stress_cfg,
        "seconds": time.perf_counter() - started,
        "quick": args.quick,
    }
    folder = write_results(
        "athena",
        "continual",
        config=config,
        records=records,
        markdown=head + text,
        out_dir=args.out,
    )
    print(head + text)
    print(f"results in {folder}")


if __name__ == "__main__":
    main()
