"""inl-llm + aiether (Hugging Face side): an INL causal LM grown by ``aiether.hf.AIetherCallback``
inside ``transformers.Trainer``. The INL layer writes into the residual stream too, so the stack
adapter names it beside the attention and MLP output projections; growth then keeps the function,
a Trainer run resumed from a checkpoint ends with the same weights as an uninterrupted one, and
the exported model generates with its KV cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from aiether import GrowthController, GrowthTrigger, StackAdapter, export_compact, make_growable
from aiether.hf import AIetherCallback, create_optimizer_and_scheduler
from inl_llm import INLForCausalLM, INLLLMConfig

INL_STACK = StackAdapter(
    path="model.layers",
    out_proj_names=("self_attn.o_proj", "inl", "mlp.down_proj"),
    layer_count_attr="num_layers",
    cache_guard=True,
)
IDS = torch.randint(1, 64, (2, 10), generator=torch.Generator().manual_seed(0))


def _model(adapter: StackAdapter | None = INL_STACK) -> INLForCausalLM:
    torch.manual_seed(0)
    config = INLLLMConfig.from_preset(
        "tiny",
        vocab_size=64,
        num_layers=3,
        use_adaptive_stopping=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    model = INLForCausalLM(config)
    make_growable(model, adapter, initial_active=1)
    return model


class _Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        self.data = torch.randint(1, 64, (n, 12), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.data[i], "labels": self.data[i]}


def _probe(model: torch.nn.Module) -> torch.Tensor:
    loss: torch.Tensor = model(IDS, labels=IDS).loss
    return loss


def _trainer(model: INLForCausalLM, out: Path) -> tuple[Trainer, GrowthController]:
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        save_strategy="steps",
        save_steps=6,
        logging_steps=6,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    opt, sched = create_optimizer_and_scheduler(model, args, adapter=INL_STACK)
    controller = GrowthController(
        model,
        opt,
        trigger=GrowthTrigger("schedule", schedule=(3, 8)),
        operator="copy",
        adapter=INL_STACK,
        isolated_warmup_steps=2,
        rewarm_steps=2,
        probe=_probe,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Tokens(64),
        optimizers=(opt, sched),
        callbacks=[AIetherCallback(controller)],
    )
    return trainer, controller


def test_an_inl_lm_grows_in_the_trainer_and_resumes_exactly(tmp_path: Path) -> None:
    model = _model()
    trainer, controller = _trainer(model, tmp_path / "straight")
    trainer.train()
    assert [e.step for e in controller.events] == [3, 8]
    assert model.model.layers.active_slots == [0, 1, 2]
    for e in controller.events:  # the INL update is zeroed with the projections
        assert e.probe_loss_after == e.probe_loss_before

    resumed_model = _model()
    resumed, resumed_controller = _trainer(resumed_model, tmp_path / "straight")
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-6"))
    assert [e.step for e in resumed_controller.events] == [3, 8]
    want, got = model.state_dict(), resumed_model.state_dict()
    for name, tensor in want.items():
        assert torch.equal(tensor, got[name]), name

    compact = export_compact(model.eval(), INL_STACK)
    assert compact.config.num_layers == 3
    with torch.no_grad():
        cached = compact.generate(IDS, max_new_tokens=4, do_sample=False)
        plain = compact.generate(IDS, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)


def test_the_guessed_llama_layout_misses_the_inl_update_and_growth_says_so() -> None:
    model = _model(adapter=None)  # aiether.for_model sees a Llama-like stack
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):  # the INL gates move away from zero
        loss = model(IDS, labels=IDS).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    controller = GrowthController(
        model, opt, trigger=GrowthTrigger("schedule", schedule=(99,)), operator="copy", probe=_probe
    )
    with pytest.warns(RuntimeWarning, match="out_proj_names"):
        event = controller.grow(2)
    assert event.probe_loss_after != event.probe_loss_before
