"""inl-llm + athena: LoRA adapters on the linears of an INL layer's controller; the adapted
model starts as the base, trains only the adapters, saves in PEFT's layout, reloads and merges
to the same outputs, and a resumed adapter run continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from athena import AthenaModel, PolyAdapter, PolyAdapterConfig, get_athena_model
from inl_llm import INLConfig, INLLayer
from tests.mix_and_match._common import AdapterRun, assert_resumes_exactly, counting_batches

TARGETS = ["controller.in_h", "controller.in_xv", "controller.out"]


class INLNet(nn.Module):
    """Embedding, one INL update on the normalised stream (context: the stream), head."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, d)
        self.norm = nn.LayerNorm(d)
        self.inl = INLLayer(INLConfig(d_model=d, num_iterations=3, controller_hidden=16))
        self.head = nn.Linear(d, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        x = x + self.inl(self.norm(x), x)
        logits: torch.Tensor = self.head(x)
        return logits


def _base() -> INLNet:
    torch.manual_seed(0)
    net = INLNet()
    with torch.no_grad():
        net.inl.gate.fill_(0.5)  # a "trained" gate: the INL update is not zero
    return net


def _config() -> PolyAdapterConfig:
    return PolyAdapterConfig(r=4, lora_alpha=8, target_modules=TARGETS)


def test_lora_on_inl_controller_linears(tmp_path: Path) -> None:
    base = _base()
    ids = counting_batches(1, 4, 12, seed=3)[0][:, :-1]
    with torch.no_grad():
        base_out = base(ids)
    run = AdapterRun(_base, _config())
    adapted = sorted(n for n, m in run.model.named_modules() if isinstance(m, PolyAdapter))
    assert [n.split("inl.")[-1] for n in adapted] == sorted(TARGETS)
    with torch.no_grad():
        assert torch.equal(run.model.eval()(ids), base_out)  # the identity at initialisation
    frozen = {n: p.detach().clone() for n, p in run.model.named_parameters() if not p.requires_grad}
    for i in range(6):
        run.step(i)
    for n, p in run.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # only the adapters move
    with torch.no_grad():
        tuned = run.model.eval()(ids)
    assert not torch.equal(tuned, base_out)

    run.model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LORA"
    reloaded = AthenaModel.from_pretrained(_base(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids), tuned)
        merged = get_athena_model(_base(), _config())
        merged.load_state_dict(run.model.state_dict())
        plain = merged.merge_and_unload().eval()
        assert not any(isinstance(m, PolyAdapter) for m in plain.modules())
        torch.testing.assert_close(plain(ids), tuned, rtol=0, atol=1e-5)


def test_an_inl_adapter_run_resumes_exactly(tmp_path: Path) -> None:
    assert_resumes_exactly(lambda: AdapterRun(_base, _config()), steps=10, split=4, tmp=tmp_path)
