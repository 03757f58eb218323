"""AuON repo variant: bitwise float32 equality with the refactored repository's formulas."""

from __future__ import annotations

import math

import torch

from auon import AuON, HybridAuON, cosh_factor


def _ref_repo_step(
    p: torch.Tensor,
    m: torch.Tensor,
    g: torch.Tensor,
    *,
    lr: float,
    beta: float,
    wd: float,
    wd_mul: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The repository's README pseudo-code, op for op, in float32 (re-derived, not library code)."""
    p = p * (1 - lr * wd * wd_mul)
    m = beta * m + (1 - beta) * g
    G = (1 - beta) * g + beta * m
    s = torch.linalg.vector_norm(G)
    X = gamma * G / (s + 1e-7)
    r = torch.sqrt(torch.mean(torch.cosh(X) ** 2))
    p = p - lr * (G / (r + 1e-8))
    return p, m


def test_repo_bitwise_over_20_steps_with_zero_grad_and_wd_mul() -> None:
    torch.manual_seed(0)
    shapes = [(16, 12), (7,), (), (3, 4, 5)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    params[1].wd_mul = 0.5  # type: ignore[attr-defined]
    refs = [p.detach().clone() for p in params]
    moms = [torch.zeros_like(p) for p in refs]
    opt = AuON(params, lr=0.03, momentum=0.9, weight_decay=0.2, variant="repo")
    for step in range(20):
        torch.manual_seed(10 + step)
        grads = [torch.randn(s) if step % 7 != 3 else torch.zeros(s) for s in shapes]
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            p.grad = g
            refs[i], moms[i] = _ref_repo_step(
                refs[i],
                moms[i],
                g,
                lr=0.03,
                beta=0.9,
                wd=0.2,
                wd_mul=0.5 if i == 1 else 1.0,
                gamma=1.5,
            )
        opt.step()
    for p, r, m in zip(params, refs, moms, strict=True):
        assert torch.equal(p.detach(), r)
        assert torch.equal(opt.state[p]["momentum_buffer"], m)


def test_repo_zero_grad_applies_decay_only() -> None:
    p = torch.nn.Parameter(torch.ones(3, 3))
    opt = AuON([p], lr=0.1, weight_decay=0.5, variant="repo")
    p.grad = torch.zeros(3, 3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, 3) * (1 - 0.1 * 0.5 * 1.0))


def test_scalar_r_is_cosh_gamma() -> None:
    r = cosh_factor(torch.tensor([[0.37]]), 1.5)
    torch.testing.assert_close(r, torch.tensor(math.cosh(1.5)))
    assert abs(r.item() - 2.3524) < 1e-4
    # the repo optimiser on a 0-D parameter: step = lr·G/(cosh 1.5 + 1e-8) with G = (1-β²)·g
    p = torch.nn.Parameter(torch.tensor(0.0))
    opt = AuON([p], lr=1.0, momentum=0.0, variant="repo")
    p.grad = torch.tensor(2.0)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor(-2.0 / math.cosh(1.5)))


def test_repo_is_sgd_nesterov_on_large_matrices() -> None:
    """Spec: 20-step relative parameter difference vs SGD-Nesterov ≈ 4.3e-6 at 512² (no shape factor)."""
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(512, 512) * 0.02)
    q = p.detach().clone()
    m = torch.zeros_like(q)
    opt = AuON([p], lr=0.01, variant="repo")
    for _ in range(20):
        g = torch.randn(512, 512)
        p.grad = g
        opt.step()
        m = 0.95 * m + 0.05 * g
        q = q - 0.01 * (0.05 * g + 0.95 * m)
    rel = (torch.linalg.vector_norm(p.detach() - q) / torch.linalg.vector_norm(q)).item()
    assert rel < 2e-5


def test_hybrid_repo_is_per_slice_on_3d() -> None:
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(3, 8, 16))
    slices = [torch.nn.Parameter(p.detach()[i].clone()) for i in range(3)]
    opt = HybridAuON([p], lr=0.1, momentum=0.0, variant="repo")
    g = torch.randn(3, 8, 16)
    p.grad = g
    opt.step()
    # Per-slice NS (fp32): the orthogonalised slices must each have singular values ≈ Keller's range.
    delta = (p.detach() - torch.stack([s.detach() for s in slices])) / -0.1
    for i in range(3):
        sv = torch.linalg.svdvals(delta[i])
        # divided by r ≈ 1 + O(1/N); each slice orthogonalised separately
        assert sv.min() > 0.5 and sv.max() < 1.3
