"""`athena-train --config run.yaml`: end to end on a tiny random BERT and GPT-2 saved locally,
the run-file schema and its errors, the data readers, AutoRank and freezing through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("yaml")
pytest.importorskip("tqdm")

from _athena_train_fixture import (
    sentiment_rows,
    tiny_bert_dir,
    tiny_gpt2_dir,
    write_csv,
    write_jsonl,
    write_run,
)

from athena import AthenaModel, PolyAdapter
from athena.train import evaluate, main, train
from athena.train_config import ConfigError, load_config, parse_config
from athena.train_data import DataError, LabelMap, collate, read_examples
from athena.train_model import load_model, load_tokenizer, mean_pool


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the runs below set training.num_threads: 1


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2_dir(tmp_path_factory.mktemp("models"))


def _classification_run(tmp_path: Path, bert: Path, **sections: Any) -> dict[str, Any]:
    train_file = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(96, seed=1))
    val_file = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(32, seed=2))
    run: dict[str, Any] = {
        "model": {"path": str(bert), "task": "classification", "num_labels": 2, "pooling": "mean"},
        "data": {"train": train_file.name, "validation": val_file.name, "max_length": 16},
        "adapter": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]},
        "training": {"epochs": 5, "batch_size": 8, "lr": 1.0e-2, "seed": 0, "num_threads": 1},
        "output_dir": "out",
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(run.get(name), dict):
            run[name] = {**run[name], **value}
        else:
            run[name] = value
    return run


def _run(tmp_path: Path, run: dict[str, Any], *extra: str) -> int:
    config = write_run(tmp_path / "run.yaml", run)
    return main(["--config", str(config), "--no-progress", *extra])


def _metrics(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "out" / "metrics.json").read_text())


def _reload(bert: Path, out: Path, run_config: Path) -> tuple[AthenaModel, Any, Any]:
    """The base model rebuilt from the run file's model section with the saved adapter."""
    cfg = load_config(run_config)
    tokenizer = load_tokenizer(cfg.model)
    base = load_model(cfg.model, 2, tokenizer.pad_token_id)
    return AthenaModel.from_pretrained(base, out), tokenizer, cfg


# -- end to end -----------------------------------------------------------------------------------


def test_classification_learns_saves_and_reloads(tmp_path: Path, bert: Path) -> None:
    assert _run(tmp_path, _classification_run(tmp_path, bert)) == 0
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["task_type"] == "SEQ_CLS"
    assert "classifier" in saved["modules_to_save"]
    metrics = _metrics(tmp_path)
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert len(losses) == 5
    assert losses[-1] < 0.5 * losses[0], losses
    assert metrics["epochs"][-1]["eval_accuracy"] >= 0.9
    assert metrics["trainable_params"] > 0 and metrics["argv"][0] == "athena-train"
    assert metrics["head"] == "PooledClassifier(mean)"

    # the reloaded adapter reproduces the last evaluation exactly
    model, tokenizer, cfg = _reload(bert, out, tmp_path / "run.yaml")
    from athena.train_data import encode, make_loader

    texts, raw = read_examples(cfg.data.validation, None, "text", "label")
    labels = LabelMap(None, 2).encode(raw, "val")
    data = encode(tokenizer, texts, max_length=16, task="classification", labels=labels)
    loader = make_loader(
        data, batch_size=7, pad_token_id=tokenizer.pad_token_id, task="classification",
        shuffle=False, seed=0,
    )  # fmt: skip
    again = evaluate(model, loader, "classification", torch.device("cpu"))
    last = metrics["epochs"][-1]
    assert again["eval_accuracy"] == last["eval_accuracy"]
    assert again["eval_loss"] == pytest.approx(last["eval_loss"], rel=1e-5)


