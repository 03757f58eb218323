"""Smoke test of the installed athena wheel (run by scripts/smoke.py in a fresh venv): only torch
and safetensors are installed, so this uses no extra."""

import os
import tempfile

import torch
from torch import nn

import athena
from athena import AthenaModel, PolyAdapter, PolyAdapterConfig, get_athena_model

assert "site-packages" in athena.__file__, athena.__file__
torch.manual_seed(0)
base = nn.Linear(8, 6)
layer = PolyAdapter(8, 6, rank=2, base_layer=base, use_ia3=True, use_moe=True).eval()
x = torch.randn(3, 8)
assert torch.equal(layer(x), base(x)), "PolyAdapter must be the identity at init"


def net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


model = get_athena_model(
    net(), PolyAdapterConfig(r=2, target_modules=["0"], init_lora_weights=False)
)
with tempfile.TemporaryDirectory() as path:
    model.save_pretrained(path)
    assert os.path.exists(os.path.join(path, "adapter_model.safetensors"))
    loaded = AthenaModel.from_pretrained(net(), path)
    torch.testing.assert_close(loaded(x), model(x))
print(f"athena {athena.__version__}: PolyAdapter identity and save/load ok")
