"""Energy statistics: mean_square, rms, masked_sum_count, masked_mean, energy_ratio."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptnn_core import energy_ratio, masked_mean, masked_sum_count, mean_square, rms

LOW_PRECISION = [torch.float16, torch.bfloat16]
ALL_FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _naive_ms(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Float64 reference: plain Python-level formula sum(x²)/n."""
    x64 = x.double()
    return (x64 * x64).sum(dim) / x64.shape[dim]


# --- mean_square / rms ------------------------------------------------------------------------


def test_mean_square_oracle_14_over_3() -> None:
    out = mean_square(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(out, torch.tensor(14.0 / 3.0))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_mean_square_low_precision_returns_fp32_equal_to_float64(dtype: torch.dtype) -> None:
    x = (torch.randn(4, 7, 96) * 3).to(dtype)
    out = mean_square(x)
    assert out.dtype == torch.float32
    assert out.shape == (4, 7)
    # fp32 tolerance against the float64 reference computed from the same (rounded) inputs.
    torch.testing.assert_close(out.double(), _naive_ms(x), rtol=1.3e-6, atol=1e-5)


def test_mean_square_float64_stays_float64() -> None:
    x = torch.randn(3, 5, dtype=torch.float64)
    out = mean_square(x, dim=0, keepdim=True)
    assert out.dtype == torch.float64
    assert out.shape == (1, 5)
    torch.testing.assert_close(out, _naive_ms(x, 0).unsqueeze(0))


def test_mean_square_tuple_dim_and_keepdim() -> None:
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(mean_square(x, dim=(1, 2)), (x.double() ** 2).mean((1, 2)).float())
    assert mean_square(x, dim=(-1, 0), keepdim=True).shape == (1, 3, 1)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_fp16_bf16_row_with_rms_1000_stays_finite(dtype: torch.dtype) -> None:
    x = torch.full((2, 512), 1000.0, dtype=dtype)
    ms = mean_square(x)
    assert torch.isfinite(ms).all()
    torch.testing.assert_close(ms, torch.full((2,), 1e6))
    torch.testing.assert_close(rms(x), torch.full((2,), 1000.0))
    # The originals cast the energy back to fp16 and overflow (1e6 > 65504); we do not.
    assert not torch.isfinite(x.float().square().mean(-1).to(torch.float16)).all()


def test_rms_matches_formula_and_eps() -> None:
    x = torch.randn(3, 10)
    torch.testing.assert_close(rms(x), x.double().square().mean(-1).sqrt().float())
    torch.testing.assert_close(rms(torch.zeros(2, 4), eps=1e-6), torch.full((2,), 1e-3))


# --- masked_sum_count / masked_mean ------------------------------------------------------------


def test_masked_sum_count_values_and_dtypes() -> None:
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float16)
    m = torch.tensor([[True, False, True], [False, False, True]])
    s, c = masked_sum_count(v, m)
    assert s.dtype == c.dtype == torch.float32
    assert s.shape == c.shape == ()
    torch.testing.assert_close(s, torch.tensor(10.0))
    torch.testing.assert_close(c, torch.tensor(3.0))
    s, c = masked_sum_count(v)
    torch.testing.assert_close(s, torch.tensor(21.0))
    torch.testing.assert_close(c, torch.tensor(6.0))


def test_masked_sum_ignores_nan_in_masked_out_entries() -> None:
    v = torch.tensor([1.0, float("nan"), float("inf"), 2.0])
    m = torch.tensor([True, False, False, True])
    torch.testing.assert_close(masked_mean(v, m), torch.tensor(1.5))


def test_masked_mean_all_false_is_nan() -> None:
    out = masked_mean(torch.ones(3, 4), torch.zeros(3, 4, dtype=torch.bool))
    assert out.shape == ()
    assert torch.isnan(out)


# --- energy_ratio ------------------------------------------------------------------------------


def test_energy_ratio_reductions_match_naive_formulas() -> None:
    y, x = torch.randn(3, 5, 16) * 2, torch.randn(3, 5, 16)
    eps = 1e-8
    r = _naive_ms(y) / (_naive_ms(x) + eps)
    torch.testing.assert_close(energy_ratio(y, x, reduction="none"), r.float())
    torch.testing.assert_close(energy_ratio(y, x), r.mean().float())
    rom = _naive_ms(y).mean() / (_naive_ms(x).mean() + eps)
    torch.testing.assert_close(energy_ratio(y, x, reduction="ratio_of_means"), rom.float())


def test_energy_ratio_other_dim() -> None:
    y, x = torch.randn(6, 4, 3), torch.randn(6, 4, 3)
    r = _naive_ms(y, 0) / (_naive_ms(x, 0) + 1e-8)
    torch.testing.assert_close(energy_ratio(y, x, dim=0, reduction="none"), r.float())
    m = torch.rand(4, 3) > 0.3
    torch.testing.assert_close(energy_ratio(y, x, dim=0, mask=m), r[m].mean().float())


def test_energy_ratio_max_ratio_clamps_per_token() -> None:
    x = torch.ones(2, 4)
    y = torch.stack([torch.full((4,), 10.0), torch.full((4,), 0.5)])  # ratios 100 and 0.25
    torch.testing.assert_close(
        energy_ratio(y, x, reduction="none", max_ratio=4.0), torch.tensor([4.0, 0.25])
    )
    torch.testing.assert_close(energy_ratio(y, x, max_ratio=4.0), torch.tensor(2.125))


