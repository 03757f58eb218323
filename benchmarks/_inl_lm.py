"""Byte-level INL language models for the inl-llm benchmarks (``bench_inl_quality``,
``bench_inl_halting``): model arms, parameter matching, FLOPs per token, training runs and the
learning-rate grid with automatic extension.

Every arm is an :class:`inl_llm.modeling_inl.INLForCausalLM` with vocabulary 256 (bytes), full
(not low-rank) embeddings, an untied head, no dropout and no KV cache, so all arms share one code
path. ``INLLLMConfig`` has no switch that removes the INL sub-layer, so the transformer baseline is
the same model with every block's ``inl`` replaced by :class:`NoINL` (a zero update, no parameters)
and its ``inl_norm`` by ``nn.Identity``: attention + FFN only.

Non-embedding parameters are ``attention + inl_controller + inl_other + ffn + norms`` of
``num_parameters_by_component`` (the token embedding and the untied head are reported apart).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import (
    bits_per_byte,
    cosine_schedule,
    estimate_loss,
    fixed_lr,
    get_batch,
    seed_everything,
    select_lr,
    train_lm,
    write_results,
)
from inl_llm import INLLayer, INLStats, SharedINLController
from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.modeling_inl import INLCausalLMOutputWithPast, INLDecoderLayer, INLForCausalLM

VOCAB = 256
NON_EMBEDDING = ("attention", "inl_controller", "inl_other", "ffn", "norms")
ADAMW_BETAS = (0.9, 0.95)


@dataclass(frozen=True, kw_only=True)
class Shape:
    """The reference size every arm is matched to (the transformer baseline's shape)."""

    d_model: int
    num_layers: int
    num_heads: int
    num_iterations: int
    seq_len: int
    ffn_ratio: int = 4
    mlp: Literal["swiglu", "gelu"] = "swiglu"


@dataclass(frozen=True, kw_only=True)
class Arm:
    """One model variant.

    Attributes:
        name: the arm's label in results.
        inl: False for the transformer baseline (INL sub-layers removed).
        placement: ``"between"`` (attention → INL → FFN) or ``"replace_ffn"`` (no FFN).
        variant: INL ``"hierarchical"`` or ``"full"``.
        num_iterations: T, or None for the shape's T.
        shared_controllers: one controller for the model (the default) or one per layer.
        match: how the arm reaches the baseline's non-embedding parameters: ``"none"`` (it is the
            baseline), ``"ffn"`` (narrow the FFN) or ``"width"`` (raise d_model, then depth if
            width alone misses the tolerance).
    """

    name: str
    inl: bool = True
    placement: Literal["between", "replace_ffn"] = "between"
    variant: Literal["hierarchical", "full"] = "hierarchical"
    num_iterations: int | None = None
    shared_controllers: bool = True
    match: Literal["none", "ffn", "width"] = "ffn"


BASELINE = Arm(name="transformer", inl=False, match="none")


class NoINL(nn.Module):
    """Stands in for an :class:`~inl_llm.INLLayer` in the baseline: a zero update, zero iterations,
    no parameters (the block then computes attention + FFN only)."""

    def forward(
        self, x0: Tensor, h: Tensor, *, mask: Tensor | None = None, return_stats: bool = False
    ) -> Tensor | tuple[Tensor, INLStats]:
        zero = torch.zeros_like(x0)
        if not return_stats:
            return zero
        iterations = torch.zeros(x0.shape[:2], dtype=torch.long, device=x0.device)
        return zero, INLStats(iterations=iterations, step_norm=zero[..., 0])

    def controller_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def other_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())


