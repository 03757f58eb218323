"""Smoke test of the installed aiether wheel (run by scripts/smoke.py in a fresh venv): only torch,
numpy, safetensors and adaptnn-core are installed, so this uses no extra."""

import tempfile

import torch

import aiether
from aiether import (
    AIetherGPT,
    GPTConfig,
    GrowthAwareLR,
    GrowthController,
    GrowthTrigger,
    TrajectoryTracker,
    param_groups,
    save_growth_state,
)

assert "site-packages" in aiether.__file__, aiether.__file__
torch.manual_seed(0)
model = AIetherGPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=16))
opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
tracker = TrajectoryTracker([("w", torch.zeros(1))], window=3, interval=1)
x = torch.randint(0, 32, (2, 8))


def probe(m: torch.nn.Module) -> torch.Tensor:
    return m(x, x)[1]


controller = GrowthController(
    model, opt, tracker=tracker, trigger=GrowthTrigger("schedule", schedule=(2,)), probe=probe
)
sched = GrowthAwareLR(opt, lambda t: 1.0, controller)
for step in range(4):
    _, loss = model(x, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    controller.step(step)
    sched.step()
(event,) = controller.events
assert event.probe_loss_after == event.probe_loss_before, event
with tempfile.TemporaryDirectory() as path:
    save_growth_state(path, controller, sched)
print(f"aiether {aiether.__version__}: growth at step {event.step}, function preserved")
