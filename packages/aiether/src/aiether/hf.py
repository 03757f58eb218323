"""Hugging Face integration (``pip install aiether[hf]``): the Trainer callback, its optimiser and
scheduler, and the original GPT as a ``transformers`` causal LM.

- :class:`AIetherCallback` drives a :class:`~aiether.controller.GrowthController` from
  ``transformers.Trainer``: step end → ``controller.step``; evaluation → the trigger sees
  ``eval_loss``; save → ``growth_state.json`` in the checkpoint folder; train begin → restores
  it when resuming. The Trainer must use the optimiser and scheduler of
  :func:`create_optimizer_and_scheduler` (``Trainer(optimizers=(opt, sched))``): per-block groups
  and a :class:`~aiether.schedule.GrowthAwareLR` are what make isolated warm-up and re-warm work.
  Under DDP pass ``ddp_find_unused_parameters=True`` (inactive blocks get no gradient).
- :class:`AIetherGPTConfig` (``model_type="aiether_gpt"``; configs saved as ``gpt_custom`` by the
  original load too) and :class:`AIetherGPTForCausalLM`: the original architecture over a
  growable stack, with ``save_pretrained``/``from_pretrained`` and ``generate`` (without a
  key/value cache: every step recomputes the prefix, and padding masks are not supported).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aiether.adapters import StackAdapter
from aiether.controller import GrowthController
from aiether.model import AIetherGPT, GPTConfig, init_gpt_module
from aiether.param_groups import param_groups
from aiether.persistence import STATE_FILE, load_growth_state, save_growth_state
from aiether.schedule import GrowthAwareLR
from aiether.stack import GrowableStack

try:
    from transformers import (
        GenerationMixin,
        PreTrainedConfig,
        PreTrainedModel,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.modeling_outputs import CausalLMOutput
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("aiether.hf needs transformers: pip install 'aiether[hf]'") from err

__all__ = [
    "AIetherCallback",
    "AIetherGPTConfig",
    "AIetherGPTForCausalLM",
    "create_optimizer_and_scheduler",
]


# -- optimiser and schedule ------------------------------------------------------------------
def _base_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def warm(t: int) -> float:
        return t / warmup if warmup > 0 and t < warmup else 1.0

    def progress(t: int) -> float:
        return min(max((t - warmup) / max(total - warmup, 1), 0.0), 1.0)

    schedules: dict[str, Callable[[int], float]] = {
        "linear": lambda t: warm(t) if t < warmup else 1.0 - progress(t),
        "cosine": lambda t: warm(t) if t < warmup else 0.5 * (1 + math.cos(math.pi * progress(t))),
        "constant": lambda t: 1.0,
        "constant_with_warmup": warm,
    }
    if kind not in schedules:
        raise ValueError(f"lr_scheduler_type must be one of {sorted(schedules)}, got {kind!r}")
    return schedules[kind]


def create_optimizer_and_scheduler(
    model: nn.Module,
    args: TrainingArguments,
    num_training_steps: int | None = None,
    *,
    adapter: StackAdapter | None = None,
) -> tuple[torch.optim.AdamW, GrowthAwareLR]:
    """AdamW over :func:`aiether.param_groups` and a :class:`GrowthAwareLR` following
    ``args.lr_scheduler_type`` (linear, cosine, constant, constant_with_warmup) with
    ``args.warmup_steps`` over ``args.max_steps`` (or ``num_training_steps``). ``adapter``
    locates the blocks of a model :func:`aiether.for_model` does not know (pass the one the
    stack and the controller use).

    Raises:
        ValueError: neither ``args.max_steps > 0`` nor ``num_training_steps``, or another
            scheduler type.
    """
    total = num_training_steps if num_training_steps is not None else args.max_steps
    if total is None or total <= 0:
        raise ValueError("set TrainingArguments.max_steps > 0 or pass num_training_steps")
    opt = torch.optim.AdamW(
        param_groups(model, args.weight_decay, adapter),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    sched = GrowthAwareLR(opt, _base_lambda(str(kind), args.get_warmup_steps(total), total))
    return opt, sched


def _unwrap(obj: Any, attr: str) -> Any:
    """The optimiser or scheduler inside accelerate's wrappers."""
    while getattr(obj, attr, None) is not None:  # AcceleratedOptimizer.optimizer, ….scheduler
        obj = getattr(obj, attr)
    return obj


# -- the Trainer callback ------------------------------------------------------------------------
class AIetherCallback(TrainerCallback):
    """Runs ``controller`` inside ``transformers.Trainer`` (see the module docstring).

    ``controller.step`` receives ``state.global_step − 1``, the 0-based index of the step just
    taken, as in a plain loop.
    """

    def __init__(self, controller: GrowthController) -> None:
        self.controller = controller

    def _check(self, kwargs: dict[str, Any]) -> None:
        opt = _unwrap(kwargs.get("optimizer"), "optimizer")
        sched = _unwrap(kwargs.get("lr_scheduler"), "scheduler")
        if opt is not self.controller.optimizer or not isinstance(sched, GrowthAwareLR):
            raise ValueError(
                "AIetherCallback needs the Trainer to use the controller's optimiser and a "
                "GrowthAwareLR: opt, sched = aiether.hf.create_optimizer_and_scheduler(model, args); "
                "Trainer(..., optimizers=(opt, sched))"
            )
        if sched.controller is not self.controller:
            sched.attach(self.controller)

    def on_train_begin(
        self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any
    ) -> None:
        self._check(kwargs)
        self.controller.trigger.device = torch.device(args.device)
        folder = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        if state.global_step > 0 and os.path.exists(os.path.join(folder, STATE_FILE)):
            load_growth_state(folder, self.controller, self.controller.scheduler)

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.controller.observe(state.global_step - 1)
        self.controller.decide(state.global_step - 1)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: Any,
        control: Any,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics and "eval_loss" in metrics:
            self.controller.decide(
                max(state.global_step - 1, 0), val_loss=float(metrics["eval_loss"])
            )

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        folder = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            save_growth_state(folder, self.controller, self.controller.scheduler)

    def on_train_end(
        self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any
    ) -> None:
        save_growth_state(str(args.output_dir), self.controller, self.controller.scheduler)


