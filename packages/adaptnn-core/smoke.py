"""Smoke test of the installed adaptnn-core wheel (run by scripts/smoke.py in a fresh venv)."""

import torch

import adaptnn_core

assert "site-packages" in adaptnn_core.__file__, adaptnn_core.__file__
g = torch.randn(64, 32)
o = adaptnn_core.newton_schulz(g, compute_dtype=torch.float32)
s = torch.linalg.svdvals(o)
assert o.shape == g.shape, o.shape
assert float(s.min()) > 0.6, s
assert float(s.max()) < 1.2, s
ms = adaptnn_core.mean_square(torch.tensor([1.0, 2.0, 3.0]))
assert abs(float(ms) - 14 / 3) < 1e-6, ms
print(f"adaptnn-core {adaptnn_core.__version__}: newton_schulz and mean_square ok")
