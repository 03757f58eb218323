"""Newton–Schulz orthogonalisation against the scalar polynomial, the SVD polar factor and Muon."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptnn_core import (
    KELLER_COEFFICIENTS,
    POLAR_EXPRESS_COEFFICIENTS,
    matrix_shape,
    newton_schulz,
    newton_schulz_flops,
    orthogonalize,
)

F64 = torch.float64
Triple = tuple[float, float, float]


def _p(s: torch.Tensor, coeffs: Sequence[Triple]) -> torch.Tensor:
    """Apply the scalar quintics p(σ) = aσ + bσ³ + cσ⁵ in sequence."""
    for a, b, c in coeffs:
        s = a * s + b * s**3 + c * s**5
    return s


def _svdvals(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(x.double())


def _with_singular_values(s: torch.Tensor, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """An m×n float64 matrix U diag(s) Vᵀ with random orthonormal U, V."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    k = s.numel()
    return u[:, :k] @ torch.diag(s) @ v[:, :k].T


def _keller(steps: int = 5) -> list[Triple]:
    return [KELLER_COEFFICIENTS] * steps


# --- scalar facts (spec §2) ------------------------------------------------------------------


def test_coefficient_tables() -> None:
    assert KELLER_COEFFICIENTS == (3.4445, -4.7750, 2.0315)
    assert len(POLAR_EXPRESS_COEFFICIENTS) == 5
    assert POLAR_EXPRESS_COEFFICIENTS[0] == (
        8.156554524902461,
        -22.48329292557795,
        15.878769915207462,
    )
    assert POLAR_EXPRESS_COEFFICIENTS[4] == (
        2.3465413258596377,
        -1.7097828382687081,
        0.42323551169305323,
    )


def test_scalar_facts_keller_and_polar_express() -> None:
    one = torch.tensor(1.0, dtype=F64)
    assert _p(one, _keller(1)).item() == pytest.approx(0.701, abs=1e-12)
    grid = torch.linspace(0, 1, 200_001, dtype=F64)
    assert _p(grid, _keller(1)).max().item() == pytest.approx(1.2024, abs=1e-4)

    def band(lo: float, coeffs: Sequence[Triple], prescale: float) -> tuple[float, float]:
        s = torch.cat(
            [
                torch.logspace(math.log10(lo), 0, 100_001, dtype=F64),
                torch.linspace(lo, 1, 100_001, dtype=F64),
            ]
        )
        out = _p(s / prescale, coeffs)
        return out.min().item(), out.max().item()

    assert band(1e-2, _keller(), 1.0) == pytest.approx((0.6818, 1.1344), abs=1e-4)
    assert band(1e-3, _keller(), 1.0) == pytest.approx((0.4705, 1.2024), abs=1e-4)
    assert band(1e-3, POLAR_EXPRESS_COEFFICIENTS, 1.02) == pytest.approx((0.8466, 1.1411), abs=1e-4)


def test_flops() -> None:
    assert newton_schulz_flops(768, 3072, 1) == 4 * 768**2 * 3072 + 2 * 768**3
    assert round(newton_schulz_flops(768, 3072, 1) / 1e9, 2) == 8.15
    assert newton_schulz_flops(3072, 768, 5) == newton_schulz_flops(768, 3072, 5)
    # Without the transpose the tall matrix would cost 87.0 GFLOP per step.
    assert round((4 * 3072**2 * 768 + 2 * 3072**3) / 1e9, 1) == 87.0
    assert newton_schulz_flops(3, 4, 0) == 0
    with pytest.raises(ValueError, match="steps"):
        newton_schulz_flops(3, 4, -1)
    with pytest.raises(TypeError, match="m must be an int"):
        newton_schulz_flops(3.0, 4, 1)  # type: ignore[arg-type]


def test_matrix_shape() -> None:
    assert matrix_shape(torch.empty(8, 4, 3, 3)) == (8, 36)
    assert matrix_shape(torch.Size([5, 7])) == (5, 7)
    assert matrix_shape((6,)) == (6, 1)
    with pytest.raises(ValueError, match="p must have at least one dimension"):
        matrix_shape(torch.tensor(1.0))


