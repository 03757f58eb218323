"""Muon vs torch.optim.Muon; HybridAuON formulas; zeropower alias; Adam vs AdamW."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from adaptnn_core import newton_schulz
from auon import Adam, HybridAuON, Muon, zeropower_via_newtonschulz5

HAS_TORCH_MUON = hasattr(torch.optim, "Muon")


@pytest.mark.skipif(not HAS_TORCH_MUON, reason="torch.optim.Muon not in this torch")
@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_torch_muon(adjust: str | None, nesterov: bool) -> None:
    torch.manual_seed(0)
    shapes = [(32, 16), (16, 48)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kw = {
        "lr": 0.02,
        "weight_decay": 0.1,
        "momentum": 0.9,
        "nesterov": nesterov,
        "ns_steps": 5,
        "eps": 1e-7,
    }
    oa = Muon(ours, adjust_lr_fn=adjust, **kw)  # type: ignore[arg-type]
    ob = torch.optim.Muon(
        theirs, adjust_lr_fn=adjust, ns_coefficients=(3.4445, -4.7750, 2.0315), **kw
    )  # type: ignore[attr-defined]
    for step in range(10):
        torch.manual_seed(100 + step)
        for a, b in zip(ours, theirs, strict=True):
            g = torch.randn_like(a)
            a.grad, b.grad = g, g.clone()
        oa.step()
        ob.step()
    for a, b in zip(ours, theirs, strict=True):
        # Same iteration, same fused products, same rounding of the norm and of the momentum:
        # on CPU the parameters are bit-identical after 10 steps (the spec allows bf16 rounding).
        assert torch.equal(a, b), (a - b).abs().max()


@pytest.mark.skipif(not HAS_TORCH_MUON, reason="torch.optim.Muon not in this torch")
def test_muon_4d_equals_torch_muon_on_view() -> None:
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    q = torch.nn.Parameter(p.detach().reshape(8, 36).clone())
    oa = Muon([p], lr=0.02, weight_decay=0.0)
    ob = torch.optim.Muon([q], lr=0.02, weight_decay=0.0)  # type: ignore[attr-defined]
    for _ in range(3):
        g = torch.randn(8, 4, 3, 3)
        p.grad, q.grad = g, g.reshape(8, 36).clone()
        oa.step()
        ob.step()
    # the (8, 36) view is what torch.optim.Muon sees: the same ops, so the same bits
    assert torch.equal(p.detach().reshape(8, 36), q.detach())


def test_hybrid_paper_one_step_matches_formula() -> None:
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(24, 16))
    p0 = p.detach().clone()
    g = torch.randn(24, 16)
    opt = HybridAuON([p], lr=0.1, momentum=0.9, weight_decay=0.05)
    p.grad = g
    opt.step()
    m = 0.1 * g
    G = 0.1 * g + 0.9 * m
    O = newton_schulz(G, 1)  # noqa: E741 - paper notation
    X = O / torch.linalg.vector_norm(O)
    r = torch.sqrt(torch.mean(torch.cosh(X) ** 2))
    expected = p0 * (1 - 0.1 * 0.05) - 0.1 * math.sqrt(24 / 16) * O / (r + 1e-8)
    torch.testing.assert_close(p.detach(), expected)


def test_hybrid_paper_five_steps_aligns_with_muon() -> None:
    torch.manual_seed(3)
    g = torch.randn(128, 512)
    a = torch.nn.Parameter(torch.zeros(128, 512))
    b = torch.nn.Parameter(torch.zeros(128, 512))
    oa = HybridAuON([a], lr=1.0, momentum=0.0, ns_steps=5)
    ob = Muon([b], lr=1.0, momentum=0.0, weight_decay=0.0)
    a.grad, b.grad = g, g.clone()
    oa.step()
    ob.step()
    cos = torch.nn.functional.cosine_similarity(a.detach().flatten(), b.detach().flatten(), dim=0)
    assert cos.item() > 0.999


def test_zeropower_alias_and_adam() -> None:
    torch.manual_seed(4)
    g = torch.randn(16, 32)
    z = zeropower_via_newtonschulz5(g)
    assert z.dtype == torch.bfloat16
    torch.testing.assert_close(z, newton_schulz(g, 5).bfloat16())
    a = torch.nn.Parameter(torch.randn(5, 5))
    b = torch.nn.Parameter(a.detach().clone())
    oa = Adam([a])
    ob = torch.optim.AdamW([b], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    for _ in range(3):
        gg = torch.randn(5, 5)
        a.grad, b.grad = gg, gg.clone()
        oa.step()
        ob.step()
    assert torch.equal(a, b)


def test_muon_nan_skip() -> None:
    p = torch.nn.Parameter(torch.randn(6, 6))
    opt = Muon([p])
    p0 = p.detach().clone()
    p.grad = torch.full((6, 6), float("inf"))
    opt.step()
    assert torch.equal(p.detach(), p0)
    assert int(opt.state[p]["nonfinite_steps"]) == 1


def test_split_across_ranks_is_a_no_op_without_a_process_group() -> None:
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(8, 6)), torch.nn.Parameter(torch.randn(6, 10))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oa, ob = Muon(a, lr=0.05, split_across_ranks=True), Muon(b, lr=0.05)
    for _ in range(2):
        for x, y in zip(a, b, strict=True):
            g = torch.randn_like(x)
            x.grad, y.grad = g, g.clone()
        oa.step()
        ob.step()
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    with pytest.raises(TypeError, match="split_across_ranks"):
        Muon(a, split_across_ranks=1)  # type: ignore[arg-type]


def test_split_flag_survives_deepcopy() -> None:
    opt = Muon([torch.nn.Parameter(torch.randn(3, 3))], split_across_ranks=True)
    assert copy.deepcopy(opt).split_across_ranks is True
