"""auon + aiether: AuON on the blocks' matrices and AdamW on the rest, in aiether's per-block
groups; a growth hands the new block optimiser state from its source (each transfer mode), the
new block trains, and a resumed run continues exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from auon import AuONWithAuxAdam
from tests.mix_and_match._common import GrowthRun, assert_resumes_exactly


def _auon(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    out = []
    for g in groups:
        if g["block"] is not None and not g["name"].endswith("no_decay"):  # block matrices
            out.append({**g, "use_auon": True, "lr": 0.05})
        else:
            out.append({**g, "use_auon": False, "lr": 3e-3})
    return AuONWithAuxAdam(out)


@pytest.mark.parametrize("mode", ["none", "second_moment", "full"])
def test_growth_transfers_auon_and_adamw_state(mode: str) -> None:
    run = GrowthRun(None, _auon, schedule=(100,), state_transfer=mode)
    for i in range(3):
        run.step(i)
    run.controller.grow(2)
    stack, state = run.model.blocks, run.opt.state
    src, new = dict(stack[2].named_parameters()), dict(stack[1].named_parameters())
    matrix, vector = "mlp.0.weight", "mlp.0.bias"  # AuON and AdamW parameters
    if mode == "none":
        assert new[matrix] not in state and new[vector] not in state
    else:
        m_new, m_src = state[new[matrix]]["momentum_buffer"], state[src[matrix]]["momentum_buffer"]
        a_new, a_src = state[new[vector]], state[src[vector]]
        assert torch.equal(a_new["exp_avg_sq"], a_src["exp_avg_sq"])  # the update scale
        if mode == "full":
            assert torch.equal(m_new, m_src)
            assert torch.equal(a_new["exp_avg"], a_src["exp_avg"])
        else:  # second moments only: no inherited direction
            assert not m_new.any() and m_src.any()
            assert not a_new["exp_avg"].any()
    before = new["mlp.2.weight"].detach().clone()
    assert not before.any()  # zeroed by the function-preserving insertion
    run.step(3)
    assert new["mlp.2.weight"].any()  # the new block trains from the next step


def test_an_auon_run_resumes_through_a_growth_exactly(tmp_path: Path) -> None:
    assert_resumes_exactly(lambda: GrowthRun(None, _auon), steps=14, split=6, tmp=tmp_path)
