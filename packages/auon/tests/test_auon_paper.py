"""AuON paper variant: equivalence with an independent float64 re-derivation, invariants, hygiene."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from auon import AuON, cosh_factor


def _ref_paper(
    p0: torch.Tensor,
    grads: list[torch.Tensor],
    *,
    lr: float,
    beta: float,
    nesterov: bool,
    wd: float,
    gamma: float,
    adjust: str | None,
) -> torch.Tensor:
    """Float64 re-derivation of the paper step, written from the formulas (no library code)."""
    p = p0.double().clone()
    m = torch.zeros_like(p)
    rows = p.shape[0]
    cols = p.numel() // rows
    scale = {
        None: math.sqrt(max(1.0, rows / cols)),
        "original": math.sqrt(max(1.0, rows / cols)),
        "unit": 1.0,
        "match_muon": math.sqrt(min(rows, cols)) * math.sqrt(max(1.0, rows / cols)),
        "match_rms_adamw": 0.2 * math.sqrt(rows * cols),
    }[adjust]
    for g in grads:
        g = g.double()
        m = beta * m + (1 - beta) * g
        G = (1 - beta) * g + beta * m if nesterov else m
        X = G / (torch.sqrt((G**2).sum()) + 1e-7)
        r = torch.sqrt(torch.mean(torch.cosh(gamma * X) ** 2))
        U = X / (r + 1e-8)
        p = p * (1 - lr * wd) - lr * scale * U
    return p


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust", [None, "original", "unit", "match_muon", "match_rms_adamw"])
def test_paper_matches_float64_rederivation(nesterov: bool, adjust: str | None) -> None:
    torch.manual_seed(1)
    shape = (12, 3, 2, 2)  # 4-D: viewed as (12, 12)
    p = torch.nn.Parameter(torch.randn(shape))
    grads = [torch.randn(shape) for _ in range(10)]
    expected = _ref_paper(
        p.detach(), grads, lr=0.05, beta=0.9, nesterov=nesterov, wd=0.1, gamma=1.3, adjust=adjust
    )
    opt = AuON(
        [p],
        lr=0.05,
        momentum=0.9,
        weight_decay=0.1,
        gamma=1.3,
        nesterov=nesterov,
        adjust_lr_fn=adjust,
    )
    for g in grads:
        p.grad = g
        opt.step()
    torch.testing.assert_close(p.detach(), expected.float())


def test_rectangular_shape_factor_uses_matrix_shape() -> None:
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(40, 10))
    grads = [torch.randn(40, 10) for _ in range(3)]
    expected = _ref_paper(
        p.detach(), grads, lr=0.1, beta=0.95, nesterov=True, wd=0.0, gamma=1.0, adjust=None
    )
    opt = AuON([p], lr=0.1)
    for g in grads:
        p.grad = g
        opt.step()
    torch.testing.assert_close(p.detach(), expected.float())


def _one_update(g: torch.Tensor, **kw: object) -> torch.Tensor:
    p = torch.nn.Parameter(torch.zeros_like(g))
    opt = AuON([p], lr=1.0, momentum=0.0, adjust_lr_fn="unit", **kw)  # type: ignore[arg-type]
    p.grad = g
    opt.step()
    return -p.detach()


def test_unit_frobenius_norm_and_scale_invariance() -> None:
    torch.manual_seed(3)
    g = torch.randn(64, 48)
    u = _one_update(g)
    n = g.numel()
    norm = torch.linalg.vector_norm(u)
    assert 1 - math.sinh(1.0) ** 2 / (2 * n) - 1e-6 <= norm.item() <= 1.0
    for c in (1e-3, 7.0, 1e4):
        torch.testing.assert_close(_one_update(c * g), u)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.5, 3.0])
@pytest.mark.parametrize("shape", [(8, 8), (64, 64), (32, 128)])
def test_r_squared_bounds(gamma: float, shape: tuple[int, int]) -> None:
    torch.manual_seed(4)
    g = torch.randn(shape, dtype=torch.float64)
    n = g.numel()
    r2 = cosh_factor(g, gamma, compute_dtype=torch.float64).item() ** 2
    assert 1 + 0.9 * gamma**2 / n <= r2 <= 1 + math.sinh(gamma) ** 2 / n


def test_bf16_compute_gives_r_exactly_one() -> None:
    torch.manual_seed(5)
    g = torch.randn(64, 64)
    assert cosh_factor(g, 1.0, compute_dtype=torch.bfloat16).item() == 1.0
    # and the optimiser's bf16 path runs and gives a unit-norm update up to bf16 rounding
    u = _one_update(g, compute_dtype=torch.bfloat16)
    assert abs(torch.linalg.vector_norm(u).item() - 1.0) < 1e-2


def test_paper_is_normalised_sgd_to_1e5_on_512() -> None:
    """Documents the no-op: the cosh factor changes a 512² update by < 1e-5 relative."""
    torch.manual_seed(6)
    g = torch.randn(512, 512)
    u = _one_update(g)
    control = g / (torch.linalg.vector_norm(g) + 1e-7)
    rel = (torch.linalg.vector_norm(u - control) / torch.linalg.vector_norm(control)).item()
    assert rel < 1e-5


def test_grad_untouched_zero_grad_and_nan_skip() -> None:
    torch.manual_seed(7)
    a = torch.nn.Parameter(torch.randn(6, 5))
    b = torch.nn.Parameter(torch.randn(4, 4))
    opt = AuON([a, b], lr=0.1, weight_decay=0.5)
    a.grad = torch.randn(6, 5)
    b.grad = torch.randn(4, 4)
    ga, ptr = a.grad.clone(), a.grad.data_ptr()
    opt.step()
    assert torch.equal(a.grad, ga) and a.grad.data_ptr() == ptr
    # zero gradient everywhere: no NaN, only decay (momentum is non-zero here, so reset it)
    z = torch.nn.Parameter(torch.randn(5, 5))
    zopt = AuON([z], lr=0.1, weight_decay=0.5)
    z0 = z.detach().clone()
    z.grad = torch.zeros(5, 5)
    zopt.step()
    torch.testing.assert_close(z.detach(), z0 * (1 - 0.1 * 0.5))
    # NaN gradient on one parameter: that parameter and its momentum are unchanged, the other moves
    a_before, m_before = a.detach().clone(), opt.state[a]["momentum_buffer"].clone()
    b_before = b.detach().clone()
    a.grad = torch.full((6, 5), float("nan"))
    b.grad = torch.randn(4, 4)
    opt.step()
    assert torch.equal(a.detach(), a_before)
    assert torch.equal(opt.state[a]["momentum_buffer"], m_before)
    assert int(opt.state[a]["nonfinite_steps"]) == 1 and int(opt.state[b]["nonfinite_steps"]) == 0
    assert not torch.equal(b.detach(), b_before) and torch.isfinite(b).all()


def test_nan_propagates_when_asked() -> None:
    a = torch.nn.Parameter(torch.randn(3, 3))
    opt = AuON([a], lr=0.1, nonfinite="propagate")
    a.grad = torch.full((3, 3), float("nan"))
    opt.step()
    assert torch.isnan(a).all()


def _mixed_params(seed: int, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    shapes = [(16, 8), (8, 16), (4, 3, 3, 3), (32, 32), (5, 7)]
    return [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]


@pytest.mark.parametrize("brake", ["none", "rms"])
def test_foreach_equals_loop(brake: str) -> None:
    pa, pb = _mixed_params(8), _mixed_params(8)
    oa = AuON(pa, lr=0.05, weight_decay=0.1, foreach=True, brake=brake)  # type: ignore[arg-type]
    ob = AuON(pb, lr=0.05, weight_decay=0.1, foreach=False, brake=brake)  # type: ignore[arg-type]
    for step in range(5):
        torch.manual_seed(100 + step)
        gs = [torch.randn_like(p) for p in pa]
        for x, y, g in zip(pa, pb, gs, strict=True):
            x.grad, y.grad = g, g.clone()
        oa.step()
        ob.step()
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y)


def _run(opt: AuON, params: list[torch.nn.Parameter], steps: range) -> None:
    for step in steps:
        torch.manual_seed(1000 + step)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()


def test_resume_from_checkpoint_is_bitwise() -> None:
    pa = _mixed_params(9)
    oa = AuON(pa, lr=0.05, weight_decay=0.1)
    _run(oa, pa, range(10))

    pb = _mixed_params(9)
    ob = AuON(pb, lr=0.05, weight_decay=0.1)
    _run(ob, pb, range(5))
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in pb], "opt": ob.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    pc = [torch.nn.Parameter(t.clone()) for t in ckpt["params"]]
    oc = AuON(pc, lr=0.05, weight_decay=0.1)
    oc.load_state_dict(ckpt["opt"])
    _run(oc, pc, range(5, 10))
    for x, y in zip(pa, pc, strict=True):
        assert torch.equal(x, y)


def test_state_dict_round_trip_and_deepcopy() -> None:
    ps = _mixed_params(10)
    opt = AuON(ps, lr=0.05)
    _run(opt, ps, range(2))
    sd = copy.deepcopy(opt.state_dict())
    opt2 = AuON(ps, lr=0.1)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.05
    for p in ps:
        assert torch.equal(opt2.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])


def test_a_checkpoint_of_the_original_optimizer_loads() -> None:
    # The original package's AuON saved groups with lr, momentum, weight_decay and gamma only,
    # and a state of one "momentum_buffer" per parameter.
    pa = _mixed_params(11)
    oa = AuON(pa, lr=0.05, weight_decay=0.1, variant="repo")
    _run(oa, pa, range(3))
    sd = copy.deepcopy(oa.state_dict())
    original = {
        "state": {i: {"momentum_buffer": st["momentum_buffer"]} for i, st in sd["state"].items()},
        "param_groups": [
            {k: g[k] for k in ("lr", "momentum", "weight_decay", "params")} | {"gamma": 1.5}
            for g in sd["param_groups"]
        ],
    }
    pb = [torch.nn.Parameter(p.detach().clone()) for p in pa]
    ob = AuON(pb, lr=0.05, weight_decay=0.1, variant="repo")
    ob.load_state_dict(original)
    assert ob.param_groups[0]["variant"] == "repo"  # filled from the constructor
    assert ob.param_groups[0]["gamma"] == 1.5  # kept from the checkpoint
    _run(oa, pa, range(3, 6))
    _run(ob, pb, range(3, 6))
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y)
    assert all(int(ob.state[p]["nonfinite_steps"]) == 0 for p in pb)


def test_bf16_parameters() -> None:
    ps = _mixed_params(11, torch.bfloat16)
    ref = [torch.nn.Parameter(p.detach().float()) for p in ps]
    o = AuON(ps, lr=0.05)
    oref = AuON(ref, lr=0.05)
    for step in range(3):
        torch.manual_seed(step)
        for p, q in zip(ps, ref, strict=True):
            g = torch.randn_like(q)
            p.grad, q.grad = g.bfloat16(), g.bfloat16().float()
        o.step()
        oref.step()
    for p, q in zip(ps, ref, strict=True):
        assert p.dtype == torch.bfloat16 and o.state[p]["momentum_buffer"].dtype == torch.bfloat16
        torch.testing.assert_close(p, q.bfloat16())


def test_closure_maximize_and_tensor_lr() -> None:
    torch.manual_seed(12)
    w = torch.nn.Parameter(torch.randn(5, 4))
    x = torch.randn(3, 5)

    def closure() -> float:
        w.grad = None
        loss = (x @ w).square().mean()
        loss.backward()
        return float(loss.detach())

    opt = AuON([w], lr=torch.tensor(0.05))
    assert isinstance(opt.step(closure), float)
    # maximize flips the gradient
    a = torch.nn.Parameter(torch.ones(4, 4))
    b = torch.nn.Parameter(torch.ones(4, 4))
    g = torch.randn(4, 4)
    oa, ob = AuON([a], lr=0.1, maximize=True), AuON([b], lr=0.1)
    a.grad, b.grad = g, -g
    oa.step()
    ob.step()
    torch.testing.assert_close(a, b)


def test_per_group_overrides() -> None:
    a = torch.nn.Parameter(torch.zeros(4, 4))
    b = torch.nn.Parameter(torch.zeros(4, 4))
    opt = AuON(
        [{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.0, adjust_lr_fn="unit"
    )
    g = torch.randn(4, 4)
    a.grad, b.grad = g, g.clone()
    opt.step()
    torch.testing.assert_close(b.detach(), 5 * a.detach())


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skip_keeps_momentum_and_equals_propagate_when_finite(
    nesterov: bool, dtype: torch.dtype
) -> None:
    torch.manual_seed(13)
    a = torch.nn.Parameter(torch.randn(6, 6, dtype=dtype))
    b = torch.nn.Parameter(a.detach().clone())
    oa = AuON([a], lr=0.1, nesterov=nesterov, weight_decay=0.1)
    ob = AuON([b], lr=0.1, nesterov=nesterov, weight_decay=0.1, nonfinite="propagate")
    for _ in range(3):
        g = torch.randn(6, 6, dtype=dtype)
        a.grad, b.grad = g, g.clone()
        oa.step()
        ob.step()
    ma, mb = oa.state[a]["momentum_buffer"], ob.state[b]["momentum_buffer"]
    if dtype == torch.bfloat16:  # low precision keeps the direct two-lerp form: the same ops
        assert torch.equal(a, b) and torch.equal(ma, mb)
    else:  # fp32 "skip" forms the look-ahead as lerp(g, m, β²) in one op: rounding differs
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(ma, mb)
    m0, a0 = oa.state[a]["momentum_buffer"].clone(), a.detach().clone()
    a.grad = torch.full((6, 6), float("inf"), dtype=dtype)
    oa.step()
    assert torch.equal(oa.state[a]["momentum_buffer"], m0) and torch.equal(a.detach(), a0)
