"""`examples/all_five.py`, what `make demo` runs, at a tiny size: every phase, every library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples import all_five


def test_the_all_five_example_runs_every_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = all_five.main(
        ["--steps", "24", "--finetune-steps", "6", "--no-progress", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    for lib in ("aion-torch", "inl-llm", "auon", "aiether", "athena"):
        assert f"{lib} 0." in out, lib  # each library says its version as it is used
    assert summary["versions"].keys() == {"aion-torch", "inl-llm", "auon", "aiether", "athena"}
    events = summary["growth_events"]
    assert [e["step"] for e in events] == [6, 12]  # grown from 1 to 3 blocks at 1/4 and 1/2
    assert [e["active_layers"] for e in events] == [[1, 2], [0, 1, 2]]
    for e in events:  # function-preserving insertion
        assert e["probe_loss_after"] == e["probe_loss_before"]
    assert summary["reload_max_abs_diff"] == 0.0  # the PEFT-layout adapter reloads exactly
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["growth_events"] == events
    for key in ("phase1_val_bits_per_byte", "phase2_val_bits_per_byte_after"):
        assert 0.0 < summary[key] < 8.5, key  # finite, at most a little above uniform (8 bits)
