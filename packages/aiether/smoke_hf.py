"""Smoke test of `aiether[hf]` (run by scripts/smoke.py in a fresh venv with that extra): a tiny
GPT-2 grows inside `transformers.Trainer` with the callback, keeps its function at each growth,
and generates after `export_compact`."""

import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import aiether
from aiether import GrowthController, GrowthTrigger, export_compact, make_growable
from aiether.hf import AIetherCallback, create_optimizer_and_scheduler

assert "site-packages" in aiether.__file__, aiether.__file__
torch.manual_seed(0)
config = GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=40, bos_token_id=0, eos_token_id=0)
model = GPT2LMHeadModel(config)
make_growable(model, initial_active=1)
ids = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(1))


class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = torch.arange(12) * (i % 3 + 1) % 40
        return {"input_ids": row, "labels": row}


with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(
        output_dir=out,
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    opt, sched = create_optimizer_and_scheduler(model, args)
    controller = GrowthController(
        model,
        opt,
        trigger=GrowthTrigger("schedule", schedule=(1, 3)),
        operator="copy",
        probe=lambda m: m(ids, labels=ids).loss,
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=Tokens(),
        optimizers=(opt, sched),
        callbacks=[AIetherCallback(controller)],
    ).train()
assert [e.step for e in controller.events] == [1, 3], controller.events
for e in controller.events:
    assert e.probe_loss_after == e.probe_loss_before, e
compact = export_compact(model.eval())
assert compact.config.n_layer == 3
out = compact.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
assert out.shape == (2, 11), out.shape
print(f"aiether {aiether.__version__} [hf]: Trainer growth and export ok")
