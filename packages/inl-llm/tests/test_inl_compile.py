"""The fixed-T path is one graph: 0 graph breaks (dynamo, fast) and inductor fullgraph (slow)."""

from __future__ import annotations

import pytest
import torch

from inl_llm import INLConfig, INLLayer, SharedINLController

CONFIGS = [
    {},
    {"variant": "full", "excitation": "sparse"},
    {"compat": "reference"},
    {"checkpoint_iterations": True},
]


def _ids(o: dict[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in o.items()) or "default"


@pytest.mark.parametrize("options", CONFIGS, ids=_ids)
def test_fixed_path_has_no_graph_break(options: dict[str, object]) -> None:
    layer = INLLayer(INLConfig(d_model=16, num_iterations=3, **options)).train()  # type: ignore[arg-type]
    x0, h = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(layer)(x0, h, mask=torch.ones(2, 4, dtype=torch.bool))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_shared_controller_layer_has_no_graph_break() -> None:
    cfg = INLConfig(d_model=16, num_iterations=3, controller_scope="shared")
    layer = INLLayer(cfg, shared=SharedINLController(cfg))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(layer)(torch.randn(2, 4, 16), torch.randn(2, 4, 16))
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.slow
def test_inductor_fullgraph_matches_eager_values_and_gradients() -> None:
    torch.manual_seed(0)
    layer = INLLayer(INLConfig(d_model=32, num_iterations=4, output_gate_init=0.5))
    compiled = torch.compile(layer, fullgraph=True)
    x0, h = torch.randn(2, 8, 32), torch.randn(2, 8, 32)
    weight = torch.randn(2, 8, 32)
    results = []
    for fn in (layer, compiled):
        layer.zero_grad()
        out = fn(x0, h)
        (out * weight).sum().backward()
        results.append([out.detach(), *(p.grad.clone() for p in layer.parameters())])  # type: ignore[union-attr]
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(
            a, b, rtol=1e-4, atol=1e-5
        )  # inductor fuses and reorders float32 sums
