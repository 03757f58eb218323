"""Checkpoints: safetensors round trip, Auto classes, and trust_remote_code without inl_llm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from _inl_hf_common import left_padded_batch, perturb, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from inl_llm.auto import register_auto_classes
from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.modeling_inl import INLForCausalLM, INLModel

_SRC = Path(__file__).resolve().parents[1] / "src"  # packages/inl-llm/src
_COPIED = (
    "configuration_inl.py",
    "modeling_inl.py",
    "inl_layer.py",
    "inl_controller.py",
    "inl_config.py",
    "functional.py",
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _saved(tmp_path: Path, **overrides: Any) -> tuple[INLForCausalLM, Path]:
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config(**overrides)).eval()
    perturb(model)  # every tensor differs from a fresh init, so a clobbering load would show
    path = tmp_path / "ckpt"
    model.save_pretrained(path)
    return model, path


@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_shared_controllers": False, "tie_word_embeddings": True, "inl_variant": "full"}],
    ids=["shared-untied", "per-layer-tied-full"],
)
def test_save_load_round_trip(tmp_path: Path, overrides: dict[str, Any]) -> None:
    model, path = _saved(tmp_path, **overrides)
    assert (path / "model.safetensors").exists()
    assert not list(path.glob("*.bin"))
    for name in _COPIED:
        assert (path / name).exists(), name
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_inl.INLLLMConfig",
        "AutoModelForCausalLM": "modeling_inl.INLForCausalLM",
    }
    assert config["model_type"] == "inl-llm"
    stored = load_file(path / "model.safetensors")
    # the shared controller is stored once
    shared = model.model.inl_controller
    n_shared = len(list(shared.parameters())) if shared is not None else 0
    assert sum(1 for k in stored if k.startswith("model.inl_controller.")) == n_shared
    assert not any(".inl._shared" in k or ".inl.shared" in k for k in stored)

    loaded = INLForCausalLM.from_pretrained(path).eval()
    for (name, a), (name_b, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == name_b
        assert torch.equal(a, b), name
    ids, mask = left_padded_batch([6, 3], seed=21)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits
        )
    if model.config.use_shared_controllers:
        base = loaded.model
        assert all(layer.inl.shared_controller is base.inl_controller for layer in base.layers)


def test_from_pretrained_initialises_fresh_inl_like_a_new_model(tmp_path: Path) -> None:
    """Missing keys are initialised by _init_weights: the INL layers get their own init (zero
    gate, μ = 0) instead of transformers' N(0, 0.02)."""
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config()).eval()
    path = tmp_path / "ckpt"
    model.save_pretrained(path)
    stored = load_file(path / "model.safetensors")
    partial = {k: v for k, v in stored.items() if ".inl" not in k}  # INL layers + shared controller
    assert len(partial) < len(stored)
    save_file(partial, str(path / "model.safetensors"), metadata={"format": "pt"})
    loaded = INLForCausalLM.from_pretrained(path).eval()
    for layer in loaded.model.layers:
        assert torch.equal(layer.inl.gate, torch.zeros_like(layer.inl.gate))
        assert torch.equal(layer.inl.film_scale, torch.ones_like(layer.inl.film_scale))
        assert torch.equal(layer.inl.mu_offsets, torch.zeros_like(layer.inl.mu_offsets))
    # the controller's output bias encodes α₀, p₀, g₀ (not transformers' zero bias)
    shared, fresh = loaded.model.inl_controller, model.model.inl_controller
    torch.testing.assert_close(shared.out.bias, fresh.out.bias)
    assert float(shared.out.bias.detach().abs().max()) > 0.05
    ids, _ = left_padded_batch([5], seed=22)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_register_auto_classes(tmp_path: Path) -> None:
    register_auto_classes()
    register_auto_classes()  # idempotent
    fields = {k: v for k, v in tiny_config().to_diff_dict().items() if k != "model_type"}
    config = AutoConfig.for_model("inl-llm", **fields)
    assert isinstance(config, INLLLMConfig)
    assert isinstance(AutoModel.from_config(config), INLModel)
    assert isinstance(AutoModelForCausalLM.from_config(config), INLForCausalLM)
    _, path = _saved(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert type(loaded) is INLForCausalLM


def test_bare_model_save_writes_its_auto_map(tmp_path: Path) -> None:
    torch.manual_seed(0)
    INLModel(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_inl.INLModel"


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    src, ckpt, ids_file, out_file = sys.argv[1:5]
    # Drop the workspace's editable install (a .pth entry for packages/*/src) from the path.
    packages = src.rsplit("/packages/", 1)[0] + "/packages/"
    sys.path[:] = [p for p in sys.path if not p.startswith(packages)]
    try:
        import inl_llm  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("inl_llm is importable in the clean process")
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("inl_llm"), type(model).__module__
    batch = load_file(ids_file)
    with torch.no_grad():
        out = model(batch["ids"], attention_mask=batch["mask"])
        greedy = model.generate(
            batch["ids"], attention_mask=batch["mask"], max_new_tokens=4, do_sample=False,
            eos_token_id=None, pad_token_id=0,
        )
    save_file({"logits": out.logits.contiguous(), "greedy": greedy}, out_file)
    print(type(model).__module__, type(model).__name__, "inl_llm importable: no")
    """
)


def test_trust_remote_code_without_inl_llm(tmp_path: Path) -> None:
    model, path = _saved(tmp_path)
    ids, mask = left_padded_batch([6, 3], seed=23)
    save_file({"ids": ids, "mask": mask}, str(tmp_path / "batch.safetensors"))
    out_file = tmp_path / "out.safetensors"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [
            sys.executable,
            "-I",  # isolated: no PYTHONPATH, no user site, not the current directory
            "-c",
            _REMOTE_SCRIPT,
            str(_SRC),
            str(path),
            str(tmp_path / "batch.safetensors"),
            str(out_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "inl_llm importable: no" in result.stdout
    assert "transformers_modules" in result.stdout
    remote = load_file(out_file)
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(ids, attention_mask=mask).logits)
        local = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=4,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert torch.equal(remote["greedy"], local)
