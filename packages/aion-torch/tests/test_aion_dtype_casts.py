"""Module dtype casts (``.half()``, ``.bfloat16()``, ``.to(dtype)``, ``.double()``) and statistics.

The statistics of :class:`AionResidual` (``ratio_ema``, ``alpha_cached`` and the deferred
accumulator ``pending``) stay fp32 through casts to fp16/bf16, from their fp32 values (never
rounded through the narrow dtype); ``.double()`` upgrades them; device moves apply; the integer
counters keep their dtypes. The parameters follow the cast like any parameter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from aion_torch import AionResidual, sync_stats

_HALF_CASTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "half": lambda m: m.half(),
    "bfloat16": lambda m: m.bfloat16(),
    "to_bf16": lambda m: m.to(torch.bfloat16),
    "to_fp16": lambda m: m.to(dtype=torch.float16),
}
_STATS = ("ratio_ema", "alpha_cached", "pending")


def _ratio_15_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x = 1 and rows y = (1, 1, 2, 0): per-token energy ratio 1.5 / (1 + 1e-8), exact in bf16."""
    x = torch.ones(2, 4, 4, dtype=dtype)
    y = torch.tensor([1.0, 1.0, 2.0, 0.0], dtype=dtype).expand(2, 4, 4).contiguous()
    return x, y


@pytest.mark.parametrize("cast", sorted(_HALF_CASTS))
def test_half_casts_keep_statistics_fp32_without_rounding(cast: str) -> None:
    m = AionResidual(sync_stats="deferred")
    with torch.no_grad():  # values that fp16 and bf16 cannot represent
        m.ratio_ema.fill_(1.0 + 2.0**-20)
        m.alpha_cached.fill_(0.1 + 2.0**-30)
        m.pending.copy_(torch.tensor([3.0 + 2.0**-18, 257.0]))
    before = {name: getattr(m, name).clone() for name in _STATS}
    half = _HALF_CASTS[cast](m)
    assert half is m
    for name in _STATS:
        t = getattr(m, name)
        assert t.dtype == torch.float32, name
        assert torch.equal(t, before[name]), name
    assert m.step_count.dtype == torch.int32 and m.num_skipped.dtype == torch.int64
    assert m.alpha0.dtype == m.beta.dtype != torch.float32  # parameters do follow the cast


def test_double_upgrades_statistics_and_device_moves_apply() -> None:
    m = AionResidual().double()
    assert all(getattr(m, name).dtype == torch.float64 for name in _STATS)
    assert m.step_count.dtype == torch.int32
    m.float()
    assert all(getattr(m, name).dtype == torch.float32 for name in _STATS)
    m.to(torch.device("meta"), torch.bfloat16)  # a device move and a half cast in one call
    for name in _STATS:
        t = getattr(m, name)
        assert t.device.type == "meta" and t.dtype == torch.float32, name
    assert m.alpha0.device.type == "meta" and m.alpha0.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_module_ema_trajectory_equals_fp32(dtype: torch.dtype) -> None:
    """200 training steps at a constant ratio 1.5: a half-precision EMA would stall near 1.1."""
    fp32 = AionResidual()
    half = AionResidual().to(dtype)
    x, y = _ratio_15_inputs(dtype)
    for _ in range(200):
        out = half(x, y)
        fp32(x, y)  # the same half-precision inputs: the same fp32 statistic
        assert torch.equal(half.ratio_ema, fp32.ratio_ema)
    assert out.dtype == dtype
    # closed form of the EMA from 1.0 at ratio r: r + (1 − r)·γⁿ = 1.43302…
    torch.testing.assert_close(half.ratio_ema, torch.tensor(1.5 - 0.5 * 0.99**200))
    # α from the cast parameters (α0, β rounded to the half dtype), computed in fp32;
    # fp32-relative (α ≈ 0.1: the default atol 1e-5 would be 1e-4 of α)
    a0, b = float(half.alpha0.detach()), float(half.beta.detach())
    expected = torch.tensor(a0 / (1 + b * (1.5 - 0.5 * 0.99**200)))
    torch.testing.assert_close(half.alpha_cached, expected, rtol=1.3e-6, atol=0.0)
    assert half.alpha_cached.dtype == torch.float32


def test_bf16_deferred_accumulator_counts_exactly() -> None:
    """bf16 integers stop at 256: 300 forwards of 8 tokens must count 2400 tokens."""
    m = AionResidual(sync_stats="deferred", ema_gamma=0.5).bfloat16()
    x, y = _ratio_15_inputs(torch.bfloat16)
    for _ in range(300):
        m(x, y)
    assert m.pending.dtype == torch.float32
    torch.testing.assert_close(m.pending, torch.tensor([2400 * 1.5, 2400.0]))
    assert sync_stats(m) == 1
    torch.testing.assert_close(m.ratio_ema, torch.tensor(0.5 + 0.5 * 1.5))


def test_pending_moves_with_the_module_and_is_copied() -> None:
    m = AionResidual(sync_stats="deferred")
    x, y = _ratio_15_inputs(torch.float32)
    m(x, y)
    twin = copy.deepcopy(m)
    assert torch.equal(twin.pending, m.pending)
    twin(x, y)  # the copy owns its accumulator
    torch.testing.assert_close(m.pending, torch.tensor([8 * 1.5, 8.0]))
    torch.testing.assert_close(twin.pending, torch.tensor([16 * 1.5, 16.0]))
    assert "pending" not in m.state_dict()
    assert "pending" not in dict(m.named_buffers())  # not broadcast by DDP


def test_pending_follows_buffers_moved_without_apply() -> None:
    """FSDP2's fully_shard moves parameters and buffers itself, without ``Module._apply``."""
    m = AionResidual(sync_stats="deferred")
    for name, b in list(m.named_buffers()):
        setattr(m, name, b.to("meta"))  # the buffers move; _apply (and thus pending) is bypassed
    assert m._pending.device.type == "cpu"
    assert m.pending.device.type == "meta" and m.pending.dtype == torch.float32