# --- NS against the scalar polynomial --------------------------------------------------------


def test_diagonal_matrix_equals_five_scalar_applications() -> None:
    sigma = torch.tensor([1e-3, 1e-2, 0.1, 1.0], dtype=F64)
    x = torch.diag(sigma)
    out = newton_schulz(x, compute_dtype=F64)
    s0 = sigma / (torch.linalg.norm(sigma) + 1e-7)
    torch.testing.assert_close(out, torch.diag(_p(s0, _keller())))
    # The same through random rotations U diag(σ) Vᵀ (rectangular).
    y = _with_singular_values(sigma, 6, 9, seed=1)
    out_sv = _svdvals(newton_schulz(y, compute_dtype=F64))[:4]
    torch.testing.assert_close(out_sv.sort().values, _p(s0, _keller()).sort().values)
    # σ₀ ≥ 1e-3 after normalisation only partly; the in-band entries obey §2's ranges.
    s_out = _p(s0, _keller())
    assert ((s_out >= 0.4705 - 1e-4) | (s0 < 1e-3)).all()
    assert (s_out <= 1.2024 + 1e-4).all()
    assert ((s_out >= 0.6818 - 1e-4) | (s0 < 1e-2)).all()


@pytest.mark.parametrize("shape", [(64, 256), (256, 64)])
def test_gaussian_singular_values_band(shape: tuple[int, int]) -> None:
    g = torch.randn(*shape)
    s64 = _svdvals(newton_schulz(g.double(), compute_dtype=F64))
    assert s64.min() >= 0.68
    assert s64.max() <= 1.14
    sb = _svdvals(newton_schulz(g))  # default: bf16 compute, fp32 out
    assert sb.min() >= 0.66
    assert sb.max() <= 1.16


def test_polar_express_band_float64() -> None:
    s = torch.logspace(-2.5, 0, 16, dtype=F64)
    x = _with_singular_values(s, 24, 40, seed=2)
    s0 = s / (1.02 * torch.linalg.norm(s) + 1e-7)
    assert s0.min() >= 1e-3  # precondition of the band
    out = _svdvals(newton_schulz(x, coefficients="polar_express", compute_dtype=F64))[:16]
    assert out.min() >= 0.84
    assert out.max() <= 1.15
    torch.testing.assert_close(out.sort().values, _p(s0, POLAR_EXPRESS_COEFFICIENTS).sort().values)


def test_convergent_variant_matches_svd_polar_factor() -> None:
    s = torch.linspace(0.3, 1.0, 12, dtype=F64)
    x = _with_singular_values(s, 12, 20, seed=3)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    polar = u @ vh
    out = newton_schulz(x, 40, coefficients=(2.0, -1.5, 0.5), compute_dtype=F64)
    torch.testing.assert_close(out, polar, rtol=0, atol=1e-6)
    # Keller's coefficients deliberately do not converge to the polar factor.
    keller = newton_schulz(x, 40, compute_dtype=F64)
    assert (keller - polar).abs().max() > 1e-2


