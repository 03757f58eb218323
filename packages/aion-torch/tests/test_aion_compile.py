"""``torch.compile(fullgraph=True)``: no graph breaks in the default mode, compiled equals eager."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from aion_torch import AionBlock, AionResidual, sync_stats


def _model(sync: str) -> nn.Sequential:
    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    return nn.Sequential(*(AionBlock(mlp(), 16, sync_stats=sync) for _ in range(4)))


class _Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = AionBlock(nn.Linear(16, 16), 16)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out: Tensor = self.block(x, mask=mask)
        return out


@pytest.mark.parametrize("sync", ["none", "deferred"])
@pytest.mark.parametrize("training", [True, False])
def test_zero_graph_breaks(sync: str, training: bool) -> None:
    model = _model(sync).train(training)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 5, 16))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_zero_graph_breaks_with_mask_and_stats() -> None:
    explanation = torch._dynamo.explain(_Masked())(torch.randn(2, 5, 16), torch.rand(2, 5) > 0.5)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    res = AionResidual()

    def with_stats(x: Tensor, y: Tensor) -> Tensor:
        out, stats = res(x, y, return_stats=True)
        return out * stats["alpha"]

    explanation = torch._dynamo.explain(with_stats)(torch.randn(2, 8), torch.randn(2, 8))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def _compare(backend: str, sync: str) -> None:
    torch.manual_seed(0)
    eager = _model(sync)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend=backend)
    for step in range(3):
        x = torch.randn(2, 5, 16)
        out_e = eager(x)
        out_c = compiled(x)
        torch.testing.assert_close(out_c, out_e)
        out_e.pow(2).mean().backward()
        out_c.pow(2).mean().backward()
        if sync == "deferred":
            sync_stats(eager)
            sync_stats(compiled_module)
        for (name, a), b in zip(
            eager.named_parameters(), compiled_module.parameters(), strict=True
        ):
            assert a.grad is not None and b.grad is not None
            torch.testing.assert_close(b.grad, a.grad, msg=f"{name} at step {step}")
        for (name, a), b in zip(eager.named_buffers(), compiled_module.buffers(), strict=True):
            torch.testing.assert_close(b, a, msg=f"{name} at step {step}")
    eager.eval()
    compiled_module.eval()
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(compiled(x), eager(x))


@pytest.mark.parametrize("sync", ["none", "deferred"])
def test_compiled_equals_eager_aot_eager(sync: str) -> None:
    _compare("aot_eager", sync)


@pytest.mark.slow
def test_compiled_equals_eager_inductor() -> None:
    _compare("inductor", "none")
