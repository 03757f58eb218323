"""aion-torch + athena: LoRA on the linears of an AION-residual model. With the residuals in eval
mode during fine-tuning, the base's AION statistics stay with its weights, so the adapter file
alone reproduces the model; merging gives the same outputs and keeps the AION state; a resumed
adapter run continues exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from aion_torch import AionResidual
from athena import AthenaModel, PolyAdapter, PolyAdapterConfig
from tests.mix_and_match._common import (
    AdapterRun,
    ByteNet,
    assert_resumes_exactly,
    counting_batches,
    train_step,
)


def _base() -> ByteNet:
    """An AION ByteNet after 5 training steps (AION's EMA away from its initial value)."""
    torch.manual_seed(0)
    net = ByteNet(residual=AionResidual)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for chunk in counting_batches(5, 4, 12):
        train_step(net, opt, chunk)
    return net


def _config() -> PolyAdapterConfig:
    return PolyAdapterConfig(r=4, lora_alpha=8, target_modules=["mlp.0", "mlp.2"])


def _aion_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: t.clone()
        for n, t in model.state_dict().items()
        if n.rsplit(".", 1)[-1] in {"ratio_ema", "alpha_cached", "step_count", "alpha0", "beta"}
    }


def test_lora_on_an_aion_model_reloads_and_merges(tmp_path: Path) -> None:
    run = AdapterRun(_base, _config(), frozen_stats=(AionResidual,))
    assert sum(isinstance(m, PolyAdapter) for m in run.model.modules()) == 6
    aion_before = _aion_state(run.model)
    assert len(aion_before) == 15 and all(
        float(v) != 1.0 for k, v in aion_before.items() if k.endswith("ratio_ema")
    )
    for i in range(8):
        run.step(i)
    aion_after = _aion_state(run.model)
    for name, value in aion_before.items():
        assert torch.equal(aion_after[name], value), name  # frozen with the base
    ids = counting_batches(1, 4, 12, seed=3)[0][:, :-1]
    with torch.no_grad():
        tuned = run.model.eval()(ids)
    run.model.save_pretrained(tmp_path)
    reloaded = AthenaModel.from_pretrained(_base(), tmp_path).eval()
    merged = run.model.merge_and_unload().eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids), tuned)
        torch.testing.assert_close(merged(ids), tuned, rtol=0, atol=1e-5)
    assert not any(isinstance(m, PolyAdapter) for m in merged.modules())
    merged_aion = _aion_state(merged)
    assert merged_aion.keys() == {k.removeprefix("base_model.model.") for k in aion_before}
    for name, value in aion_before.items():
        assert torch.equal(merged_aion[name.removeprefix("base_model.model.")], value), name


def test_an_aion_adapter_run_resumes_exactly(tmp_path: Path) -> None:
    assert_resumes_exactly(
        lambda: AdapterRun(_base, _config(), frozen_stats=(AionResidual,)),
        steps=10,
        split=4,
        tmp=tmp_path,
    )
