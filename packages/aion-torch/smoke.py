"""Smoke test of the installed aion-torch wheel (run by scripts/smoke.py in a fresh venv)."""

import torch

import aion_torch

assert "site-packages" in aion_torch.__file__, aion_torch.__file__
torch.manual_seed(0)
res = aion_torch.AionResidual()
x = torch.randn(2, 5, 16)
y = torch.randn(2, 5, 16, requires_grad=True)
out = res(x, y)
out.sum().backward()
assert out.shape == x.shape, out.shape
assert torch.isfinite(out).all()
assert y.grad is not None and torch.isfinite(y.grad).all()
state = res.state_dict()
for key in ("alpha0", "beta", "ratio_ema", "step_count", "alpha_cached"):
    assert key in state, sorted(state)
assert int(state["step_count"]) == 1, state["step_count"]
print(f"aion-torch {aion_torch.__version__}: AionResidual forward/backward ok")
