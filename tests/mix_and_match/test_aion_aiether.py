"""aion-torch + aiether: AION residual blocks grown while training; growth keeps the function,
the new block starts from the source's AION statistics, and a resumed run continues exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from aion_torch import AionResidual
from tests.mix_and_match._common import GrowthRun, assert_resumes_exactly


def _adamw(groups: list[dict[str, object]]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=3e-3)


def test_growth_of_an_aion_stack_preserves_the_function() -> None:
    run = GrowthRun(AionResidual, _adamw, schedule=(100,))  # grown by hand below
    for i in range(4):
        run.step(i)  # AION statistics move away from their initial values
    stack, probe = run.model.blocks, run.batches[0][:, :-1]
    run.model.eval()
    with torch.no_grad():
        before = run.model(probe)
    event = run.controller.grow(3)
    with torch.no_grad():
        after = run.model(probe)
    assert (event.slot, stack.active_slots) == (1, [1, 2])
    assert torch.equal(after, before)  # zeroed output projection: AION adds α·0 exactly
    assert event.probe_loss_after == event.probe_loss_before
    source, new = stack[2].res, stack[1].res
    assert float(source.ratio_ema) != 1.0  # trained away from its initial value
    assert torch.equal(new.ratio_ema, source.ratio_ema)  # the AION EMA is copied with the block
    assert torch.equal(new.alpha0, source.alpha0)
    run.model.train()
    run.step(4)
    assert torch.isfinite(new.ratio_ema)
    assert float(new.ratio_ema) < float(source.ratio_ema)  # its branch output starts at zero


def test_an_aion_stack_resumes_through_a_growth_exactly(tmp_path: Path) -> None:
    assert_resumes_exactly(lambda: GrowthRun(AionResidual, _adamw), steps=14, split=6, tmp=tmp_path)