def test_keller_is_close_to_polar_factor_only_within_its_band() -> None:
    g = torch.randn(32, 48, dtype=F64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    out = newton_schulz(g, compute_dtype=F64)
    # U p(Σ) Vᵀ: projecting onto the singular vectors recovers a diagonal within the band.
    d = u.T @ out @ vh.T
    diag = torch.diagonal(d)
    torch.testing.assert_close(d, torch.diag(diag), rtol=0, atol=1e-10)
    assert diag.min() >= 0.68
    assert diag.max() <= 1.14


# --- layouts: tall, batched, flatten ---------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(96, 40), (256, 64), (2, 33, 17)])
def test_tall_equals_transpose_of_wide_float64(seed: int, shape: tuple[int, ...]) -> None:
    # A tall matrix is processed as the transposed view of a wide one (the products take the
    # transposed operand natively, as in torch.optim.Muon), so the two routes are the same
    # computation up to the summation order inside the BLAS kernels: float64 rounding level.
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = newton_schulz(x, compute_dtype=F64)
    ref = newton_schulz(x.mT.contiguous(), compute_dtype=F64).mT
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert out.shape == shape


@pytest.mark.parametrize("compute_dtype", [F64, torch.bfloat16])
def test_batched_equals_loop(compute_dtype: torch.dtype) -> None:
    x = torch.randn(4, 32, 48)
    out = newton_schulz(x, compute_dtype=compute_dtype)
    ref = torch.stack([newton_schulz(x[i], compute_dtype=compute_dtype) for i in range(4)])
    assert out.shape == (4, 32, 48)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_batched_multiple_leading_dims_and_tall() -> None:
    x = torch.randn(2, 3, 20, 8, dtype=F64)
    out = newton_schulz(x, coefficients="polar_express", compute_dtype=F64)
    ref = torch.stack(
        [
            torch.stack(
                [
                    newton_schulz(x[i, j], coefficients="polar_express", compute_dtype=F64)
                    for j in range(3)
                ]
            )
            for i in range(2)
        ]
    )
    torch.testing.assert_close(out, ref)


def test_orthogonalize_flatten_and_batch() -> None:
    g = torch.randn(8, 4, 3, 3)
    out = orthogonalize(g)
    assert out.shape == g.shape
    torch.testing.assert_close(out, newton_schulz(g.reshape(8, 36)).reshape(8, 4, 3, 3))
    out_b = orthogonalize(g, flatten=False, compute_dtype=F64)
    torch.testing.assert_close(out_b, newton_schulz(g, compute_dtype=F64))
    m = torch.randn(5, 7)
    torch.testing.assert_close(orthogonalize(m, steps=3), newton_schulz(m, 3))


def test_non_contiguous_input() -> None:
    x = torch.randn(48, 32, dtype=F64)[::2]  # (24, 32), row stride 64
    torch.testing.assert_close(
        newton_schulz(x, compute_dtype=F64), newton_schulz(x.contiguous(), compute_dtype=F64)
    )


# --- dtypes, zeros, coefficient forms --------------------------------------------------------


def test_dtypes() -> None:
    x = torch.randn(16, 24, dtype=torch.bfloat16)
    out = newton_schulz(x)
    assert out.dtype == torch.bfloat16
    assert newton_schulz(x, out_dtype=torch.float32).dtype == torch.float32
    assert newton_schulz(x.float(), compute_dtype=torch.float32).dtype == torch.float32
    h = newton_schulz(torch.randn(16, 24) * 1e3, compute_dtype=torch.float16)
    assert torch.isfinite(h).all()
    assert _svdvals(h).max() <= 1.16


@pytest.mark.parametrize("compute_dtype", [torch.bfloat16, torch.float32, F64])
@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (3, 4, 6)])
def test_zero_input_gives_zeros(compute_dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    out = newton_schulz(torch.zeros(shape), compute_dtype=compute_dtype)
    assert torch.equal(out, torch.zeros(shape))


def test_coefficient_forms_agree() -> None:
    x = torch.randn(10, 14, dtype=F64)
    ref = newton_schulz(x, 4, compute_dtype=F64)
    torch.testing.assert_close(
        newton_schulz(x, 4, coefficients=KELLER_COEFFICIENTS, compute_dtype=F64), ref
    )
    torch.testing.assert_close(
        newton_schulz(x, 4, coefficients=[list(KELLER_COEFFICIENTS)] * 4, compute_dtype=F64), ref
    )
    pe = newton_schulz(x, 3, coefficients="polar_express", compute_dtype=F64)
    torch.testing.assert_close(
        newton_schulz(
            x, 3, coefficients=POLAR_EXPRESS_COEFFICIENTS[:3], compute_dtype=F64, prescale=1.02
        ),
        pe,
    )
    # The 1.02 pre-scale is the default only for "polar_express".
    assert not torch.allclose(
        newton_schulz(x, 3, coefficients=POLAR_EXPRESS_COEFFICIENTS[:3], compute_dtype=F64), pe
    )


# --- errors ----------------------------------------------------------------------------------


def test_errors() -> None:
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"X must have at least 2 dimensions"):
        newton_schulz(torch.randn(6))
    with pytest.raises(ValueError, match="X must have a real floating-point dtype"):
        newton_schulz(torch.ones(4, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="X must have a real floating-point dtype"):
        newton_schulz(torch.ones(4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="X must have a real floating-point dtype"):
        newton_schulz(torch.ones(4, 6, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"X must be a torch\.Tensor"):
        newton_schulz([[1.0, 2.0]])  # type: ignore[arg-type]
    for steps in (0, 100, -1):
        with pytest.raises(ValueError, match=r"steps must be in \[1, 99\]"):
            newton_schulz(x, steps)
    with pytest.raises(ValueError, match="polar_express"):
        newton_schulz(x, 6, coefficients="polar_express")
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(x, coefficients="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(x, coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(x, coefficients=(1.0, 2.0, float("nan")))
    with pytest.raises(ValueError, match="coefficients holds 2 triples but steps=5"):
        newton_schulz(x, coefficients=[KELLER_COEFFICIENTS] * 2)
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(x, 2, coefficients=[KELLER_COEFFICIENTS, (1.0, 2.0)])
    with pytest.raises(ValueError, match="compute_dtype"):
        newton_schulz(x, compute_dtype=torch.int32)
    with pytest.raises(ValueError, match="out_dtype"):
        newton_schulz(x, out_dtype=torch.int32)
    with pytest.raises(ValueError, match="eps"):
        newton_schulz(x, eps=-1.0)
    with pytest.raises(ValueError, match="prescale"):
        newton_schulz(x, prescale=0.0)
    with pytest.raises(ValueError, match="G must have at least 2 dimensions"):
        orthogonalize(torch.randn(5))


# --- the input is never modified ------------------------------------------------------------


@pytest.mark.parametrize(
    "layout", ["wide", "tall", "tall_stored_transposed", "strided_slice", "batched"]
)
@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_input_is_not_modified(layout: str, compute: torch.dtype) -> None:
    # The normalisation scales its working copy in place; every layout must leave X untouched,
    # including the ones where no copy is needed (X already contiguous in the compute layout).
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(24, 40, generator=gen).to(compute)
    x = {
        "wide": base,
        "tall": base.mT.contiguous(),
        "tall_stored_transposed": base.mT,
        "strided_slice": base[:, ::2],
        "batched": torch.stack([base, 2 * base]),
    }[layout]
    before = x.clone()
    out = newton_schulz(x, compute_dtype=compute)
    assert torch.equal(x, before)
    assert out.shape == x.shape


# --- oracle: torch.optim.Muon ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 48), (300, 77), (77, 300)])
def test_matches_torch_optim_muon(shape: tuple[int, int]) -> None:
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    g = torch.randn(*shape)
    p = torch.nn.Parameter(torch.zeros(*shape))
    p.grad = g.clone()
    opt = torch.optim.Muon([p], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False)
    opt.step()
    rows, cols = matrix_shape(g)
    expected = -newton_schulz(g) * math.sqrt(max(1.0, rows / cols))
    # The spec allows bf16 rounding differences; the implementations agree bit for bit.
    assert torch.equal(p.detach(), expected)


# --- hypothesis over shapes and dtypes -------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    m=st.integers(1, 24),
    n=st.integers(1, 24),
    dtype=st.sampled_from([torch.float32, F64, torch.bfloat16, torch.float16]),
    compute=st.sampled_from([torch.bfloat16, torch.float32, F64]),
    scale=st.sampled_from([1e-6, 1.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_shapes_and_dtypes(
    batch: list[int],
    m: int,
    n: int,
    dtype: torch.dtype,
    compute: torch.dtype,
    scale: float,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*batch, m, n, generator=gen) * scale).to(dtype)
    out = newton_schulz(x, compute_dtype=compute)
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    # max p on [0, 1] is 1.2024 and p maps [0, 1.2024] into [0, 1.2024]; slack for rounding.
    assert _svdvals(out).max() <= 1.2024 + (0.03 if compute == torch.bfloat16 else 1e-3)
    flipped = newton_schulz(x.mT, compute_dtype=compute).mT
    if compute == F64 and dtype != torch.float16:
        # One of the two is transposed internally (m ≠ n) or takes the XᵀX route (square): the
        # results agree up to float64 rounding.
        torch.testing.assert_close(out, flipped)
