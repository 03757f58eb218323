"""Smoke test of the installed inl-llm wheel (run by scripts/smoke.py in a fresh venv)."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM

import inl_llm
from inl_llm import INLConfig, INLLayer
from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.modeling_inl import INLForCausalLM

assert "site-packages" in inl_llm.__file__, inl_llm.__file__
torch.manual_seed(0)
layer = INLLayer(INLConfig(d_model=16, num_iterations=3))
x0, h = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
assert torch.equal(layer(x0, h), torch.zeros_like(x0)), "INL must start as a zero update"

config = INLLLMConfig.from_preset(
    "tiny",
    vocab_size=64,
    num_layers=2,
    d_model=32,
    num_heads=2,
    feedforward_dim=64,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
model = INLForCausalLM(config).eval()
prompt = torch.randint(1, 64, (1, 5))
cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
plain = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
assert torch.equal(cached, plain), (cached, plain)
with tempfile.TemporaryDirectory() as path:
    model.save_pretrained(path)
    assert os.path.exists(os.path.join(path, "model.safetensors"))
    loaded = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    torch.testing.assert_close(loaded(prompt).logits, model(prompt).logits)
print(f"inl-llm {inl_llm.__version__}: layer, generate (cached == uncached) and save/load ok")
