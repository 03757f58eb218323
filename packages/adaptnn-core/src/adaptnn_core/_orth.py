"""Batched quintic Newton–Schulz orthogonalisation, the core of Muon-style optimisers.

Each step maps a matrix ``X = U Σ Vᵀ`` to ``U p(Σ) Vᵀ`` with the odd quintic
``p(σ) = aσ + bσ³ + cσ⁵``, computed with three matrix products (``A = XXᵀ``,
``B = bA + cA²``, ``X ← aX + BX``). After normalising ``X`` by its Frobenius norm (so every
σ ≤ 1), a few steps push all singular values towards 1, approximating the polar factor ``UVᵀ``.

Coefficient sets:

* Keller Jordan's Muon triple ``(3.4445, −4.7750, 2.0315)``, used every step. It maximises the
  slope at 0 and deliberately does *not* converge: after 5 steps, σ₀ ∈ [1e-3, 1] lands in
  ≈ [0.47, 1.20] and σ₀ ∈ [1e-2, 1] in ≈ [0.68, 1.13].
* Polar Express (Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their
  Application to the Muon Algorithm"; values as used in KellerJordan/modded-nanogpt): one triple
  per step for at most 5 steps, with the pre-scale ``X / (1.02·‖X‖_F + eps)``; σ₀ ∈ [1e-3, 1]
  lands in ≈ [0.85, 1.14].

The products are fused in ``addmm``/``baddbmm`` form (``B = b·A + c·A·A`` and
``X = a·X + B·X`` are each one BLAS call with ``beta``/``alpha``), so the cost is that of the
matrix products themselves: ``4m²n + 2m³`` flops per step for ``m ≤ n`` (tall inputs are
handled as transposed views).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor

__all__ = [
    "KELLER_COEFFICIENTS",
    "POLAR_EXPRESS_COEFFICIENTS",
    "matrix_shape",
    "newton_schulz",
    "newton_schulz_flops",
    "orthogonalize",
]

_Triple: TypeAlias = tuple[float, float, float]

KELLER_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
"""Muon's quintic coefficients (KellerJordan/Muon), used for every step."""

POLAR_EXPRESS_COEFFICIENTS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
"""Polar Express coefficients, one triple per step for 5 steps (use with pre-scale 1.02)."""

_POLAR_EXPRESS_PRESCALE = 1.02

_CoefficientsArg: TypeAlias = (
    Literal["keller", "polar_express"] | Sequence[float] | Sequence[Sequence[float]]
)


def _is_real_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _as_triple(v: object) -> _Triple | None:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != 3:
        return None
    if not all(_is_real_number(e) for e in v):
        return None
    return (float(v[0]), float(v[1]), float(v[2]))


def _resolve_coefficients(coefficients: object, steps: int) -> tuple[_Triple, ...]:
    """Turn the ``coefficients`` argument into exactly ``steps`` (a, b, c) triples."""
    if isinstance(coefficients, str):
        if coefficients == "keller":
            return (KELLER_COEFFICIENTS,) * steps
        if coefficients == "polar_express":
            if steps > len(POLAR_EXPRESS_COEFFICIENTS):
                raise ValueError(
                    f'coefficients="polar_express" is defined for at most '
                    f"{len(POLAR_EXPRESS_COEFFICIENTS)} steps, got steps={steps}"
                )
            return POLAR_EXPRESS_COEFFICIENTS[:steps]
        raise ValueError(
            f'coefficients must be "keller", "polar_express", an (a, b, c) triple or a sequence '
            f"of `steps` triples, got {coefficients!r}"
        )
    if isinstance(coefficients, Sequence) and not isinstance(coefficients, bytes):
        triple = _as_triple(coefficients)
        if triple is not None:
            return (triple,) * steps
        if len(coefficients) > 0 and not any(_is_real_number(e) for e in coefficients):
            triples = [_as_triple(e) for e in coefficients]
            if all(t is not None for t in triples):
                if len(triples) != steps:
                    raise ValueError(
                        f"coefficients holds {len(triples)} triples but steps={steps}; "
                        "pass exactly one (a, b, c) triple per step"
                    )
                return tuple(t for t in triples if t is not None)
    raise ValueError(
        "coefficients must be an (a, b, c) triple of finite real numbers or a sequence of "
        f"`steps` such triples, got {coefficients!r}"
    )


def _check_matrix(X: object, name: str) -> Tensor:
    if not isinstance(X, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if X.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(X.shape)}"
        )
    if not X.is_floating_point():
        raise ValueError(
            f"{name} must have a real floating-point dtype, got {X.dtype} "
            "(integer, bool and complex tensors are not supported)"
        )
    return X