def test_trained_and_reloaded_logits_match_csv_named_labels_model_head(
    tmp_path: Path, bert: Path
) -> None:
    # CSV, class names ("neg"/"pos"), the model's own head (pooling unset), num_labels inferred
    write_csv(tmp_path / "train.csv", sentiment_rows(48, seed=3, names=True))
    run = _classification_run(
        tmp_path,
        bert,
        model={"num_labels": None, "pooling": None},  # null in YAML: the defaults
        data={"train": "train.csv", "validation": None},
        training={"epochs": 2, "batch_size": 8, "seed": 3},
    )
    cfg = load_config(write_run(tmp_path / "run.yaml", run))
    result = train(cfg, progress=False)
    assert result.label_map is not None and result.label_map.names == ("neg", "pos")
    assert result.metrics["head"] == "AutoModelForSequenceClassification"
    assert result.metrics["label_names"] == ["neg", "pos"]
    assert "eval_loss" not in result.metrics["epochs"][-1]

    tokenizer = result.tokenizer
    batch = collate(
        [tokenizer(t) for t in ["the good film", "a bad very bad story and", "it"]],
        pad_token_id=tokenizer.pad_token_id,
        task="classification",
    )
    result.model.eval()
    with torch.no_grad():
        trained = result.model(**batch).logits
    reloaded, _, _ = _reload(bert, tmp_path / "out", tmp_path / "run.yaml")
    with torch.no_grad():
        again = reloaded(**batch).logits
    torch.testing.assert_close(again, trained)
    # and differs from the untouched base model (the adapter and head did train)
    base = load_model(cfg.model, 2, tokenizer.pad_token_id).eval()
    with torch.no_grad():
        assert not torch.allclose(base(**batch).logits, trained)


def test_same_seed_same_run(tmp_path: Path, bert: Path) -> None:
    run = _classification_run(tmp_path, bert, training={"epochs": 2, "max_steps": 8})
    a = train(
        load_config(write_run(tmp_path / "a.yaml", {**run, "output_dir": "a"})), progress=False
    )
    b = train(
        load_config(write_run(tmp_path / "b.yaml", {**run, "output_dir": "b"})), progress=False
    )
    assert [e["train_loss"] for e in a.metrics["epochs"]] == [
        e["train_loss"] for e in b.metrics["epochs"]
    ]
    assert a.metrics["total_steps"] == 8 and a.metrics["epochs"][-1]["step"] == 8
    for (name, p), (_, q) in zip(
        a.model.named_parameters(), b.model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_causal_lm_trains_and_saves(tmp_path: Path, gpt2: Path) -> None:
    rows = [{"text": r["text"]} for r in sentiment_rows(40, seed=4)]
    write_jsonl(tmp_path / "lm.jsonl", rows)
    write_jsonl(tmp_path / "lm_val.jsonl", rows[:8])
    run = {
        "model": {"path": str(gpt2), "task": "causal_lm"},
        "data": {"train": "lm.jsonl", "validation": "lm_val.jsonl", "max_length": 12},
        "adapter": {"r": 4, "target_modules": ["c_attn"], "fan_in_fan_out": True},
        "training": {"epochs": 3, "batch_size": 8, "lr": 1.0e-2, "num_threads": 1},
        "output_dir": "out",
    }
    assert _run(tmp_path, run) == 0
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["task_type"] == "CAUSAL_LM" and saved["target_modules"] == ["c_attn"]
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" in keys
    metrics = _metrics(tmp_path)
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]
    last = metrics["epochs"][-1]
    assert last["eval_perplexity"] == pytest.approx(float(torch.tensor(last["eval_loss"]).exp()))


def test_moe_adapter_adds_the_balance_loss(tmp_path: Path, bert: Path) -> None:
    run = _classification_run(
        tmp_path,
        bert,
        adapter={"use_moe": True, "num_experts": 2, "top_k": 1, "aux_loss_coef": 0.05},
        training={"epochs": 1, "max_steps": 3},
    )
    assert _run(tmp_path, run) == 0
    epoch = _metrics(tmp_path)["epochs"][0]
    assert epoch["train_aux_loss"] > 0  # E·Σ f·P ≥ 1 per layer, times the coefficient
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "ATHENA_POLY"