# -- the original GPT as a transformers model ----------------------------------------------------
class AIetherGPTConfig(PreTrainedConfig):  # type: ignore[no-untyped-call]
    """Configuration of :class:`AIetherGPTForCausalLM`: the original ``GPTConfig`` fields and
    defaults, plus the growth state.

    Args:
        block_size: the context length, as the original.
        vocab_size: the vocabulary size, as the original.
        n_layer: the final depth (every slot, active or not).
        n_head: attention heads per block, as the original.
        n_embd: the model width, as the original.
        dropout: dropout probability, as the original.
        bias: whether linears and norms have biases, as the original.
        aiether_active_layers: the active slots (``None``: all; what an exported model has).
        aiether_max_layers: recorded for readers (equals ``n_layer`` while growing).
        aiether_preserve: the stack's preservation rule.
        aiether_slot_order: the stack's slot order.
        initializer_range: std of the N(0, σ) initialisation.
    """

    model_type = "aiether_gpt"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
    }

    def __init__(
        self,
        block_size: int = 1024,
        vocab_size: int = 50304,
        n_layer: int = 12,
        n_head: int = 12,
        n_embd: int = 768,
        dropout: float = 0.0,
        bias: bool = True,
        aiether_active_layers: list[int] | None = None,
        aiether_max_layers: int | None = None,
        aiether_preserve: str = "zero_out",
        aiether_slot_order: str = "top_down",
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("tie_word_embeddings", True)
        kwargs.setdefault("use_cache", False)
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.dropout = dropout
        self.bias = bias
        self.aiether_active_layers = (
            None if aiether_active_layers is None else list(aiether_active_layers)
        )
        self.aiether_max_layers = aiether_max_layers
        self.aiether_preserve = aiether_preserve
        self.aiether_slot_order = aiether_slot_order
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.gpt_config()  # validates the sizes

    def gpt_config(self) -> GPTConfig:
        """The plain :class:`~aiether.model.GPTConfig` of these sizes."""
        return GPTConfig(
            block_size=self.block_size,
            vocab_size=self.vocab_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
        )


class AIetherGPTPreTrainedModel(PreTrainedModel):  # type: ignore[no-untyped-call]
    """Weight initialisation and class attributes of :class:`AIetherGPTForCausalLM`."""

    config_class = AIetherGPTConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]  # noqa: RUF012  (transformers' class attribute)
    _supports_sdpa = True
    # an exported (compact) model has no `active` buffer: every block runs
    _keys_to_ignore_on_load_missing = [r"\.active$"]  # noqa: RUF012

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_gpt_module(module, self.config.n_layer, self.config.initializer_range)


class AIetherGPTForCausalLM(AIetherGPTPreTrainedModel, GenerationMixin):  # type: ignore[no-untyped-call]
    """The original AIether GPT (:class:`~aiether.model.AIetherGPT`) as a causal LM.

    ``forward(input_ids, labels=None)`` returns a ``CausalLMOutput`` with ``logits`` (B, T, V)
    and, with labels, the mean next-token cross-entropy (labels are shifted inside; −100 is
    ignored).

    Example:
        >>> config = AIetherGPTConfig(block_size=16, vocab_size=32, n_layer=3, n_head=2, n_embd=8,
        ...                           aiether_active_layers=[2])
        >>> model = AIetherGPTForCausalLM(config)
        >>> model.transformer.h.active_slots
        [2]
    """

    _tied_weights_keys = {"transformer.lm_head.weight": "transformer.wte.weight"}  # noqa: RUF012

    def __init__(self, config: AIetherGPTConfig) -> None:
        super().__init__(config)
        active = config.aiether_active_layers
        self.transformer = AIetherGPT(
            config.gpt_config(),
            initial_active=config.n_layer if active is None else max(len(active), 1),
            slot_order=config.aiether_slot_order,  # type: ignore[arg-type]
            preserve=config.aiether_preserve,  # type: ignore[arg-type]
        )
        stack = self.transformer.h
        if active is not None and isinstance(stack, GrowableStack):
            stack.set_active(active)
        self.post_init()  # type: ignore[no-untyped-call]

    def get_input_embeddings(self) -> nn.Module:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        if not isinstance(value, nn.Embedding):
            raise TypeError(
                f"the input embedding must be an nn.Embedding, got {type(value).__name__}"
            )
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Module:
        return self.transformer.lm_head

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutput:
        """Logits and, with ``labels``, the shifted next-token loss (module docstring)."""
        logits, _ = self.transformer(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, then the active set: with
        ``config.aiether_active_layers`` the weights' ``active`` buffer must equal it (else
        ``ValueError``); without it (an exported model) every block runs."""
        want_info = bool(kwargs.pop("output_loading_info", False))
        loaded: Any = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        model, info = loaded
        stack = model.transformer.h
        active = model.config.aiether_active_layers
        if active is None:  # an exported (compact) model: every block runs; no buffer saved
            stack.set_active(range(len(stack)))
        else:
            stack._sync_mirrors()
            if list(active) != stack.active_slots:
                raise ValueError(
                    f"config.aiether_active_layers={active} but the weights' active set is "
                    f"{stack.active_slots}"
                )
        return (model, info) if want_info else model
