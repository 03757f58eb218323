"""Smoke test of the installed auon wheel (run by scripts/smoke.py in a fresh venv)."""

import torch

import auon
from auon import Adam, AuON

assert "site-packages" in auon.__file__, auon.__file__
torch.manual_seed(0)
w = torch.nn.Parameter(torch.randn(8, 4))
b = torch.nn.Parameter(torch.zeros(4))
opt = AuON([w], lr=0.1)
aux = Adam([b], lr=1e-3)
before = w.detach().clone()
loss = (torch.randn(3, 8) @ w + b).square().mean()
loss.backward()
opt.step()
aux.step()
assert torch.isfinite(w).all()
assert not torch.equal(w.detach(), before), "AuON step did not move the weight"
assert "momentum_buffer" in opt.state[w], list(opt.state[w])
print(f"auon {auon.__version__}: AuON and Adam step ok")