def _check_float_dtype(dtype: object, name: str) -> torch.dtype:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"{name} must be a real floating-point dtype, got {dtype}")
    return dtype


def _ns_steps(X: Tensor, coefficients: Sequence[_Triple]) -> Tensor:
    """Run the quintic steps on a 2-D ``(m, n)`` or 3-D ``(B, m, n)`` matrix with m ≤ n."""
    if X.ndim == 2:
        for a, b, c in coefficients:
            A = torch.mm(X, X.mT)
            B = torch.addmm(A, A, A, beta=b, alpha=c)
            X = torch.addmm(X, B, X, beta=a)
    else:
        for a, b, c in coefficients:
            A = torch.bmm(X, X.mT)
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a)
    return X


def newton_schulz(
    X: Tensor,
    steps: int = 5,
    *,
    coefficients: _CoefficientsArg = "keller",
    compute_dtype: torch.dtype = torch.bfloat16,
    eps: float = 1e-7,
    prescale: float | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """Approximate the polar factor ``UVᵀ`` of each matrix with quintic Newton–Schulz steps.

    Procedure (KellerJordan/Muon, batched): cast to ``compute_dtype``; transpose (as a view)
    when m > n; ``X ← X / (prescale·‖X‖_F + eps)`` with the norm accumulated in fp32 (float64
    for a float64 ``compute_dtype``) and the denominator rounded to ``compute_dtype`` as in Muon
    (not for float16, whose range is too small); per step ``A = XXᵀ``, ``B = bA + cA²``,
    ``X ← aX + BX``; transpose back; cast to ``out_dtype``. A zero matrix returns zeros. With
    the default settings the result is bit-identical to ``torch.optim.Muon``'s iteration.

    Args:
        X: Real floating tensor ``(..., m, n)``, batched over the leading dims.
        steps: Number of steps in ``[1, 99]``.
        coefficients: ``"keller"`` (every step), ``"polar_express"`` (table steps 1..``steps``,
            needs ``steps ≤ 5``), one ``(a, b, c)`` triple for every step, or a sequence of
            exactly ``steps`` triples.
        compute_dtype: Floating dtype of the iteration (bf16 by default, as Muon).
        eps: Non-negative constant added to the scaled norm.
        prescale: Multiplier of the Frobenius norm; ``None`` means 1.0, or 1.02 for
            ``"polar_express"``.
        out_dtype: Result dtype; ``None`` means ``X.dtype``.

    Returns:
        Tensor ``(..., m, n)`` of dtype ``out_dtype`` with singular values near 1.

    Raises:
        TypeError: ``X`` is not a tensor or a dtype argument is not a ``torch.dtype``.
        ValueError: ``X.ndim < 2``; ``X`` integer, bool or complex; ``steps`` outside
            ``[1, 99]``; malformed or miscounted ``coefficients``; ``"polar_express"`` with
            ``steps > 5``; non-floating dtypes; negative ``eps``; non-positive ``prescale``.
    """
    _check_matrix(X, "X")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {steps!r}")
    if not 1 <= steps <= 99:
        raise ValueError(f"steps must be in [1, 99], got {steps}")
    coeffs = _resolve_coefficients(coefficients, steps)
    cdtype = _check_float_dtype(compute_dtype, "compute_dtype")
    odtype = X.dtype if out_dtype is None else _check_float_dtype(out_dtype, "out_dtype")
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    if prescale is None:
        prescale = _POLAR_EXPRESS_PRESCALE if coefficients == "polar_express" else 1.0
    if not (math.isfinite(prescale) and prescale > 0.0):
        raise ValueError(f"prescale must be finite and > 0, got {prescale!r}")

    transposed = X.shape[-2] > X.shape[-1]
    # Cast in X's own layout (a fast, contiguous pass) and transpose a tall matrix as a view: the
    # BLAS calls take transposed operands natively, while a transposing cast copy is slow.
    Y = X.to(cdtype) if X.dtype != cdtype else X
    owned = X.dtype != cdtype  # a fresh copy may be normalised in place
    acc = torch.float64 if cdtype == torch.float64 else torch.float32
    if cdtype == torch.bfloat16:
        # bf16 reductions accumulate in fp32 internally; `dtype=` would first materialise an
        # fp32 copy of Y (markedly slower on CPU). The bf16 range holds any fp32 norm.
        den = torch.linalg.vector_norm(Y, dim=(-2, -1), keepdim=True).to(acc)
    else:
        den = torch.linalg.vector_norm(Y, dim=(-2, -1), keepdim=True, dtype=acc)
    if prescale != 1.0:
        den.mul_(prescale)
    den.add_(eps)
    if cdtype != torch.float16:
        # The references (KellerJordan/Muon, torch.optim.Muon) divide by the norm rounded to the
        # compute dtype; doing the same keeps bf16 results identical to theirs (NS amplifies a
        # one-ulp change of the scale into visible element-wise differences). float16 keeps the
        # fp32 denominator, as large norms overflow its range.
        den = den.to(cdtype)
    # One division computed in fp32 (opmath) and rounded once to the compute dtype.
    Y = Y.div_(den) if owned and den.dtype == cdtype else torch.div(Y, den).to(cdtype)
    if transposed:
        Y = Y.mT

    batch_shape = Y.shape[:-2]
    m, n = Y.shape[-2], Y.shape[-1]
    if Y.ndim > 3:
        Y = Y.reshape(-1, m, n)
    Y = _ns_steps(Y, coeffs)
    if Y.ndim == 3 and len(batch_shape) != 1:
        Y = Y.reshape(*batch_shape, m, n)
    if transposed:
        Y = Y.mT
    return Y.to(odtype)


def orthogonalize(G: Tensor, *, flatten: bool = True, **ns_kwargs: Any) -> Tensor:
    """Newton–Schulz orthogonalisation of a parameter-shaped update.

    Args:
        G: Tensor with ``ndim ≥ 2``: a matrix ``(m, n)``, or e.g. a conv kernel
            ``(out, in, kh, kw)``.
        flatten: For ``ndim > 2``, ``True`` orthogonalises the ``(shape[0], prod(shape[1:]))``
            view (see :func:`matrix_shape`) and reshapes back; ``False`` treats the leading dims
            as a batch of ``(m, n)`` matrices.
        **ns_kwargs: Passed to :func:`newton_schulz` (``steps``, ``coefficients``, ...).

    Returns:
        Tensor of ``G.shape``.

    Raises:
        ValueError: ``G.ndim < 2``, or as :func:`newton_schulz`.
    """
    _check_matrix(G, "G")
    if G.ndim == 2 or not flatten:
        return newton_schulz(G, **ns_kwargs)
    rows, cols = matrix_shape(G)
    return newton_schulz(G.reshape(rows, cols), **ns_kwargs).reshape(G.shape)


def matrix_shape(p: Tensor | Sequence[int]) -> tuple[int, int]:
    """The matrix view ``(shape[0], prod(shape[1:]))`` of a parameter.

    Every optimiser should take shape-based learning-rate factors from this, not from the last
    two dims of a 4-D conv kernel (a known Muon bug).

    Args:
        p: A tensor or a shape (``torch.Size`` / sequence of ints) with at least one dim.

    Returns:
        ``(rows, cols)``.

    Raises:
        TypeError: ``p`` is neither a tensor nor a sequence of ints.
        ValueError: ``p`` is 0-dim.
    """
    if isinstance(p, Tensor):
        shape = tuple(p.shape)
    elif isinstance(p, Sequence) and not isinstance(p, (str, bytes)):
        if any(isinstance(s, bool) or not isinstance(s, int) for s in p):
            raise TypeError(f"p must be a tensor or a sequence of ints, got {p!r}")
        shape = tuple(p)
    else:
        raise TypeError(f"p must be a tensor or a shape, got {type(p).__name__}")
    if len(shape) == 0:
        raise ValueError("p must have at least one dimension, got a 0-dim shape")
    return shape[0], math.prod(shape[1:])


def newton_schulz_flops(m: int, n: int, steps: int) -> int:
    """Floating-point operations of :func:`newton_schulz` on one ``m × n`` matrix.

    Per step ``4·s²·l + 2·s³`` with ``s = min(m, n)`` and ``l = max(m, n)`` (the transpose makes
    the Gram matrix the small one): ``XXᵀ`` costs ``2s²l``, ``A·A`` ``2s³`` and ``B·X`` ``2s²l``.

    Args:
        m: Rows (≥ 0).
        n: Columns (≥ 0).
        steps: Number of steps (≥ 0).

    Returns:
        The flop count as an int.

    Raises:
        TypeError: an argument is not an int.
        ValueError: an argument is negative.
    """
    for name, v in (("m", m), ("n", n), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    s, ell = min(m, n), max(m, n)
    return steps * (4 * s * s * ell + 2 * s**3)
