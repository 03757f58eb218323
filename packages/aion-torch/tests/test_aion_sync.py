"""Deferred statistics in one process: α fixed within a step, one update per ``sync_stats``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aion_torch import AionBlock, AionResidual, sync_stats


def test_deferred_alpha_fixed_within_step_and_updated_by_sync() -> None:
    m = AionResidual(sync_stats="deferred", ema_gamma=0.9)
    x = torch.ones(2, 4, 8)
    _, s1 = m(x, 0.5**0.5 * x, return_stats=True)  # per-token ratio 0.5 (8 tokens)
    _, s2 = m(x[:, :2], 2**0.5 * x[:, :2], return_stats=True)  # ratio 2 (4 tokens)
    torch.testing.assert_close(s1["alpha"], s2["alpha"])
    # α ≈ 0.1: fp32-relative (the default atol 1e-5 would be 1e-4 of α)
    torch.testing.assert_close(s1["alpha"], torch.tensor(0.1 / 1.05), rtol=1.3e-6, atol=0.0)
    assert float(m.ratio_ema) == 1.0 and int(m.step_count) == 2
    # per-token ratios of √r-scaled inputs are r to an fp32 ulp: relative fp32 tolerance, no atol
    torch.testing.assert_close(
        m.pending, torch.tensor([8 * 0.5 + 4 * 2.0, 12.0]), rtol=1.3e-6, atol=0
    )
    assert sync_stats(m) == 1
    stat = (8 * 0.5 + 4 * 2.0) / 12  # token-weighted
    torch.testing.assert_close(
        m.ratio_ema, torch.tensor(0.9 + 0.1 * stat), rtol=1.3e-6, atol=0
    )  # as above
    assert torch.equal(m.pending, torch.zeros(2))
    _, s3 = m(x, x, return_stats=True)
    expected = torch.tensor(0.1 / (1 + 0.05 * (0.9 + 0.1 * stat)))
    torch.testing.assert_close(s3["alpha"], expected, rtol=1.3e-6, atol=0.0)  # α: fp32-relative


def test_sync_skips_nan_and_idle_layers() -> None:
    model = nn.Sequential(*(AionBlock(nn.Linear(8, 8), 8, sync_stats="deferred") for _ in range(3)))
    x = torch.randn(2, 4, 8)
    model[0](x)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    model[1](bad)  # NaN: never reaches pending
    model[1](x)
    assert sync_stats(model) == 3
    r0, r1, r2 = (b.aion for b in model)
    assert float(r0.ratio_ema) != 1.0 and float(r1.ratio_ema) != 1.0
    assert float(r2.ratio_ema) == 1.0 and int(r2.num_skipped) == 0  # saw no token
    assert int(r1.num_skipped) == 1
    assert sync_stats(nn.Linear(2, 2)) == 0
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        sync_stats("model")  # type: ignore[arg-type]


def test_sync_mixed_gammas() -> None:
    a = AionResidual(sync_stats="deferred", ema_gamma=0.5)
    b = AionResidual(sync_stats="deferred", ema_gamma=1.0)
    c = AionResidual()  # not deferred: untouched by sync_stats
    model = nn.ModuleList([a, b, c])
    x = torch.ones(1, 2, 4)
    for m in model:
        m(x, 2**0.5 * x)  # ratio 2
    ema_c = c.ratio_ema.clone()
    assert sync_stats(model) == 2
    torch.testing.assert_close(a.ratio_ema, torch.tensor(1.5))
    torch.testing.assert_close(b.ratio_ema, torch.tensor(2.0))  # γ = 1: the statistic itself
    assert torch.equal(c.ratio_ema, ema_c)
