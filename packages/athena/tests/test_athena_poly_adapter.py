"""PolyAdapter as a layer: identity at init, the branch formulas against hand-written oracles,
mixture routing (soft merge, top-k weights, balance loss, dense = gather), merge, dtypes, errors."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from athena import PolyAdapter
from athena.routing import balance_loss, expert_mix_dense, expert_mix_gather, route

SWITCHES = [c for c in itertools.product([False, True], repeat=3) if any(c)]


def _wrapped(use_lora: bool, use_ia3: bool, use_moe: bool, **kw: object) -> PolyAdapter:
    base = nn.Linear(6, 5)
    base.requires_grad_(False)
    return PolyAdapter(
        rank=3, base_layer=base, use_lora=use_lora, use_ia3=use_ia3, use_moe=use_moe, **kw
    )


@pytest.mark.parametrize(("use_lora", "use_ia3", "use_moe"), SWITCHES)
@pytest.mark.parametrize("ia3_mode", ["output", "input"])
def test_identity_at_init_for_every_switch_combination(
    use_lora: bool, use_ia3: bool, use_moe: bool, ia3_mode: str
) -> None:
    layer = _wrapped(use_lora, use_ia3, use_moe, ia3_mode=ia3_mode, dropout=0.0).eval()
    x = torch.randn(2, 7, 6)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_init_lora_weights_false_is_not_the_identity() -> None:
    layer = _wrapped(True, False, True, init_lora_weights=False, dropout=0.0)
    x = torch.randn(4, 6)
    assert not torch.allclose(layer(x), layer.base_layer(x))


def test_original_compatible_constructor_creates_a_frozen_linear() -> None:
    layer = PolyAdapter(16, 12)  # the original's call: rank 8, alpha 32, dropout 0.1, all on
    assert isinstance(layer.base_layer, nn.Linear)
    assert not any(p.requires_grad for p in layer.base_layer.parameters())
    spec = layer.specs["default"]
    assert (spec.rank, spec.alpha, spec.dropout, spec.num_experts, spec.top_k) == (
        8,
        32.0,
        0.1,
        4,
        1,
    )
    assert spec.use_lora and spec.use_ia3 and spec.use_moe
    assert layer(torch.randn(3, 16)).shape == (3, 12)


def test_the_original_positional_order_is_kept() -> None:
    # The original: PolyAdapter(in, out, rank, num_experts, k, dropout, use_lora, use_ia3, use_moe)
    layer = PolyAdapter(16, 12, 4, 2, 2, 0.0, True, False, True)
    spec = layer.specs["default"]
    assert (spec.rank, spec.num_experts, spec.top_k, spec.dropout) == (4, 2, 2, 0.0)
    assert (spec.use_lora, spec.use_ia3, spec.use_moe) == (True, False, True)
    assert spec.alpha == 32.0  # keyword-only: alpha=...
    with pytest.raises(TypeError):
        PolyAdapter(16, 12, 4, 2, 2, 0.0, True, False, True, 16.0)  # type: ignore[misc]


def test_branch_formula_against_a_hand_written_oracle() -> None:
    torch.manual_seed(3)
    layer = _wrapped(True, True, True, init_lora_weights=False, dropout=0.0, alpha=6.0, k=2).eval()
    with torch.no_grad():
        layer.ia3_l["default"].uniform_(0.5, 1.5)
    x = torch.randn(10, 6)
    w, b = layer.base_layer.weight, layer.base_layer.bias
    g = layer.ia3_l["default"].flatten()
    a, bb = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = g * (x @ w.t() + b) + (x @ a.t() @ bb.t()) * (6.0 / 3)
    probs = torch.softmax(x @ layer.router["default"].weight.t(), -1)
    for n in range(10):
        top = probs[n].topk(2)
        for p, e in zip(top.values / top.values.sum(), top.indices, strict=True):
            expert = layer.moe_B["default"][e] @ layer.moe_A["default"][e]
            expected[n] += p * (6.0 / 3) * (expert @ x[n])
    torch.testing.assert_close(layer(x), expected)


def test_input_mode_ia3_scales_the_input_only() -> None:
    layer = _wrapped(False, True, False, ia3_mode="input").eval()
    with torch.no_grad():
        layer.ia3_l["default"].uniform_(0.5, 1.5)
    x = torch.randn(4, 6)
    g = layer.ia3_l["default"]
    assert g.shape == (1, 6)
    torch.testing.assert_close(layer(x), layer.base_layer(x * g))


def test_rslora_scaling() -> None:
    plain = _wrapped(True, False, False, alpha=8.0)
    rs = _wrapped(True, False, False, alpha=8.0, use_rslora=True)
    assert plain.specs["default"].scaling == 8.0 / 3
    assert rs.specs["default"].scaling == 8.0 / math.sqrt(3)


def test_soft_merge_equals_the_probability_weighted_dense_sum() -> None:
    torch.manual_seed(1)
    e = 4
    layer = _wrapped(False, False, True, num_experts=e, k=e, init_lora_weights=False, dropout=0.0)
    x = torch.randn(5, 6)
    probs = torch.softmax(x @ layer.router["default"].weight.t(), -1)
    s = layer.specs["default"].moe_scaling
    dense = sum(
        probs[:, i : i + 1] * (x @ layer.moe_A["default"][i].t() @ layer.moe_B["default"][i].t())
        for i in range(e)
    )
    torch.testing.assert_close(layer(x) - layer.base_layer(x), s * dense)


@pytest.mark.parametrize(("k", "renormalize"), [(1, True), (2, True), (2, False), (4, True)])
def test_top_k_weights(k: int, renormalize: bool) -> None:
    logits = torch.randn(50, 4)
    routing = route(logits, k, renormalize)
    assert routing.indices.shape == (50, k)
    assert ((routing.gates > 0).sum(-1) == k).all()
    if renormalize:
        torch.testing.assert_close(routing.weights.sum(-1), torch.ones(50))
    else:
        torch.testing.assert_close(routing.weights, routing.probs.topk(k).values)
    torch.testing.assert_close(routing.gates.sum(-1), routing.weights.sum(-1))


def test_balance_loss_is_one_for_uniform_routing_and_e_when_collapsed() -> None:
    uniform = route(torch.zeros(8, 4), 1)
    # ties: topk picks one expert for every token, but P is uniform, so E·Σ f_i/E = 1
    torch.testing.assert_close(balance_loss(uniform), torch.tensor(1.0))
    spread = route(torch.eye(4).repeat(2, 1) * 1e-3, 1)  # each expert chosen by a quarter
    torch.testing.assert_close(balance_loss(spread), torch.tensor(1.0), atol=1e-3, rtol=0)
    collapsed = route(torch.tensor([[50.0, 0, 0, 0]]).repeat(8, 1), 1)
    torch.testing.assert_close(balance_loss(collapsed), torch.tensor(4.0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_dense_and_gather_expert_mixes_agree(k: int) -> None:
    torch.manual_seed(0)
    x, a, b = torch.randn(20, 6), torch.randn(4, 3, 6), torch.randn(4, 5, 3)
    routing = route(torch.randn(20, 4), k)
    torch.testing.assert_close(
        expert_mix_dense(x, a, b, routing.gates), expert_mix_gather(x, a, b, routing)
    )


def test_gather_impl_module_equals_dense_impl() -> None:
    torch.manual_seed(0)
    dense = _wrapped(False, False, True, init_lora_weights=False, k=2, dropout=0.0)
    gather = copy.deepcopy(dense)
    gather.specs["default"] = type(dense.specs["default"])(
        **{**dense.specs["default"].__dict__, "moe_impl": "gather"}
    )
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(dense(x), gather(x))


def test_routing_stats_and_aux_loss() -> None:
    layer = _wrapped(False, False, True, num_experts=4, k=2)
    assert layer.aux_loss() is None
    layer(torch.randn(2, 5, 6))
    stats = layer.get_routing_stats()
    assert stats["tokens"].item() == 10
    torch.testing.assert_close(stats["load"].sum(), torch.tensor(1.0))
    assert 0 < stats["entropy"].item() <= math.log(4) + 1e-6
    aux = layer.aux_loss()
    assert aux is not None and aux.requires_grad
    aux.backward()
    assert layer.router["default"].weight.grad is not None
    layer.reset_routing_stats()
    assert layer.get_routing_stats()["tokens"].item() == 0
    copy.deepcopy(layer)  # the stored loss's graph must not block deep copies


@pytest.mark.parametrize("ia3_mode", ["output", "input"])
def test_merge_and_unmerge_layer(ia3_mode: str) -> None:
    torch.manual_seed(0)
    layer = _wrapped(True, True, False, ia3_mode=ia3_mode, init_lora_weights=False, dropout=0.0)
    with torch.no_grad():
        layer.ia3_l["default"].uniform_(0.5, 1.5)
    x = torch.randn(7, 6)
    before, weight = layer(x), layer.base_layer.weight.clone()
    layer.merge()
    assert not torch.equal(layer.base_layer.weight, weight)
    torch.testing.assert_close(layer(x), before)
    torch.testing.assert_close(layer.base_layer(x), before)
    layer.merge()  # idempotent
    torch.testing.assert_close(layer(x), before)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, weight)
    torch.testing.assert_close(layer(x), before)


def test_merge_keeps_the_moe_branch_running() -> None:
    torch.manual_seed(0)
    layer = _wrapped(True, False, True, init_lora_weights=False, dropout=0.0)
    x = torch.randn(7, 6)
    before = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), before)
    assert not torch.allclose(layer.base_layer(x), before)


def test_safe_merge_refuses_non_finite_weights() -> None:
    layer = _wrapped(True, False, False, init_lora_weights=False)
    with torch.no_grad():
        layer.lora_B["default"].weight[0, 0] = float("nan")
    weight = layer.base_layer.weight.clone()
    with pytest.raises(ValueError, match="non-finite"):
        layer.merge(safe_merge=True)
    assert torch.equal(layer.base_layer.weight, weight) and layer.merged_adapters == []


def test_adapter_weights_stay_float32_over_a_bf16_base() -> None:
    base = nn.Linear(6, 5).to(torch.bfloat16)
    layer = PolyAdapter(base_layer=base, rank=2, use_ia3=True, use_moe=True)
    assert all(
        p.dtype == torch.float32 for n, p in layer.named_parameters() if "base_layer" not in n
    )
    x = torch.randn(3, 6, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(layer.eval()(x), base(x))


def test_disable_adapters_gives_the_base_output() -> None:
    layer = _wrapped(True, True, True, init_lora_weights=False, dropout=0.0)
    x = torch.randn(4, 6)
    layer.disable_adapters = True
    assert torch.equal(layer(x), layer.base_layer(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_features": 7}, "base_layer is"),
        ({"rank": 0}, "rank 0 means"),
        ({"use_lora": False, "use_ia3": False, "use_moe": False}, "nothing to adapt"),
        ({"k": 5}, "k must be in"),
        ({"k": 0}, "k must be in"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"ia3_mode": "middle"}, "ia3_mode"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    base = nn.Linear(6, 5)
    with pytest.raises(ValueError, match=message):
        PolyAdapter(base_layer=base, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_features and out_features"):
        PolyAdapter()


def test_compiles_fullgraph() -> None:
    layer = _wrapped(True, True, True, k=2).eval()
    x = torch.randn(2, 3, 6)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), layer(x))
