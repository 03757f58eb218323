"""`make demo-gpt`: train the reference GPT on the embedded corpus for one to two minutes on 2 CPU cores.

Prints the validation loss before and after training and a generated sample, and writes the
result to ``docs/results/demo/``: final validation bits/byte, the validation curve (every
``steps/12`` steps) and the per-batch training loss (downsampled to 200 points in the JSON), and
a plot of both in bits/byte (the whole run, and a zoom after warm-up whose y-range holds every
training spike). Each library plugs its piece in through the two registries below:
``--residual NAME`` picks how sublayer outputs join the residual stream, ``--optimizer NAME`` picks
the optimiser. Factories import their package lazily, so the demo runs with only the core installed.

    uv run python -m benchmarks.demo                      # plain residual, AdamW
    uv run python -m benchmarks.demo --steps 50 --no-progress
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.harness import (
    GPT,
    GPTConfig,
    PlainResidual,
    bits_per_byte,
    common_parser,
    corpus_for_args,
    cosine_schedule,
    downsample,
    estimate_loss,
    markdown_table,
    seed_everything,
    setup_run,
    train_lm,
    write_results,
)

ResidualFactory = Callable[[int, GPTConfig], nn.Module]
OptimizerFactory = Callable[[nn.Module, float], torch.optim.Optimizer]


def _plain(index: int, config: GPTConfig) -> nn.Module:
    return PlainResidual()


def _aion(index: int, config: GPTConfig) -> nn.Module:
    # AION default mode (sync-free, compile-clean): x + α·y with α from the energy ratio.
    from aion_torch import AionResidual

    return AionResidual()


def _adamw(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def _auon(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    # Hidden matrices on AuON (update RMS 0.2·lr, as AdamW-matched Muon), the rest on AdamW.
    from auon import AuONWithAuxAdam

    return AuONWithAuxAdam.from_model(
        model, lr=lr, adamw_lr=lr, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"
    )


RESIDUALS: dict[str, ResidualFactory] = {"plain": _plain, "aion": _aion}
OPTIMIZERS: dict[str, OptimizerFactory] = {"adamw": _adamw, "auon": _auon}


def _plot(
    losses: list[float], val_points: list[tuple[int, float]], title: str, warmup: int
) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(i, bits_per_byte(v)) for i, v in enumerate(losses) if math.isfinite(v)]
    val = [(s, bits_per_byte(v)) for s, v in val_points if math.isfinite(v)]
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 3.8))
    for a in (ax, zoom):
        if train:
            a.plot(*zip(*train, strict=True), lw=0.7, alpha=0.8, label="train (per batch)")
        if val:
            a.plot(*zip(*val, strict=True), "o-", ms=3, label="validation")
        a.set_xlabel("step")
        a.set_ylabel("bits per byte")
        a.legend()
    ax.set_title(f"{title}: whole run")
    late = [v for i, v in train if i >= warmup] + [v for s, v in val if s >= warmup]
    if late:
        lo, hi = min(late), max(late)
        pad = 0.05 * max(hi - lo, 0.1)
        zoom.set_xlim(warmup, max(len(losses), val[-1][0] if val else 0))
        zoom.set_ylim(lo - pad, hi + pad)
    zoom.set_title("after warm-up (y-range holds every spike)")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__ or "demo")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--residual", choices=sorted(RESIDUALS), default="plain")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adamw")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 600)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.quick = True  # the demo always uses the embedded corpus unless --data is given
    device = setup_run(args)
    seed_everything(args.seed)
    corpus = corpus_for_args(args)
    steps = args.steps if args.steps is not None else 600
    lr = args.lr if args.lr is not None else 3e-3
    batch_size, seq_len = 16, 128
    config = GPTConfig(seq_len=seq_len, d_model=128, n_layers=4, n_heads=4, positions="rotary")
    model = GPT(config, residual_factory=RESIDUALS[args.residual]).to(device)
    optimizer = OPTIMIZERS[args.optimizer](model, lr)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"demo: corpus {corpus.name} ({corpus.train.numel():,} training bytes), GPT {n_params:,} "
        f"parameters, residual={args.residual}, optimizer={args.optimizer}, {steps} steps, "
        f"{torch.get_num_threads()} threads on {device}"
    )

    def val_loss() -> float:
        return estimate_loss(
            model, corpus.val, batch_size=16, seq_len=seq_len, iters=8, device=device
        )

    before = val_loss()
    print(f"validation before: {before:.4f} nats/byte = {bits_per_byte(before):.3f} bits/byte")
    val_points = [(0, before)]
    eval_every = max(1, steps // 12)

    def on_step(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, m: nn.Module) -> None:
        if step > 0 and step % eval_every == 0:
            val_points.append((step, val_loss()))

    start = time.perf_counter()
    log = train_lm(
        model,
        optimizer,
        corpus.train,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        seed=args.seed,
        device=device,
        schedule=lambda s: cosine_schedule(s, steps),
        on_step=on_step,
        progress_bar=not args.no_progress,
        desc=f"demo {args.residual}/{args.optimizer}",
    )
    seconds = time.perf_counter() - start
    after = val_loss()
    val_points.append((steps, after))
    print(f"validation after:  {after:.4f} nats/byte = {bits_per_byte(after):.3f} bits/byte")
    if log.crashed:
        print("training diverged (non-finite loss)")
    prompt = torch.tensor([list(b"def ")], device=device)
    sample = model.generate(
        prompt,
        200,
        temperature=0.8,
        top_k=40,
        generator=torch.Generator(device=device).manual_seed(args.seed),
    )
    text = bytes(sample[0].tolist()).decode("utf-8", errors="replace")
    print("sample:\n" + text)
    name = f"demo_{args.residual}_{args.optimizer}"
    warmup = max(1, int(0.1 * steps))  # cosine_schedule's default warm-up fraction
    finite = [(i, v) for i, v in enumerate(log.losses) if math.isfinite(v)]
    late = [(i, v) for i, v in finite if i >= warmup]
    spike = max(late, key=lambda p: p[1]) if late else (None, math.nan)
    table = markdown_table(
        [
            "residual",
            "optimizer",
            "steps",
            "val bits/byte before",
            "val bits/byte after",
            "max train bits/byte after warm-up (step)",
            "train s",
        ],
        [
            [
                args.residual,
                args.optimizer,
                steps,
                bits_per_byte(before),
                bits_per_byte(after),
                f"{bits_per_byte(spike[1]):.3f} ({spike[0]})",
                seconds,
            ]
        ],
    )
    folder = write_results(
        "demo",
        name,
        config={
            "gpt": vars(config),
            "steps": steps,
            "lr": lr,
            "batch_size": batch_size,
            "residual": args.residual,
            "optimizer": args.optimizer,
            "seed": args.seed,
            "corpus": corpus.name,
        },
        records=[
            {
                "seed": args.seed,
                "val_bpb_before": bits_per_byte(before),
                "val_bpb_after": bits_per_byte(after),
                "seconds": seconds,
                "crashed": log.crashed,
                "train_bpb_max_after_warmup": bits_per_byte(spike[1]),
                "train_bpb_max_step": spike[0],
                "val_steps": [s for s, _ in val_points],
                "val_bpb": [float(f"{bits_per_byte(v):.5g}") for _, v in val_points],
                "train_steps": downsample([float(i) for i in range(len(log.losses))]),
                "train_bpb": [float(f"{bits_per_byte(v):.5g}") for v in downsample(log.losses)],
            }
        ],
        markdown=table + "\nSample:\n\n```text\n" + text + "\n```\n",
        figures={
            "": _plot(log.losses, val_points, f"demo: {args.residual} + {args.optimizer}", warmup)
        },
        out_dir=args.out,
        device=device,
    )
    print(f"wrote {folder}/{name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
