"""PEFT is the oracle: LoRA-only and IA³-only PolyAdapters compute what PEFT's LoRA and IA³ compute
(same weights → same outputs, and the same losses over AdamW steps), and checkpoints cross-load
between the two libraries with identical keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from _athena_tiny import batch, tiny_bert, twin
from safetensors.torch import load_file

from athena import AthenaModel, PolyAdapterConfig, get_athena_model

peft = pytest.importorskip("peft")

LORA_TARGETS = ["query", "value"]
IA3_TARGETS = ["key", "value", "output.dense"]


def _peft_lora(model: Any, use_rslora: bool) -> Any:
    config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=LORA_TARGETS,
        use_rslora=use_rslora,
        modules_to_save=["classifier"],
        init_lora_weights=False,  # B ≠ 0, so the adapter contributes from step 0
    )
    return peft.get_peft_model(model, config)


def _peft_ia3(model: Any, feedforward: list[str]) -> Any:
    config = peft.IA3Config(target_modules=IA3_TARGETS, feedforward_modules=feedforward)
    return peft.get_peft_model(model, config)


def _copy_adapter(src: Any, dst: AthenaModel) -> None:
    """Copy every tensor of the PEFT model's default adapter into athena's (same names)."""
    theirs = {k: v for k, v in src.state_dict().items() if ".default" in k}
    ours = dst.state_dict()
    assert set(theirs) <= set(ours), sorted(set(theirs) - set(ours))[:5]
    dst.load_state_dict(theirs, strict=False)


def _train(model: Any, steps: int = 5) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for step in range(steps):
        out = model(**batch(seed=step))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    return losses


def _randomise_ia3(model: Any) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.uniform_(0.5, 1.5)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_matches_peft_over_adamw_steps(use_rslora: bool) -> None:
    base = tiny_bert()
    theirs = _peft_lora(twin(base), use_rslora)
    ours = get_athena_model(
        twin(base),
        PolyAdapterConfig(
            r=4,
            lora_alpha=16,
            target_modules=LORA_TARGETS,
            use_rslora=use_rslora,
            modules_to_save=("classifier",),
        ),
    )
    _copy_adapter(theirs, ours)
    names = lambda m: sorted(n for n, p in m.named_parameters() if p.requires_grad)  # noqa: E731
    assert names(ours) == names(theirs)
    data = batch(seed=99)
    torch.testing.assert_close(ours(**data).logits, theirs(**data).logits)
    assert _train(ours) == pytest.approx(_train(theirs), rel=1e-5)
    torch.testing.assert_close(ours(**data).logits, theirs(**data).logits)


@pytest.mark.parametrize("feedforward", [["output.dense"], []])
def test_ia3_matches_peft_over_adamw_steps(feedforward: list[str]) -> None:
    base = tiny_bert()
    theirs = _peft_ia3(twin(base), feedforward)
    ours = get_athena_model(
        twin(base),
        PolyAdapterConfig(
            use_lora=False,
            use_ia3=True,
            target_modules=IA3_TARGETS,
            feedforward_modules=feedforward or None,
        ),
    )
    _randomise_ia3(theirs)
    _copy_adapter(theirs, ours)
    for name, param in ours.named_parameters():
        if "ia3_l" in name:
            assert param.shape == theirs.get_parameter(name).shape, name
    data = batch(seed=99)
    torch.testing.assert_close(ours(**data).logits, theirs(**data).logits)
    # IA³ alone leaves the randomly initialised head fixed, which is fine for the comparison
    assert _train(ours) == pytest.approx(_train(theirs), rel=1e-5)
    torch.testing.assert_close(ours(**data).logits, theirs(**data).logits)


def _file(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "adapter_model.safetensors"))


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_athena_checkpoint_loads_in_peft(kind: str, tmp_path: Path) -> None:
    base = tiny_bert()
    if kind == "lora":
        config = PolyAdapterConfig(
            r=4,
            target_modules=LORA_TARGETS,
            modules_to_save=("classifier",),
            init_lora_weights=False,
        )
    else:
        config = PolyAdapterConfig(use_lora=False, use_ia3=True, task_type="SEQ_CLS")
    ours = get_athena_model(twin(base), config)
    _randomise_ia3(ours)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == ("LORA" if kind == "lora" else "IA3")
    assert saved["inference_mode"] is True
    theirs = peft.PeftModel.from_pretrained(twin(base), tmp_path)
    data = batch(seed=5)
    torch.testing.assert_close(theirs(**data).logits, ours.eval()(**data).logits)
    theirs_dir = tmp_path / "theirs"
    theirs.save_pretrained(theirs_dir)
    assert sorted(_file(theirs_dir)) == sorted(_file(tmp_path))


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_peft_checkpoint_loads_in_athena(kind: str, tmp_path: Path) -> None:
    base = tiny_bert()
    if kind == "lora":
        theirs = _peft_lora(twin(base), use_rslora=True)
    else:
        theirs = _peft_ia3(twin(base), ["output.dense"])
        _randomise_ia3(theirs)
    theirs.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="dropped") if kind == "lora" else _no_warning():
        ours = AthenaModel.from_pretrained(twin(base), tmp_path)
    data = batch(seed=5)
    torch.testing.assert_close(ours(**data).logits, theirs.eval()(**data).logits)
    assert not any(p.requires_grad for p in ours.parameters())  # inference mode by default
    ours_dir = tmp_path / "ours"
    ours.save_pretrained(ours_dir)
    assert sorted(_file(ours_dir)) == sorted(_file(tmp_path))
    for key, value in _file(tmp_path).items():
        assert torch.equal(_file(ours_dir)[key], value), key


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def test_trainable_counts_match_peft() -> None:
    base = tiny_bert()
    theirs = _peft_lora(twin(base), use_rslora=False)
    ours = get_athena_model(
        twin(base),
        PolyAdapterConfig(r=4, target_modules=LORA_TARGETS, modules_to_save=("classifier",)),
    )
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()


def test_same_seed_gives_peft_initial_lora_weights() -> None:
    """Adapters are drawn from the random stream as PEFT draws them, so a seed means the same
    initial adapter in both libraries (the benchmark's PolyAdapter rows rely on it)."""
    base = tiny_bert()
    torch.manual_seed(123)
    theirs = peft.get_peft_model(twin(base), peft.LoraConfig(r=4, target_modules=LORA_TARGETS))
    torch.manual_seed(123)
    ours = get_athena_model(twin(base), PolyAdapterConfig(r=4, target_modules=LORA_TARGETS))
    mine = {k: v for k, v in ours.state_dict().items() if "lora_" in k}
    assert mine and all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.items())
    # and the stream is left in the same state (IA³ draws and discards, as PEFT does)
    for config, peft_config in [
        (
            PolyAdapterConfig(use_lora=False, use_ia3=True, target_modules=IA3_TARGETS),
            peft.IA3Config(target_modules=IA3_TARGETS, feedforward_modules=[]),
        ),
        (
            PolyAdapterConfig(r=4, target_modules=LORA_TARGETS),
            peft.LoraConfig(r=4, target_modules=LORA_TARGETS),
        ),
    ]:
        torch.manual_seed(7)
        peft.get_peft_model(twin(base), peft_config)
        after_theirs = torch.rand(3)
        torch.manual_seed(7)
        get_athena_model(twin(base), config)
        assert torch.equal(torch.rand(3), after_theirs), type(peft_config).__name__
