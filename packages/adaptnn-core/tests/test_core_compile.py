"""torch.compile(fullgraph=True) of the hot paths (slow: inductor compiles C++ on CPU) and GPU runs."""

from __future__ import annotations

import pytest
import torch

from adaptnn_core import EMATracker, ema_update_, energy_ratio, newton_schulz


@pytest.mark.slow
def test_compiled_ema_update_matches_eager() -> None:
    torch._dynamo.reset()
    eager = EMATracker(gamma=0.9, init=0.0, shape=(3,), bias_correction=True)
    comp = EMATracker(gamma=0.9, init=0.0, shape=(3,), bias_correction=True)
    step = torch.compile(comp.update_, fullgraph=True)
    stream = [
        torch.tensor([1.0, 2.0, 3.0]),
        torch.tensor([float("nan"), 1.0, float("inf")]),
        torch.tensor([0.5, -1.0, 2.0]),
    ]
    for x in stream:
        torch.testing.assert_close(step(x), eager.update_(x))
    for name in ("value", "num_updates", "num_skipped"):
        assert torch.equal(getattr(comp, name), getattr(eager, name)), name


@pytest.mark.slow
def test_compiled_energy_path_matches_eager() -> None:
    torch._dynamo.reset()
    buf_e, buf_c = torch.ones(()), torch.ones(())

    def path(y: torch.Tensor, x: torch.Tensor, m: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        r = energy_ratio(y, x, mask=m, max_ratio=10.0)
        return ema_update_(buf, r, 0.99)

    compiled = torch.compile(path, fullgraph=True)
    y, x = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    m = torch.rand(2, 8) > 0.2
    torch.testing.assert_close(compiled(y, x, m, buf_c), path(y, x, m, buf_e))
    torch.testing.assert_close(buf_c, buf_e)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (3, 16, 20)])
def test_compiled_newton_schulz_matches_eager(shape: tuple[int, ...]) -> None:
    torch._dynamo.reset()
    x = torch.randn(*shape)
    compiled = torch.compile(newton_schulz, fullgraph=True)
    torch.testing.assert_close(
        compiled(x, compute_dtype=torch.float32), newton_schulz(x, compute_dtype=torch.float32)
    )


@pytest.mark.gpu
def test_cuda_newton_schulz_bf16_band_and_matches_cpu_float64() -> None:
    g = torch.randn(4, 256, 1024)
    out = newton_schulz(g.cuda())
    assert out.device.type == "cuda"
    s = torch.linalg.svdvals(out.double().cpu())
    assert s.min() >= 0.66
    assert s.max() <= 1.16
    ref = newton_schulz(g.double(), compute_dtype=torch.float64)
    # bf16 against float64: elementwise differences at the bf16 level of the NS iterates.
    torch.testing.assert_close(out.double().cpu(), ref, rtol=0.05, atol=2e-2)
