"""``inl-llm-train``: a tiny run end to end, the validation metric, resume = uninterrupted, errors."""

import importlib.metadata
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer

from inl_llm.corpus import embedded_splits, text_file_splits, validation_windows
from inl_llm.modeling_inl import INLForCausalLM
from inl_llm.train import _lr_at, main
from inl_llm.training_state import load_training_state

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny overrides of the tiny preset: a run of a few steps takes well under a second of compute
# (one thread: at these sizes more threads only add synchronisation, badly so on a busy machine).
TINY = [
    "--d-model", "32", "--num-layers", "2", "--num-heads", "2", "--num-iterations", "2",
    "--feedforward-dim", "64", "--vocab-size", "320", "--seq-len", "16", "--batch-size", "4",
    "--val-max-tokens", "512", "--no-progress", "--device", "cpu", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(embedded_splits().train[:40_000], encoding="utf-8")
    return path


def _run(*args: str) -> int:
    return main([*TINY, *args])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _log(folder: Path) -> dict[str, object]:
    log: dict[str, object] = json.loads((folder / "training_log.json").read_text())
    return log


@pytest.fixture(scope="module")
def runs(text_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A: 6 steps straight; B: the same with a checkpoint at 3; C: B's checkpoint resumed to 6."""
    root = tmp_path_factory.mktemp("runs")
    # Dropout on, so resuming must also restore the global generator's state.
    common = ["--text-file", str(text_file), "--steps", "6", "--eval-interval", "3"]
    common += ["--dropout", "0.1"]
    assert _run(*common, "--output-dir", str(root / "a")) == 0
    assert _run(*common, "--output-dir", str(root / "b"), "--save-interval", "3") == 0
    resume = ["--resume", str(root / "b" / "checkpoint-3"), "--steps", "6"]
    assert main([*resume, "--output-dir", str(root / "c"), "--no-progress"]) == 0
    return {"a": root / "a", "b": root / "b", "c": root / "c"}


def test_run_writes_a_complete_output_folder(runs: dict[str, Path]) -> None:
    files = {p.name for p in runs["a"].iterdir()}
    expected = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "training_state.json",
        "training_state.safetensors",
        "training_log.json",
        "modeling_inl.py",
        "configuration_inl.py",
    }
    assert expected <= files
    # Nothing that would need unpickling.
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    config = json.loads((runs["a"] / "config.json").read_text())
    assert config["model_type"] == "inl-llm"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_inl.INLForCausalLM"
    assert (config["d_model"], config["num_layers"], config["num_iterations_per_layer"]) == (
        32,
        2,
        2,
    )
    assert config["vocab_size"] == 320
    assert config["bos_token_id"] == config["eos_token_id"] == config["pad_token_id"] == 0
    log = _log(runs["a"])
    history = log["history"]
    assert isinstance(history, list) and [h["step"] for h in history] == [3, 6]
    final = log["final"]
    assert isinstance(final, dict)
    assert final["steps"] == 6 and final["tokens_seen"] == 6 * 4 * 16
    assert final["tokens_per_second"] > 0 and final["wall_seconds"] > 0
    assert math.isfinite(final["val_bits_per_byte"])
    assert final["val_perplexity"] == pytest.approx(math.exp(final["val_loss"]))
    assert final["val_loss"] < math.log(320)  # it learned something in 6 steps
    assert load_training_state(runs["a"]).step == 6


def test_validation_metric_equals_an_independent_recomputation(
    runs: dict[str, Path], text_file: Path
) -> None:
    """val_loss is the mean next-token cross-entropy over the validation windows; bits/byte is
    val_loss / ln 2 / (validation UTF-8 bytes / validation tokens)."""
    folder = runs["a"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = INLForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    val_text = text_file_splits(text_file).val
    val_ids = torch.tensor(tokenizer(val_text, verbose=False)["input_ids"])
    windows = validation_windows(val_ids, 16, 512)
    with torch.no_grad():
        logits = model(input_ids=windows).logits
    nats = F.cross_entropy(logits[:, :-1].reshape(-1, 320).double(), windows[:, 1:].reshape(-1))
    final = _log(folder)["final"]
    assert isinstance(final, dict)
    assert final["val_loss"] == pytest.approx(float(nats), rel=1e-5)
    bytes_per_token = len(val_text.encode("utf-8")) / val_ids.numel()
    assert final["val_bytes_per_token"] == pytest.approx(bytes_per_token)
    assert final["val_bits_per_byte"] == pytest.approx(
        float(nats) / math.log(2) / bytes_per_token, rel=1e-5
    )


def test_resume_equals_the_uninterrupted_run(runs: dict[str, Path]) -> None:
    a, b, c = (_weights(runs[k]) for k in "abc")
    checkpoint = _weights(runs["b"] / "checkpoint-3")
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)  # saving changes nothing
        torch.testing.assert_close(c[name], a[name], rtol=0, atol=0)  # resume = uninterrupted
    assert any(not torch.equal(checkpoint[n], a[n]) for n in a)  # steps 4-6 did train
    state_a, state_c = load_training_state(runs["a"]), load_training_state(runs["c"])
    assert state_c.step == 6
    assert torch.equal(state_a.rng_torch, state_c.rng_torch)  # dropout drew the same numbers
    assert torch.equal(state_a.rng_batches, state_c.rng_batches)
    for index, entries in state_a.optimizer["state"].items():
        for key, value in entries.items():
            torch.testing.assert_close(
                state_c.optimizer["state"][index][key], value, rtol=0, atol=0
            )
    history_c = _log(runs["c"])["history"]
    history_a = _log(runs["a"])["history"]
    assert isinstance(history_c, list) and isinstance(history_a, list)
    assert [h["step"] for h in history_c] == [3, 6]
    assert history_c[-1]["val_loss"] == history_a[-1]["val_loss"]
    final_c = _log(runs["c"])["final"]
    assert isinstance(final_c, dict) and final_c["resumed_from_step"] == 3


def test_the_seed_and_the_config_overrides_reach_the_model(text_file: Path, tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        common = ["--text-file", str(text_file), "--steps", "2", "--seed", str(seed)]
        overrides = ["--config", "use_adaptive_stopping=false", "--config", "norm=layernorm"]
        assert _run(*common, *overrides, "--output-dir", str(tmp_path / name)) == 0
        return _weights(tmp_path / name)

    w1, w1_again, w2 = run("seed1", 1), run("seed1-again", 1), run("seed2", 2)
    config = json.loads((tmp_path / "seed1" / "config.json").read_text())
    assert config["use_adaptive_stopping"] is False and config["norm"] == "layernorm"
    assert any(name.endswith("bias") for name in w1)  # LayerNorm has biases, RMSNorm none
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[n], w1_again[n]) for n in w1)
    assert any(not torch.equal(w1[n], w2[n]) for n in w1)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    lrs = [_lr_at(s, base=1.0, warmup=4, total=20, ratio=0.1) for s in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[20] == pytest.approx(0.1)
    assert all(x >= y for x, y in itertools.pairwise(lrs[4:]))
    assert lrs[12] == pytest.approx(0.1 + 0.9 * 0.5)  # the cosine's midpoint
    assert _lr_at(0, base=2.0, warmup=0, total=10, ratio=0.0) == 2.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--preset", "huge"], "--preset"),
        (["--steps", "0"], "--steps"),
        (["--text-file", "/nonexistent/corpus.txt"], "--text-file"),
        (["--device", "tpu"], "--device"),
        (["--dtype", "int8"], "--dtype"),
        (["--config", "no_such_field=1"], "--config"),
        (["--config", "vocab_size=9"], "--config"),
        (["--lr", "-1"], "--lr"),
        (["--num-heads", "3"], "divisible"),
        (["--resume", "/nonexistent/run"], "resume"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    args: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(*args, "--output-dir", str(tmp_path / "out")) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resume_refuses_a_different_run_argument(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(runs["b"] / "checkpoint-3")
    out = ["--output-dir", str(tmp_path / "x"), "--no-progress"]
    assert main(["--resume", checkpoint, "--lr", "0.1", "--steps", "6", *out]) == 2
    assert "--lr" in capsys.readouterr().err
    assert main(["--resume", checkpoint, "--steps", "3", *out]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_console_script_and_module_entry_points() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [e.value for e in scripts if e.name == "inl-llm-train"] == ["inl_llm.train:main"]
    result = subprocess.run(
        [sys.executable, "-m", "inl_llm.train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--preset" in result.stdout and "--resume" in result.stdout