# -- the command line and the run file --------------------------------------------------------------


def test_dry_run_checks_and_writes_nothing(
    tmp_path: Path, bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, _classification_run(tmp_path, bert), "--dry-run") == 0
    assert not (tmp_path / "out").exists()
    assert "dry run: configuration OK" in capsys.readouterr().out
    # a target module the model does not have is found by the dry run
    bad = _classification_run(tmp_path, bert, adapter={"target_modules": ["qurey"]})
    assert _run(tmp_path, bad, "--dry-run") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("athena-train: error: adapter:") and "qurey" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"training": {"learning_rate": 1e-3}}, "'training.learning_rate' (did you mean 'lr'?)"),
        ({"training": {"num_epochs": 2}}, "'training.num_epochs' (did you mean 'epochs'?)"),
        ({"adapter": {"rank": 8}}, "'adapter.rank'"),
        ({"adapter": {"task_type": "SEQ_CLS"}}, "adapter.task_type is set by athena-train"),
        ({"adapter": {"top_k": 5, "use_moe": True}}, "adapter: top_k must be in"),
        ({"model": {"path": "m", "task": "seq2seq"}}, "model.task must be one of"),
        ({"model": {"task": "classification"}}, "missing required key 'model.path'"),
        ({"model": {"path": "m", "pooling": "max"}}, "model.pooling must be one of"),
        ({"data": {"train": "t.jsonl", "formatt": "csv"}}, "'data.formatt'"),
        ({"training": {"lr": -1}}, "training.lr must be a number > 0"),
        ({"training": {"batch_size": "big"}}, "training.batch_size must be an integer"),
        ({"freezing": {"window": 3}}, "'freezing.window' (did you mean 'window_size'?)"),
        ({"autorank": {"budget": 8}}, "'autorank.budget'"),
        ({"output_dir": None}, "missing required key 'output_dir'"),
    ],
)
def test_bad_run_file_exits_2_naming_the_key(
    tmp_path: Path, change: dict[str, Any], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run: dict[str, Any] = {
        "model": {"path": str(tmp_path / "no-model")},
        "data": {"train": "t.jsonl"},
        "output_dir": "out",
    }
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(run.get(key), dict) and key != "model":
            run[key] = {**run[key], **value}
        else:
            run[key] = value
    assert _run(tmp_path, run) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"path": "m"}, "data": {"train": "t"}, "output_dir": "o", "x": 1})
    assert "valid keys at the top level: adapter, autorank, data, freezing, model" in str(
        info.value
    )


def test_yaml_number_strings_and_relative_paths(tmp_path: Path) -> None:
    run = {
        "model": {"path": "models/m"},
        "data": {"train": "d/t.jsonl"},
        "training": {"lr": "1e-3"},  # YAML 1.1 reads 1e-3 (no dot) as a string
        "output_dir": "o",
    }
    config_file = tmp_path / "sub" / "run.yaml"
    config_file.parent.mkdir()
    config_file.write_text(
        "model: {path: models/m}\ndata: {train: d/t.jsonl}\ntraining: {lr: 1e-3}\noutput_dir: o\n"
    )
    cfg = load_config(config_file)
    assert cfg.training.lr == 1e-3
    assert cfg.model.path == str(tmp_path / "sub" / "models" / "m")
    assert cfg.output_dir == str(tmp_path / "sub" / "o")
    assert parse_config(run).adapter.task_type == "SEQ_CLS"


def test_missing_config_file_and_bad_data(
    tmp_path: Path, bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "--config: no such file" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"text": "good", "label": 1}\n{"text": oops}\n')
    run = _classification_run(tmp_path, bert, data={"train": "bad.jsonl", "validation": None})
    assert _run(tmp_path, run) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: not valid JSON" in err


def test_argparse_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "--config" in capsys.readouterr().err


