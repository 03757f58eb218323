"""Logic of the inl-llm quality/halting benchmarks' shared module (benchmarks/_inl_lm.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from benchmarks._inl_lm import BASELINE, Arm, Shape, build_lm, match_arm
from benchmarks.bench_inl_quality import ARMS
from benchmarks.harness import select_lr

SHAPE = Shape(d_model=64, num_layers=2, num_heads=4, num_iterations=3, seq_len=64)
GPU_SHAPE = Shape(d_model=512, num_layers=8, num_heads=8, num_iterations=5, seq_len=512)


@pytest.mark.parametrize("name", list(ARMS))
def test_arms_match_the_baseline_within_two_percent(name: str) -> None:
    arm = ARMS[name]
    cfg, how = match_arm(SHAPE, arm)
    counts = build_lm(cfg, inl=arm.inl).counts()
    assert counts["non_embedding"] == how["achieved_non_embedding"]
    assert abs(how["relative_mismatch"]) <= 0.02 and how["within_tolerance"]
    assert counts["total"] == sum(
        v for k, v in counts.items() if k not in ("total", "non_embedding")
    )
    if not arm.inl:
        assert counts["inl_controller"] == counts["inl_other"] == 0
    _, gpu = match_arm(GPU_SHAPE, arm)  # closed form only: no model is built at this size
    assert gpu["within_tolerance"]


def test_baseline_is_the_inl_model_without_its_zero_update() -> None:
    """INL starts as a zero update, so at initialisation the INL model and the baseline built
    from the same weights (INL removed) give the same logits; after INL moves, they differ."""
    cfg, _ = match_arm(SHAPE, BASELINE)
    torch.manual_seed(0)
    inl_model = build_lm(cfg, inl=True).eval()
    base = build_lm(cfg, inl=False).eval()
    own = base.state_dict()
    base.load_state_dict({k: v for k, v in inl_model.state_dict().items() if k in own})
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(base(x).logits, inl_model(x).logits)
        assert base(x).inl_iterations.tolist() == [0.0, 0.0]
        for name, p in inl_model.named_parameters():
            if name.endswith("inl.gate"):
                p.fill_(1.0)
        assert not torch.allclose(base(x).logits, inl_model(x).logits)


def test_replace_ffn_raises_width_then_depth() -> None:
    _, how = match_arm(SHAPE, Arm(name="r", placement="replace_ffn", match="width"))
    assert how["d_model"] > SHAPE.d_model or how["num_layers"] > SHAPE.num_layers
    assert how["d_model"] % (2 * SHAPE.num_heads) == 0


def test_select_lr_extends_until_the_optimum_is_interior() -> None:
    best = 0.1

    def run(lr: float) -> dict[str, Any]:
        loss = (math.log(lr) - math.log(best)) ** 2
        return {"val_loss": loss, "val_bpb": loss, "crashed": False}

    records, summary = select_lr(run, 3e-3, max_extend=5, log=lambda _: None)
    assert summary["interior"] is True
    assert summary["selected_lr"] == pytest.approx(3e-3 * 27)
    assert len(summary["extensions"]) == 3 and len(records) == 6

    _, capped = select_lr(run, 3e-3, max_extend=1, log=lambda _: None)
    assert capped["interior"] is False and len(capped["extensions"]) == 1
