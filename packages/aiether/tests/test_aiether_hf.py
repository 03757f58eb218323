"""aiether.hf: the original GPT as a transformers model (save/load with the active set, export
and generate, gpt_custom configs), resume through save_pretrained, and a tiny Trainer run with a
scheduled growth driven by AIetherCallback."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from transformers import Trainer, TrainingArguments

from aiether import (
    GrowthController,
    GrowthTrigger,
    TrajectoryTracker,
    export_compact,
    load_growth_state,
    save_growth_state,
)
from aiether.hf import (
    AIetherCallback,
    AIetherGPTConfig,
    AIetherGPTForCausalLM,
    create_optimizer_and_scheduler,
)

IDS = torch.tensor([[1, 5, 7, 2, 9, 3]])


def _config(**kw: Any) -> AIetherGPTConfig:
    base: dict[str, Any] = {
        "block_size": 32,
        "vocab_size": 40,
        "n_layer": 3,
        "n_head": 2,
        "n_embd": 16,
        "aiether_active_layers": [2],
    }
    return AIetherGPTConfig(**{**base, **kw})


def _model(seed: int = 0, **kw: Any) -> AIetherGPTForCausalLM:
    torch.manual_seed(seed)
    return AIetherGPTForCausalLM(_config(**kw))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(IDS).logits  # type: ignore[no-any-return]


def test_config_keeps_the_original_fields_and_aliases() -> None:
    default = AIetherGPTConfig()
    assert (
        default.block_size,
        default.vocab_size,
        default.n_layer,
        default.n_head,
        default.n_embd,
    ) == (
        1024,
        50304,
        12,
        12,
        768,
    )
    assert default.dropout == 0.0
    assert default.bias is True
    assert default.hidden_size == 768
    assert default.num_hidden_layers == 12
    with pytest.raises(ValueError, match="divisible"):
        AIetherGPTConfig(n_embd=10, n_head=3)


def test_save_and_load_keep_the_active_set(tmp_path: Path) -> None:
    model = _model()
    model.transformer.h.grow()
    from aiether.adapters import record_active

    record_active(model, model.transformer.h)
    model.save_pretrained(tmp_path)
    loaded = AIetherGPTForCausalLM.from_pretrained(tmp_path)
    assert loaded.transformer.h.active_slots == [1, 2]
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    assert loaded.transformer.lm_head.weight is loaded.transformer.wte.weight
    # a config that disagrees with the weights fails loudly
    config = json.loads((tmp_path / "config.json").read_text())
    config["aiether_active_layers"] = [2]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="active set"):
        AIetherGPTForCausalLM.from_pretrained(tmp_path)


def test_export_compact_saves_a_plain_model_that_generates(tmp_path: Path) -> None:
    model = _model()
    model.transformer.h.grow()
    compact = export_compact(model)
    assert compact.config.n_layer == 2
    compact.save_pretrained(tmp_path)
    loaded = AIetherGPTForCausalLM.from_pretrained(tmp_path)
    assert loaded.transformer.h.active_slots == [0, 1]
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    out = loaded.generate(IDS, max_new_tokens=4, do_sample=False)
    # greedy decoding by hand
    seq = IDS.clone()
    for _ in range(4):
        with torch.no_grad():
            nxt = model(seq).logits[:, -1:].argmax(-1)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


def test_gpt_custom_configs_load(tmp_path: Path) -> None:
    data = _config().to_dict()
    data["model_type"] = "gpt_custom"
    data.pop("aiether_active_layers")
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = AIetherGPTConfig.from_pretrained(tmp_path)
    assert config.n_layer == 3
    assert AIetherGPTForCausalLM(config).transformer.h.active_slots == [0, 1, 2]


def _step(model: Any, opt: Any, sched: Any, controller: GrowthController, step: int) -> float:
    g = torch.Generator().manual_seed(500 + step)
    ids = torch.randint(0, 40, (4, 12), generator=g)
    loss = model(ids, labels=ids).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    controller.step(step)
    sched.step()
    return float(loss.detach())


def _run_setup(model: Any, tmp: Path) -> tuple[Any, Any, GrowthController]:
    args = TrainingArguments(
        output_dir=str(tmp),
        max_steps=40,
        learning_rate=3e-3,
        warmup_steps=3,
        lr_scheduler_type="cosine",
        weight_decay=0.1,
        report_to=[],
        use_cpu=True,
    )
    opt, sched = create_optimizer_and_scheduler(model, args)
    tracker = TrajectoryTracker([("w", torch.zeros(1))], window=5, interval=1, dtype=torch.float32)
    controller = GrowthController(
        model,
        opt,
        tracker=tracker,
        trigger=GrowthTrigger("schedule", schedule=(6,)),
        isolated_warmup_steps=5,
        rewarm_steps=5,
    )
    controller.attach_scheduler(sched)
    return opt, sched, controller


def test_resume_through_save_pretrained_continues_exactly(tmp_path: Path) -> None:
    model = _model(aiether_active_layers=[1, 2])
    opt, sched, ctl = _run_setup(model, tmp_path)
    reference = [_step(model, opt, sched, ctl, s) for s in range(30)]

    first = _model(aiether_active_layers=[1, 2])
    opt1, sched1, ctl1 = _run_setup(first, tmp_path)
    _ = [_step(first, opt1, sched1, ctl1, s) for s in range(10)]  # the growth at 6 is behind us
    ckpt = tmp_path / "ckpt"
    first.save_pretrained(ckpt)
    opt_state = copy.deepcopy(opt1.state_dict())
    save_growth_state(ckpt, ctl1, sched1)

    resumed = AIetherGPTForCausalLM.from_pretrained(ckpt)
    assert resumed.transformer.h.active_slots == [0, 1, 2]
    opt2, sched2, ctl2 = _run_setup(resumed, tmp_path)
    opt2.load_state_dict(opt_state)
    load_growth_state(ckpt, ctl2, sched2)
    resumed.train()
    after = [_step(resumed, opt2, sched2, ctl2, s) for s in range(10, 30)]
    assert after == reference[10:]


class _Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.data = torch.randint(0, 40, (n, 12), generator=g)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.data[i], "labels": self.data[i]}


def _probe(model: torch.nn.Module) -> torch.Tensor:
    return model(IDS, labels=IDS).loss  # type: ignore[no-any-return]


def test_a_tiny_trainer_run_grows_on_schedule(tmp_path: Path) -> None:
    model = _model()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        eval_strategy="steps",
        eval_steps=6,
        save_strategy="steps",
        save_steps=6,
        logging_steps=6,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    opt, sched = create_optimizer_and_scheduler(model, args)
    controller = GrowthController(
        model,
        opt,
        trigger=GrowthTrigger("schedule", schedule=(3, 8)),
        operator="copy",
        isolated_warmup_steps=2,
        rewarm_steps=2,
        probe=_probe,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Tokens(64),
        eval_dataset=_Tokens(8),
        optimizers=(opt, sched),
        callbacks=[AIetherCallback(controller)],
    )
    trainer.train()
    assert [e.step for e in controller.events] == [3, 8]
    assert model.transformer.h.active_slots == [0, 1, 2]
    for e in controller.events:
        assert e.probe_loss_after == pytest.approx(e.probe_loss_before, abs=1e-6)
    final = json.loads((tmp_path / "growth_state.json").read_text())
    assert [e["step"] for e in final["events"]] == [3, 8]
    at6 = json.loads((tmp_path / "checkpoint-6" / "growth_state.json").read_text())
    assert [e["step"] for e in at6["events"]] == [3]
    assert json.loads((tmp_path / "checkpoint-12" / "config.json").read_text())[
        "aiether_active_layers"
    ] == [0, 1, 2]


def test_the_callback_refuses_a_foreign_optimizer(tmp_path: Path) -> None:
    model = _model()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        report_to=[],
        use_cpu=True,
        per_device_train_batch_size=4,
        disable_tqdm=True,
    )
    opt, _ = create_optimizer_and_scheduler(model, args)
    controller = GrowthController(
        model, opt, trigger=GrowthTrigger("schedule", schedule=(1,)), operator="copy"
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=_Tokens(8), callbacks=[AIetherCallback(controller)]
    )
    with pytest.raises(ValueError, match="create_optimizer_and_scheduler"):
        trainer.train()