def test_missing_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert main(["--config", str(tmp_path / "run.yaml")]) == 1
    err = capsys.readouterr().err
    assert "pyyaml" in err and "pip install athena[train]" in err


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "athena.train", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout and "--dry-run" in done.stdout


# -- data -----------------------------------------------------------------------------------------


def test_readers_and_label_maps(tmp_path: Path) -> None:
    csv_file = write_csv(
        tmp_path / "d.csv", [{"text": "a b", "label": "2"}, {"text": "c", "label": "0"}]
    )
    texts, raw = read_examples(csv_file, None, "text", "label")
    assert texts == ["a b", "c"]
    labels = LabelMap.from_labels(raw, None, "d.csv")
    assert labels.names is None and labels.num_labels == 3 and labels.encode(raw, "d") == [2, 0]
    named = LabelMap.from_labels(["pos", "neg", "pos"], None, "x")
    assert named.names == ("neg", "pos") and named.encode(["pos"], "x") == [1]
    with pytest.raises(DataError, match="does not occur in the training data"):
        named.encode(["neutral"], "val")
    with pytest.raises(DataError, match=r"does not fit model\.num_labels=2"):
        LabelMap.from_labels([0, 2], 2, "x")
    with pytest.raises(DataError, match="at least 2 classes"):
        LabelMap.from_labels(["a", "a"], None, "x")
    missing = write_jsonl(tmp_path / "m.jsonl", [{"txt": "a", "label": 0}])
    with pytest.raises(DataError, match=r"m\.jsonl:1: no field 'text'"):
        read_examples(missing, None, "text", "label")
    (tmp_path / "d.txt").write_text("x\n")
    with pytest.raises(DataError, match=r"set data\.format"):
        read_examples(tmp_path / "d.txt", None, "text", None)


def test_collate_pads_right_and_masks_causal_labels() -> None:
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]},
        {"input_ids": [8], "attention_mask": [1]},
    ]
    batch = collate(features, pad_token_id=0, task="causal_lm")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    cls = collate(
        [{"input_ids": [1, 2], "labels": [1]}, {"input_ids": [3], "labels": [0]}],
        pad_token_id=9,
        task="classification",
    )
    assert cls["labels"].tolist() == [1, 0] and cls["input_ids"].tolist() == [[1, 2], [3, 9]]


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(
        mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]])
    )


# -- freezing and AutoRank through the CLI -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["requires_grad", "lr_zero"])
def test_progressive_freezing_through_the_cli(tmp_path: Path, bert: Path, mode: str) -> None:
    pytest.importorskip("athena.freezing")
    freezing = {
        "min_steps": 0,
        "window_size": 1,
        "rel_threshold": 1.0e6,  # every block counts as converged: the front block freezes
        "unfreeze_threshold": float("inf"),
        "mode": mode,
    }
    run = _classification_run(tmp_path, bert, freezing=freezing, training={"epochs": 1})
    assert _run(tmp_path, run) == 0
    info = _metrics(tmp_path)["freezing"]
    assert info["frozen_prefix_depth"] == 1  # the last of the 2 blocks never freezes
    assert info["events"][0]["kind"] == "freeze"
    assert info["events"][0]["name"].endswith("layer.0")


