"""Checkpoint format of the (1,)-shaped scalar parameters: 0-dim on disk, as in aion-torch 1.0.x.

α0 and β (and ReZero's α) are ``(1,)`` parameters so that FSDP2 can shard them; ``state_dict``
saves 0-dim views and ``load_state_dict(strict=True)`` accepts 0-dim and ``(1,)`` values.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor, nn

from aion_torch import AionResidual
from aion_torch.residuals import ReZeroResidual

# a checkpoint written by aion-torch 1.0.x: 0-dim fp32 parameters, the three persistent buffers
_V102 = {
    "alpha0": torch.tensor(0.2),
    "beta": torch.tensor(0.07),
    "ratio_ema": torch.tensor(1.3),
    "step_count": torch.tensor(5, dtype=torch.int32),
    "alpha_cached": torch.tensor(0.2 / (1 + 0.07 * 1.3)),
}


class _V102Layout(nn.Module):
    """Stand-in with the state layout of the published 1.0.2 ``AionResidual`` (0-dim params)."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha0 = nn.Parameter(torch.tensor(0.1))
        self.beta = nn.Parameter(torch.tensor(0.05))
        self.register_buffer("ratio_ema", torch.tensor(1.0))
        self.register_buffer("step_count", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("alpha_cached", torch.tensor(0.1))


@pytest.mark.parametrize("mode", ["default", "reference"])
def test_parameters_are_1d_and_saved_0dim(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    assert m.alpha0.shape == m.beta.shape == (1,)
    sd = m.state_dict()
    assert sd["alpha0"].shape == sd["beta"].shape == ()
    assert sd["alpha0"].data_ptr() == m.alpha0.data_ptr()  # a view, like any state_dict entry
    assert not sd["alpha0"].requires_grad
    # exact: saved and loaded values are copies, never recomputed
    torch.testing.assert_close(sd["alpha0"], torch.tensor(0.1), rtol=0, atol=0)
    assert m.state_dict(keep_vars=True)["alpha0"] is m.alpha0


@pytest.mark.parametrize("mode", ["default", "reference"])
def test_v102_checkpoint_loads_strictly_and_is_used(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    m.load_state_dict(dict(_V102), strict=True)
    assert m.alpha0.shape == (1,)
    torch.testing.assert_close(m.alpha0.detach(), torch.tensor([0.2]), rtol=0, atol=0)  # copied
    torch.testing.assert_close(m.beta.detach(), torch.tensor([0.07]), rtol=0, atol=0)
    assert int(m.step_count) == 5
    m.eval()
    x, y = torch.zeros(1, 2, 4), torch.ones(1, 2, 4)
    # eval α: reference reuses alpha_cached, default recomputes α0/(1 + β·ratio_ema): both the same
    # out = 0 + α·1 = α ≈ 0.18: fp32-relative (the default atol 1e-5 would be 5e-5 of α)
    expected = torch.full_like(y, 0.2 / (1 + 0.07 * 1.3))
    torch.testing.assert_close(m(x, y), expected, rtol=1.3e-6, atol=0.0)


def test_our_checkpoint_loads_into_the_v102_layout() -> None:
    m = AionResidual()
    m(torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    old = _V102Layout()
    old.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    assert torch.equal(old.alpha0.detach(), m.alpha0.detach().reshape(()))
    assert torch.equal(old.ratio_ema, m.ratio_ema) and int(old.step_count) == 1


def test_1d_checkpoint_loads_too() -> None:
    """A full state dict gathered from FSDP2 holds the (1,) shape; it loads strictly."""
    sd: dict[str, Tensor] = dict(_V102)
    sd["alpha0"] = torch.tensor([0.3])
    m = AionResidual()
    m.load_state_dict(sd, strict=True)
    torch.testing.assert_close(m.alpha0.detach(), torch.tensor([0.3]), rtol=0, atol=0)  # copied
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict({**sd, "beta": torch.tensor([0.1, 0.2])})


def test_rezero_scalar_is_1d_and_checkpoint_0dim() -> None:
    r = ReZeroResidual(0.5)
    assert r.alpha.shape == (1,)
    assert r.state_dict()["alpha"].shape == ()
    r.load_state_dict({"alpha": torch.tensor(0.25)}, strict=True)
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(r(x, y), x + 0.25 * y)
