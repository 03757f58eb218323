"""aiether-train: every original flag is accepted, a 20-step run grows on schedule with equal
probe losses, and its output loads as a transformers model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aiether.train import build_parser, main

ORIGINAL_FLAGS = [
    "output_dir",
    "num_epochs",
    "batch_size",
    "lr",
    "warmup_steps",
    "weight_decay",
    "block_size",
    "logging_interval",
    "eval_interval",
    "evals_per_epoch",
    "save_interval",
    "new_layer_strategy",
    "n_layer",
    "n_head",
    "n_embd",
    "dropout",
    "bias",
    "dataset_path",
    "pg_patience",
    "pg_threshold",
    "pg_warmup_steps",
    "pg_history_window",
    "pg_collect_interval",
    "beta0",
    "gamma0",
    "eta0",
    "k_subspace",
    "ell_orth",
    "tau_crit",
    "kappa_crit",
    "wandb_project",
    "wandb_name",
    "wandb_tags",
    "wandb_group",
]
NEW_FLAGS = [
    "text_file",
    "operator",
    "preserve",
    "trigger",
    "schedule",
    "initial_layers",
    "max_layers",
    "max_steps",
    "seed",
    "report_to",
]


def test_help_lists_every_original_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ORIGINAL_FLAGS + NEW_FLAGS:
        assert f"--{flag}" in text, flag
    defaults = build_parser().parse_args([])
    assert (defaults.lr, defaults.batch_size, defaults.n_layer, defaults.n_embd) == (
        5e-4,
        8,
        6,
        384,
    )
    assert (defaults.pg_patience, defaults.pg_warmup_steps, defaults.pg_history_window) == (
        3,
        400,
        15,
    )
    assert defaults.output_dir == "./HF_model_output"


TINY = [
    "--n_embd",
    "16",
    "--n_head",
    "2",
    "--block_size",
    "32",
    "--batch_size",
    "4",
    "--dropout",
    "0",
]


def test_a_twenty_step_run_grows_on_schedule(tmp_path: Path) -> None:
    out = tmp_path / "grow"
    code = main(
        [
            *TINY,
            "--initial_layers",
            "1",
            "--max_layers",
            "3",
            "--trigger",
            "schedule",
            "--schedule",
            "5,12",
            "--max_steps",
            "20",
            "--pg_collect_interval",
            "2",
            "--eval_interval",
            "10",
            "--save_interval",
            "10",
            "--logging_interval",
            "10",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 0
    state = json.loads((out / "growth_state.json").read_text())
    events = state["events"]
    assert [e["step"] for e in events] == [5, 12]
    assert [e["slot"] for e in events] == [1, 0]
    for e in events:
        assert e["operator"] == "geometric"
        assert e["probe_loss_after"] == e["probe_loss_before"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["active_layers"] == [0, 1, 2]
    assert (out / "layers" / "layer_001" / "init.safetensors").exists()
    assert (out / "checkpoint-10" / "growth_state.json").exists()
    transformers = pytest.importorskip("transformers")
    del transformers
    from aiether.hf import AIetherGPTForCausalLM

    model = AIetherGPTForCausalLM.from_pretrained(out).eval()
    assert model.transformer.h.active_slots == [0, 1, 2]
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 256)


def test_bad_depths_exit_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        main([*TINY, "--initial_layers", "3", "--max_layers", "3", "--output_dir", str(tmp_path)])
        == 2
    )
    assert "--initial_layers" in capsys.readouterr().err
