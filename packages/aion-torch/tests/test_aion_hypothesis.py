"""Property tests of the default-mode ``AionResidual`` over shapes, dtypes, magnitudes and masks.

Each example is one training forward of a fresh module (γ = 0.99, EMA from 1.0) on random
``(..., D)`` inputs with 2 to 4 dims, in fp32 / fp16 / bf16, with stream and branch magnitudes
drawn independently (zeros and 1e-10 … 1e10 in fp32 and bf16; fp16 within its range) and an
optional padding mask. α is checked against a float64 re-derivation of spec §3.1 written here.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from aion_torch import AionResidual

_WIDE = [0.0, 1e-10, 1e-5, 1.0, 1e5, 1e10]  # fp32 and bf16 (fp32's exponent range)
_FP16 = [0.0, 1e-3, 1.0, 1e2]  # fp16: E[x²] of 1e2-scale rows is still finite in fp32
_MAGNITUDES = {torch.float32: _WIDE, torch.bfloat16: _WIDE, torch.float16: _FP16}
_ALPHA0, _BETA, _GAMMA, _EPS, _MAX_RATIO = 0.1, 0.05, 0.99, 1e-8, 1e4


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor | None]:
    shape = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    mx = draw(st.sampled_from(_MAGNITUDES[dtype]))
    my = draw(st.sampled_from(_MAGNITUDES[dtype]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = (mx * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)
    y = (my * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)
    mask = None
    if draw(st.booleans()):
        mask = torch.rand(shape[:-1], generator=gen) < draw(st.sampled_from([0.0, 0.5, 0.9]))
    return x, y, mask


def _alpha_float64(x: Tensor, y: Tensor, mask: Tensor | None) -> float:
    """Spec §3.1 in float64: clamped per-token ratios, masked mean, one EMA step, α."""
    ex = x.double().square().mean(-1)
    ey = y.double().square().mean(-1)
    r = (ey / (ex + _EPS)).clamp(0.0, _MAX_RATIO)
    valid = torch.ones_like(r, dtype=torch.bool) if mask is None else mask
    stat = float(r[valid].mean()) if bool(valid.any()) else math.nan
    ema = _GAMMA * 1.0 + (1 - _GAMMA) * stat if math.isfinite(stat) else 1.0
    # the fp32 parameters, as the module holds them
    a0, b = float(torch.tensor(_ALPHA0)), float(torch.tensor(_BETA))
    return a0 / (1 + b * ema)


@settings(max_examples=50, deadline=None)
@given(case=_cases())
def test_training_forward_invariants(case: tuple[Tensor, Tensor, Tensor | None]) -> None:
    x, y, mask = case
    m = AionResidual()
    out = m(x, y, mask=mask)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.isfinite(out).all()
    alpha = m.alpha_cached
    assert alpha.dtype == torch.float32 and 0.0 < float(alpha) <= float(m.alpha0.detach())
    # fp32 α against float64: a few roundings of α itself; the statistic's fp32 error enters
    # scaled by β(1 − γ)/(1 + β·r̄) ≈ 5e-4. Relative only (α ≈ 0.1).
    torch.testing.assert_close(
        alpha, torch.tensor(_alpha_float64(x, y, mask)), rtol=1.3e-6, atol=0.0
    )
    assert int(m.num_skipped) == int(mask is not None and not bool(mask.any()))


@settings(max_examples=30, deadline=None)
@given(case=_cases(), garbage=st.sampled_from(["nan", "inf", "max", "zero"]))
def test_masked_out_tokens_do_not_change_alpha(
    case: tuple[Tensor, Tensor, Tensor | None], garbage: str
) -> None:
    """Whatever padded positions hold (NaN, Inf, the dtype max, 0), α is bit-for-bit the same."""
    x, y, mask = case
    fill = {"nan": math.nan, "inf": math.inf, "max": torch.finfo(x.dtype).max, "zero": 0.0}[garbage]
    if mask is None:
        mask = torch.ones(x.shape[:-1], dtype=torch.bool)
        mask.view(-1)[0] = False
    clean, dirty = AionResidual(), AionResidual()
    clean(x, y, mask=mask)
    pad = ~mask.unsqueeze(-1).expand_as(x)
    xd = x.masked_fill(pad, fill)
    yd = y.masked_fill(pad, -fill)
    dirty(xd, yd, mask=mask)
    assert torch.equal(dirty.alpha_cached, clean.alpha_cached)
    assert torch.equal(dirty.ratio_ema, clean.ratio_ema)
    assert int(dirty.num_skipped) == int(clean.num_skipped)