@pytest.mark.parametrize("dtype", [*LOW_PRECISION, torch.float32])
def test_energy_ratio_zero_x_is_finite(dtype: torch.dtype) -> None:
    y = torch.randn(2, 3, 8).to(dtype)
    x = torch.zeros(2, 3, 8, dtype=dtype)
    for reduction in ("none", "mean", "ratio_of_means"):
        out = energy_ratio(y, x, reduction=reduction)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all(), reduction
    # eps = 1e-8 is added in fp32: it would underflow to 0 in fp16.
    assert torch.tensor(1e-8, dtype=torch.float16) == 0


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_energy_ratio_large_values_low_precision(dtype: torch.dtype) -> None:
    x = torch.full((2, 3, 64), 1000.0, dtype=dtype)
    y = torch.full((2, 3, 64), 2000.0, dtype=dtype)
    torch.testing.assert_close(energy_ratio(y, x), torch.tensor(4.0))


@pytest.mark.parametrize("reduction", ["mean", "ratio_of_means"])
def test_padded_tokens_change_nothing(reduction: str) -> None:
    y, x = torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    ref = energy_ratio(y, x, mask=mask, reduction=reduction)  # type: ignore[arg-type]
    y2, x2 = y.clone(), x.clone()
    y2[~mask] = float("nan")
    x2[~mask] = 1e4
    out = energy_ratio(y2, x2, mask=mask, reduction=reduction)  # type: ignore[arg-type]
    torch.testing.assert_close(out, ref)
    # ...and equals the ratio computed on the valid tokens alone.
    flat_y, flat_x = y[mask], x[mask]
    torch.testing.assert_close(ref, energy_ratio(flat_y, flat_x, reduction=reduction))  # type: ignore[arg-type]


def test_energy_ratio_all_false_mask_is_nan() -> None:
    y, x = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.isnan(energy_ratio(y, x, mask=torch.zeros(2, 3, dtype=torch.bool)))


# --- gradcheck ---------------------------------------------------------------------------------


def test_gradcheck_mean_square_and_rms() -> None:
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mean_square(t), (x,))
    assert torch.autograd.gradcheck(lambda t: mean_square(t, dim=0, keepdim=True), (x,))
    assert torch.autograd.gradcheck(lambda t: rms(t, eps=1e-3), (x,))


@pytest.mark.parametrize("reduction", ["none", "mean", "ratio_of_means"])
def test_gradcheck_energy_ratio(reduction: str) -> None:
    y = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.autograd.gradcheck(
        lambda a, b: energy_ratio(a, b, mask=mask, reduction=reduction),  # type: ignore[arg-type]
        (y, x),
    )


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_mean_square_rejects_non_real_float(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="x must have a real floating-point dtype"):
        mean_square(torch.ones(3, dtype=dtype))


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="empty reduced dimension"):
        mean_square(torch.ones(3, 0))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        mean_square([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim"):
        mean_square(torch.ones(3), dim=1)
    with pytest.raises(ValueError, match="eps"):
        rms(torch.ones(3), eps=-1.0)
    with pytest.raises(ValueError, match="mask must have shape"):
        masked_sum_count(torch.ones(3, 4), torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        masked_sum_count(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="values must have a real floating-point dtype"):
        masked_mean(torch.ones(3, dtype=torch.int64))
    y, x = torch.ones(2, 3, 4), torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match="same shape"):
        energy_ratio(y, torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="must not be empty"):
        energy_ratio(torch.ones(0, 4), torch.ones(0, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
        energy_ratio(y, x, mask=torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        energy_ratio(y, x, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        energy_ratio(y, x, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_ratio"):
        energy_ratio(y, x, max_ratio=0.0)
    with pytest.raises(ValueError, match="y must have a real floating-point dtype"):
        energy_ratio(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3))


# --- hypothesis --------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    dtype=st.sampled_from(ALL_FLOATS),
    scale=st.sampled_from([1e-3, 1.0, 300.0]),
    data=st.data(),
)
def test_hypothesis_mean_square_and_ratio_vs_float64(
    shape: list[int], dtype: torch.dtype, scale: float, data: st.DataObject
) -> None:
    seed = data.draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = (torch.randn(*shape, generator=gen) * scale).to(dtype)
    y = (torch.randn(*shape, generator=gen) * scale).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    # fp32 against float64 from the same inputs: a few ulps (≤ 6 terms, a division); relative
    # only, since at scale 1e-3 the energies are ~1e-6 and the default atol would hide them
    tol = {"rtol": 4e-6, "atol": 0.0} if acc == torch.float32 else {}
    ms = mean_square(x, dim=dim)
    assert ms.dtype == acc
    assert torch.isfinite(ms).all()
    torch.testing.assert_close(ms.double(), _naive_ms(x, dim), **tol)  # type: ignore[arg-type]
    token_shape = [s for i, s in enumerate(shape) if i != dim % len(shape)]
    mask = torch.rand(token_shape, generator=gen) > 0.3
    r = _naive_ms(y, dim) / (_naive_ms(x, dim) + 1e-8)
    out = energy_ratio(y, x, dim=dim, mask=mask)
    assert out.dtype == acc
    if mask.any():
        torch.testing.assert_close(out.double(), r[mask].mean(), **tol)  # type: ignore[arg-type]
    else:
        assert torch.isnan(out)