class ByteLM(nn.Module):
    """An :class:`INLForCausalLM` with the harness interface ``loss(x, y)`` (targets already shifted,
    as ``get_batch`` returns them: token t predicts y[t])."""

    def __init__(self, lm: INLForCausalLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, x: Tensor) -> INLCausalLMOutputWithPast:
        """(B, S) byte ids → the model output (logits (B, S, 256), ``inl_iterations`` (L,))."""
        return cast(INLCausalLMOutputWithPast, self.lm(input_ids=x, use_cache=False))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy in nats per byte over all B·S targets."""
        logits = self(x).logits
        assert logits is not None
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    def counts(self) -> dict[str, int]:
        """``num_parameters_by_component()`` plus ``non_embedding`` and ``total``."""
        c = self.lm.num_parameters_by_component()
        return {
            **c,
            "non_embedding": sum(c[k] for k in NON_EMBEDDING),
            "total": sum(int(p.numel()) for p in self.parameters()),
        }


def lm_config(
    shape: Shape,
    arm: Arm,
    *,
    d_model: int | None = None,
    num_layers: int | None = None,
    feedforward_dim: int | None = None,
    halt_eps: float | None = None,
    min_iterations: int = 1,
) -> INLLLMConfig:
    """The model configuration of ``arm``; ``halt_eps`` switches per-token halting on."""
    d = d_model or shape.d_model
    return INLLLMConfig(
        vocab_size=VOCAB,
        d_model=d,
        num_layers=num_layers or shape.num_layers,
        num_heads=shape.num_heads,
        num_iterations_per_layer=arm.num_iterations or shape.num_iterations,
        feedforward_dim=feedforward_dim or shape.ffn_ratio * d,
        max_seq_len=shape.seq_len,
        dropout=0.0,
        mlp=shape.mlp,
        use_lowrank_embeddings=False,
        tie_word_embeddings=False,
        use_shared_controllers=arm.shared_controllers,
        use_adaptive_stopping=halt_eps is not None,
        adaptive_convergence_threshold=halt_eps if halt_eps is not None else 1e-3,
        inl_min_iterations=min_iterations,
        inl_variant=arm.variant,
        inl_placement=arm.placement,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def non_embedding_params(cfg: INLLLMConfig, *, inl: bool = True) -> int:
    """Closed-form non-embedding parameters of the model ``build_lm(cfg, inl=inl)`` builds."""
    d, v = cfg.d_model, cfg.vocab_size
    n = cfg.expected_num_parameters() - v * d - (0 if cfg.tie_word_embeddings else v * d)
    if not inl:
        norm = d if cfg.norm == "rmsnorm" else 2 * d
        inl_cfg = cfg.inl_config()
        n -= cfg.num_layers * (INLLayer.expected_num_parameters(inl_cfg) + norm)
        if cfg.use_shared_controllers:
            n -= SharedINLController.expected_num_parameters(inl_cfg)
    return n


def build_lm(cfg: INLLLMConfig, *, inl: bool = True) -> ByteLM:
    """Build the model; ``inl=False`` removes every INL sub-layer, its norm and the shared
    controller (the transformer baseline)."""
    lm = INLForCausalLM(cfg)
    if not inl:
        lm.model.inl_controller = None
        for layer in lm.model.layers:
            block = cast(INLDecoderLayer, layer)
            block.inl = cast(INLLayer, NoINL())
            block.inl_norm = nn.Identity()
    return ByteLM(lm)


def match_arm(
    shape: Shape,
    arm: Arm,
    *,
    tol: float = 0.02,
    halt_eps: float | None = None,
    min_iterations: int = 1,
) -> tuple[INLLLMConfig, dict[str, Any]]:
    """The configuration of ``arm`` with non-embedding parameters within ``tol`` of the baseline.

    ``"ffn"``: the FFN width F that minimises the mismatch (the count is affine in F).
    ``"width"``: d_model over multiples of 2·num_heads (even RoPE head dimension) at the baseline
    depth (F = ffn_ratio·d, unused without an FFN); if the best width misses ``tol``, the depth is
    raised one layer at a time (up to 4L) and the width re-searched, stopping at the first depth
    whose best width is within ``tol``. ``halt_eps`` and ``min_iterations`` pass
    to :func:`lm_config` (halting adds no parameters).

    Returns:
        The configuration and a record: target, achieved count, relative mismatch, the knobs set.
    """
    target = non_embedding_params(lm_config(shape, BASELINE), inl=False)
    how: dict[str, Any] = {"target_non_embedding": target, "method": arm.match}
    knobs: dict[str, int] = {}
    if arm.match == "ffn":
        n1 = non_embedding_params(lm_config(shape, arm, feedforward_dim=1))
        slope = non_embedding_params(lm_config(shape, arm, feedforward_dim=2)) - n1
        knobs["feedforward_dim"] = max(1, 1 + round((target - n1) / slope))
    elif arm.match == "width":
        step = 2 * shape.num_heads

        def mismatch(layers: int, d: int) -> float:
            n = non_embedding_params(lm_config(shape, arm, d_model=d, num_layers=layers))
            return abs(n - target) / target

        widths = range(step, 8 * shape.d_model + 1, step)
        for layers in range(shape.num_layers, 4 * shape.num_layers + 1):
            d = min(widths, key=lambda w: mismatch(layers, w))
            if mismatch(layers, d) <= tol:
                break
        knobs.update(d_model=d, num_layers=layers)
    cfg = lm_config(shape, arm, halt_eps=halt_eps, min_iterations=min_iterations, **knobs)
    achieved = non_embedding_params(cfg, inl=arm.inl)
    how.update(
        knobs,
        achieved_non_embedding=achieved,
        relative_mismatch=(achieved - target) / target,
        within_tolerance=abs(achieved - target) <= tol * target,
    )
    return cfg, how


def arm_config(cfg: INLLLMConfig, arm: Arm) -> dict[str, Any]:
    """The fields of ``cfg`` that define an arm (for the result JSON)."""
    keys = (
        "d_model",
        "num_layers",
        "num_heads",
        "num_iterations_per_layer",
        "feedforward_dim",
        "mlp",
        "norm",
        "position",
        "inl_variant",
        "inl_placement",
        "use_shared_controllers",
        "use_adaptive_stopping",
        "adaptive_convergence_threshold",
        "inl_min_iterations",
        "use_lowrank_embeddings",
        "tie_word_embeddings",
        "dropout",
    )
    return {"inl": arm.inl, **{k: getattr(cfg, k) for k in keys}}


def flops_per_token(model: ByteLM, x: Tensor, y: Tensor) -> dict[str, float]:
    """Forward and forward + backward FLOPs per token of one batch (``FlopCounterMode``: matrix
    products and attention only; elementwise work, the bulk of INL's own steps, is not counted)."""
    tokens = x.numel()
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model.loss(x, y)
    with FlopCounterMode(display=False) as both:
        torch.autograd.backward(model.loss(x, y))
    model.zero_grad(set_to_none=True)
    return {
        "forward": fwd.get_total_flops() / tokens,
        "train": both.get_total_flops() / tokens,
    }


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW on every parameter, betas (0.9, 0.95), no weight decay."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=ADAMW_BETAS, weight_decay=0.0)


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Training budget and evaluation of one run."""

    steps: int
    batch: int
    seq_len: int
    val_batches: int
    val_batch: int = 32
    clip: float = 1.0


def validation_loss(model: ByteLM, val: Tensor, spec: RunSpec, device: torch.device) -> float:
    """Mean cross-entropy (nats/byte) over the fixed validation windows (seed 1234)."""
    return estimate_loss(
        model,
        val,
        batch_size=spec.val_batch,
        seq_len=spec.seq_len,
        iters=spec.val_batches,
        seed=1234,
        device=device,
    )


@dataclass(frozen=True, kw_only=True)
class Trainer:
    """Where and how the runs of one benchmark invocation train: corpus, budget, device."""

    corpus: Any
    spec: RunSpec
    device: torch.device
    progress: bool = True

    def run(
        self, cfg: INLLLMConfig, arm: Arm, lr: float, seed: int, tag: str = ""
    ) -> tuple[ByteLM, dict[str, Any]]:
        """Seed, build, train with AdamW and the harness cosine schedule (10% warm-up), evaluate.

        The batches depend only on ``seed`` (same data order across arms). Returns the trained
        model and its record: final validation bits/byte, training seconds and tokens/s of the run.
        """
        spec, device = self.spec, self.device
        seed_everything(seed)
        model = build_lm(cfg, inl=arm.inl).to(device)
        log = train_lm(
            model,
            make_optimizer(model, lr),
            self.corpus.train,
            steps=spec.steps,
            batch_size=spec.batch,
            seq_len=spec.seq_len,
            seed=seed,
            device=device,
            clip=spec.clip,
            schedule=lambda s: cosine_schedule(s, spec.steps),
            progress_bar=self.progress,
            desc=f"{tag or arm.name} lr={lr:.3g} s{seed}",
        )
        val = validation_loss(model, self.corpus.val, spec, device)
        tokens = spec.steps * spec.batch * spec.seq_len
        record: dict[str, Any] = {
            "arm": arm.name,
            "lr": lr,
            "seed": seed,
            "val_loss": val,
            "val_bpb": bits_per_byte(val) if math.isfinite(val) else math.nan,
            "crashed": log.crashed,
            "train_seconds": log.seconds,
            "tokens": tokens,
            "run_tokens_per_s": tokens / log.seconds if log.seconds > 0 else math.nan,
            "final_train_bpb": bits_per_byte(log.losses[-1]),
        }
        return model, record

    def choose_lr(
        self,
        cfg: INLLLMConfig,
        arm: Arm,
        *,
        fixed: float | None,
        centre: float,
        max_extend: int,
        selection_seed: int,
        tag: str = "",
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The lr of one arm: ``fixed`` when given (no grid, no records), else :func:`select_lr`
        on ``selection_seed``. Returns the grid records (tagged ``model=tag``) and the summary."""
        if fixed is not None:
            return [], fixed_lr(fixed)
        print(f"{tag or arm.name}: lr grid on selection seed {selection_seed}", flush=True)

        def tune(lr: float) -> dict[str, Any]:
            record = self.run(cfg, arm, lr, selection_seed, tag)[1]
            return {**record, "model": tag} if tag else record

        return select_lr(tune, centre, max_extend=max_extend)


def batch_for_timing(
    corpus: Any, spec: RunSpec, device: torch.device, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """One fixed training batch (B, S) for FLOP counting and timing."""
    gen = torch.Generator().manual_seed(seed)
    return get_batch(corpus.train, spec.batch, spec.seq_len, gen, device)


def train_step_fn(
    model: ByteLM, lr: float, x: Tensor, y: Tensor, clip: float
) -> Callable[[], None]:
    """A closure doing one full training step (forward, backward, clip, AdamW, zero_grad)."""
    opt = make_optimizer(model, lr)

    def step() -> None:
        torch.autograd.backward(model.loss(x, y))
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) so host clocks measure finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class INLTimer:
    """Wall time spent inside every INL sub-layer of a model, via forward pre/post hooks
    (synchronising CUDA at both ends), to attribute a forward's time to INL."""

    def __init__(self, model: ByteLM, device: torch.device) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._device = device
        self._handles = []
        for layer in model.lm.model.layers:
            inl = cast(INLDecoderLayer, layer).inl
            self._handles.append(inl.register_forward_pre_hook(self._pre))
            self._handles.append(inl.register_forward_hook(self._post))

    def _pre(self, module: nn.Module, args: Any) -> None:
        sync(self._device)
        self._start = time.perf_counter()

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        sync(self._device)
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def evaluate(model: ByteLM, val: Tensor, spec: RunSpec, device: torch.device) -> dict[str, Any]:
    """Validation loss and INL iterations on the same fixed windows as :func:`validation_loss`.

    Returns:
        ``val_loss`` (nats/byte), ``val_bpb``, ``iterations`` (mean over layers and tokens) and
        ``iterations_per_layer`` (L,).
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    total = torch.zeros((), device=device)
    per_layer = torch.zeros(model.lm.config.num_layers, device=device)
    for _ in range(spec.val_batches):
        x, y = get_batch(val, spec.val_batch, spec.seq_len, gen, device)
        out = model(x)
        assert out.logits is not None and out.inl_iterations is not None
        total += F.cross_entropy(out.logits.flatten(0, 1).float(), y.flatten())
        per_layer += out.inl_iterations
    model.train(was_training)
    loss = float(total) / spec.val_batches
    layers = (per_layer / spec.val_batches).tolist()
    return {
        "val_loss": loss,
        "val_bpb": bits_per_byte(loss) if math.isfinite(loss) else math.nan,
        "iterations": sum(layers) / len(layers),
        "iterations_per_layer": layers,
    }


def publish(
    args: argparse.Namespace,
    name: str,
    *,
    config: dict[str, Any],
    records: list[dict[str, Any]],
    markdown: str,
    figures: dict[str, Any],
    device: torch.device,
) -> None:
    """Write ``docs/results/inl-llm/<name>[_quick|_gpu].{json,md,png}`` and print the markdown."""
    suffix = "_quick" if args.quick else ("_gpu" if args.gpu else "")
    path = write_results(
        "inl-llm",
        name + suffix,
        config=config,
        records=records,
        markdown=markdown,
        figures=figures,
        out_dir=args.out,
        device=device,
    )
    print(markdown)
    print(f"wrote {path} in {config['wall_seconds'] / 60:.1f} min")


def common_config(
    args: argparse.Namespace, corpus: Any, shape: Shape, spec: RunSpec, seeds: list[int]
) -> dict[str, Any]:
    """The configuration keys both inl-llm benchmarks record."""
    return {
        "quick": args.quick,
        "gpu": args.gpu,
        "corpus": corpus.name,
        "shape": shape.__dict__,
        "run": spec.__dict__,
        "seeds": seeds,
    }
