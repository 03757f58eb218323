"""The libraries used together, as a user would: an AION-residual GPT trained with AuON + AdamW.

Each package is tested alone in its own folder; this checks that they compose: the harness GPT
with ``aion_torch.AionResidual`` in every sublayer, optimised by ``auon.AuONWithAuxAdam``, learns,
keeps finite AION state, and resumes from a checkpoint exactly as an uninterrupted run.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from aion_torch import AionResidual
from auon import AuONWithAuxAdam
from benchmarks.harness import GPT, GPTConfig
from tests.mix_and_match._common import counting_batches, train_step

CONFIG = GPTConfig(seq_len=16, d_model=32, n_layers=2, n_heads=2, positions="rotary")


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG, residual_factory=lambda i, c: AionResidual())


def _optimizer(model: nn.Module) -> AuONWithAuxAdam:
    return AuONWithAuxAdam.from_model(model, lr=0.02, adamw_lr=3e-3)


def _batches(n: int) -> list[torch.Tensor]:
    return counting_batches(n, 8, CONFIG.seq_len)


def _train(model: GPT, opt: AuONWithAuxAdam, batches: list[torch.Tensor]) -> list[float]:
    return [train_step(model, opt, b) for b in batches]


def test_aion_gpt_learns_with_auon() -> None:
    model = _model()
    losses = _train(model, _optimizer(model), _batches(60))
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (first, last)  # from ln(256) ≈ 5.5 down by more than a nat
    residuals = [m for m in model.modules() if isinstance(m, AionResidual)]
    assert len(residuals) == 2 * CONFIG.n_layers
    for r in residuals:
        assert int(r.step_count) == 60
        assert torch.isfinite(r.ratio_ema).all()


def test_checkpoint_resume_equals_uninterrupted() -> None:
    batches = _batches(12)
    model_a = _model()
    opt_a = _optimizer(model_a)
    _train(model_a, opt_a, batches)

    model_b = _model()
    opt_b = _optimizer(model_b)
    _train(model_b, opt_b, batches[:6])
    model_state = copy.deepcopy(model_b.state_dict())
    opt_state = copy.deepcopy(opt_b.state_dict())
    model_c = _model()
    opt_c = _optimizer(model_c)
    model_c.load_state_dict(model_state)
    opt_c.load_state_dict(opt_state)
    _train(model_c, opt_c, batches[6:])

    for (name, a), (_, c) in zip(
        model_a.state_dict().items(), model_c.state_dict().items(), strict=True
    ):
        assert torch.equal(a, c), name