def test_freezing_option_errors_are_config_errors(
    tmp_path: Path, bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("athena.freezing")
    run = _classification_run(tmp_path, bert, freezing={"ema": 1.5})
    assert _run(tmp_path, run, "--dry-run") == 2
    assert "freezing: ema must be in [0, 1)" in capsys.readouterr().err


def _fake_autorank(calls: dict[str, Any]) -> types.ModuleType:
    """A stand-in `athena.autorank` with the spec's API that records how it is called."""

    class ProxyFineTune:
        def __init__(
            self, train_loader: Any, val_loader: Any, steps: int, lr: float, seed: int, **kw: Any
        ) -> None:
            calls["proxy"] = (steps, lr, seed)
            calls["proxy_kwargs"] = kw
            calls["batch"] = next(iter(train_loader))
            calls["val_batches"] = len(list(val_loader))

    class AutoRank:
        def __init__(self, model: torch.nn.Module, **kwargs: Any) -> None:
            calls["adapted"] = any(isinstance(m, PolyAdapter) for m in model.modules())
            calls["kwargs"] = kwargs

        def search(self) -> Any:
            calls["searched"] = True
            return types.SimpleNamespace(
                rank_map={}, rank_pattern={"query": 2}, best_value=0.25, trials=[1, 2, 3],
                compute_steps=30, budget_used=20,
            )  # fmt: skip

        def apply(self, result: Any, config: Any) -> Any:
            return config.replace(rank_pattern=result.rank_pattern)

    module = types.ModuleType("athena.autorank")
    module.AutoRank = AutoRank  # type: ignore[attr-defined]
    module.ProxyFineTune = ProxyFineTune  # type: ignore[attr-defined]
    return module


def test_autorank_section_runs_the_search_and_applies_the_ranks(
    tmp_path: Path, bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "athena.autorank", _fake_autorank(calls))
    autorank = {"rank_budget": 24, "rank_candidates": [0, 2, 4], "num_trials": 5, "proxy_steps": 7}
    run = _classification_run(tmp_path, bert, autorank=autorank, training={"epochs": 1})
    assert _run(tmp_path, run) == 0
    assert calls["searched"] and calls["adapted"] is False  # searched on the un-adapted model
    assert calls["proxy"] == (7, 1e-2, 0) and calls["val_batches"] == 4
    assert set(calls["batch"]) >= {"input_ids", "attention_mask", "labels"}
    kwargs = calls["kwargs"]
    assert kwargs["rank_budget"] == 24 and kwargs["rank_candidates"] == (0, 2, 4)
    assert kwargs["num_trials"] == 5 and kwargs["base_config"].task_type == "SEQ_CLS"
    assert kwargs["metric"] == "loss" and kwargs["mode"] == "min"
    assert calls["proxy_kwargs"] == {"prune": False}
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["rank_pattern"] == {"query": 2}
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    prefix = "base_model.model.bert.encoder.layer.0.attention.self"
    assert tensors[f"{prefix}.query.lora_A.weight"].shape == (2, 32)
    assert tensors[f"{prefix}.value.lora_A.weight"].shape == (8, 32)
    assert _metrics(tmp_path)["autorank"]["best_value"] == 0.25


def test_real_autorank_through_the_cli(tmp_path: Path, bert: Path) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("athena.autorank")
    autorank = {
        "rank_budget": 12,
        "rank_candidates": [0, 2, 4],
        "num_trials": 4,
        "n_startup_trials": 2,
        "patience": 2,
        "proxy_steps": 3,
    }
    run = _classification_run(tmp_path, bert, autorank=autorank, training={"epochs": 1})
    assert _run(tmp_path, run) == 0
    info = _metrics(tmp_path)["autorank"]
    rank_map = info["rank_map"]
    assert len(rank_map) == 4 and sum(rank_map.values()) <= 12  # q, v in 2 layers; the budget
    assert info["num_trials"] >= 1 and info["compute_steps"] > 0
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    for module, rank in rank_map.items():
        key = f"base_model.model.{module}.lora_A.weight"
        if rank == 0:
            assert key not in tensors
        else:
            assert tensors[key].shape[0] == rank, module


def test_autorank_dry_run_does_not_search(
    tmp_path: Path, bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "athena.autorank", _fake_autorank(calls))
    run = _classification_run(tmp_path, bert, autorank={"rank_budget": 8})
    assert _run(tmp_path, run, "--dry-run") == 0
    assert "kwargs" in calls and "searched" not in calls


def test_autorank_missing_module_is_a_clear_error(
    tmp_path: Path, bert: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "athena.autorank", None)
    run = _classification_run(tmp_path, bert, autorank={"rank_budget": 8})
    assert _run(tmp_path, run, "--dry-run") == 2
    assert "autorank: this installation of athena has no athena.autorank" in capsys.readouterr().err
