"""GrowableStack and AIetherGPT: slot order, function-preserving growth, inactive blocks untouched
by AdamW, export_compact, state_dict round trips and bad arguments."""

from __future__ import annotations

import copy

import pytest
import torch
from _aiether_tiny import TINY, batch, tiny_gpt, train_steps
from torch import nn

from aiether.adapters import export_compact
from aiether.model import AIetherGPT
from aiether.stack import GrowableStack


def _copy_init(new: nn.Module, src: nn.Module) -> None:
    new.load_state_dict(src.state_dict())


def _logits(model: nn.Module) -> torch.Tensor:
    x, _ = batch(seed=7)
    model.eval()
    with torch.no_grad():
        logits, _ = model(x)
    return logits


def _linear_blocks(n: int = 4) -> list[nn.Module]:
    return [nn.Sequential(nn.Linear(4, 4)) for _ in range(n)]


@pytest.mark.parametrize(
    ("order", "initial", "active", "next_slot"),
    [
        ("top_down", 1, [3], 2),
        ("top_down", 2, [2, 3], 1),
        ("bottom_up", 1, [0], 1),
        ((2, 0, 3, 1), 2, [0, 2], 3),
    ],
)
def test_slot_order(order: object, initial: int, active: list[int], next_slot: int) -> None:
    stack = GrowableStack(
        _linear_blocks(), initial_active=initial, slot_order=order, preserve="none"
    )  # type: ignore[arg-type]
    assert stack.active_slots == active
    assert stack.next_slot() == next_slot
    assert stack.active.tolist() == [i in active for i in range(4)]


def test_top_down_growth_fills_below_and_sources_from_the_frontier() -> None:
    stack = GrowableStack(_linear_blocks(), preserve="none")
    seen = []
    while not stack.is_full:
        seen.append(stack.grow())
    assert seen == [(2, 3), (1, 2), (0, 1)]
    with pytest.raises(ValueError, match="max_layers=4"):
        stack.next_slot()


def test_iteration_and_slicing_yield_only_active_blocks_in_index_order() -> None:
    blocks = _linear_blocks()
    stack = GrowableStack(blocks, initial_active=2, slot_order=(3, 1, 0, 2), preserve="none")
    assert list(stack) == [blocks[1], blocks[3]]
    assert stack[:2] == [blocks[1]]
    assert stack[0] is blocks[0]  # integer indexing reaches any block
    assert len(stack) == 4
    x = torch.randn(2, 4)
    torch.testing.assert_close(stack(x), blocks[3](blocks[1](x)))


@pytest.mark.parametrize("preserve", ["zero_out", "gate_ramp", "rezero"])
def test_growth_preserves_the_function_of_a_trained_gpt(preserve: str) -> None:
    model = tiny_gpt(preserve=preserve)  # type: ignore[arg-type]
    train_steps(model)
    before = _logits(model)
    stack = model.h
    assert isinstance(stack, GrowableStack)
    stack.grow(_copy_init)  # a copy of the trained frontier: far from the identity by itself
    after = _logits(model)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_copy_growth_without_preservation_changes_the_function() -> None:
    model = tiny_gpt(preserve="none")
    train_steps(model)
    before = _logits(model)
    model.h.grow(_copy_init)  # type: ignore[union-attr]
    assert (_logits(model) - before).abs().max() > 1e-3


def test_zero_out_zeroes_the_output_projections_only() -> None:
    model = tiny_gpt()
    stack = model.h
    assert isinstance(stack, GrowableStack)
    slot, _ = stack.grow()
    block = stack[slot]
    for name, p in block.named_parameters():
        is_out = name.startswith(("attn.c_proj", "mlp.c_proj"))
        if is_out or name.endswith("weight"):  # other biases start at zero anyway
            assert bool((p == 0).all()) == is_out, name


def test_gate_ramp_rises_linearly_to_one_then_runs_the_plain_block() -> None:
    model = tiny_gpt(preserve="gate_ramp", ramp_steps=4)
    stack = model.h
    assert isinstance(stack, GrowableStack)
    slot, _ = stack.grow(_copy_init)
    assert stack.gate is not None
    values = []
    for _ in range(5):
        values.append(float(stack.gate[slot]))
        stack.advance()
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert float(stack.gate[3]) == 1.0
    assert all(not type(call).__name__.startswith("_Gated") for call in stack)


def test_rezero_gate_is_learnable_and_starts_at_zero() -> None:
    model = tiny_gpt(preserve="rezero")
    stack = model.h
    assert isinstance(stack, GrowableStack)
    slot, _ = stack.grow(_copy_init)
    assert isinstance(stack.gate, nn.Parameter)
    assert stack.gate.tolist() == [0.0, 0.0, 0.0, 1.0]
    x, y = batch()
    _, loss = model(x, y)
    assert loss is not None
    loss.backward()
    assert stack.gate.grad is not None
    assert float(stack.gate.grad[slot].abs()) > 0
    assert float(stack.gate.grad[0]) == 0.0  # inactive slot


def test_inactive_blocks_stay_bitwise_unchanged_through_adamw_with_weight_decay() -> None:
    model = tiny_gpt()
    stack = model.h
    assert isinstance(stack, GrowableStack)
    inactive = {n: p.detach().clone() for n, p in stack[0].named_parameters()}
    train_steps(model, steps=4, weight_decay=0.5)
    for n, p in stack[0].named_parameters():
        assert p.grad is None, n
        assert torch.equal(p, inactive[n]), n
    active_before = copy.deepcopy(stack[3].state_dict())
    train_steps(model, steps=1)
    assert not torch.equal(
        stack[3].state_dict()["mlp.c_fc.weight"], active_before["mlp.c_fc.weight"]
    )


def test_export_compact_equals_the_active_set_forward() -> None:
    model = tiny_gpt(initial_active=2)
    train_steps(model)
    model.h.grow(_copy_init)  # type: ignore[union-attr]
    compact = export_compact(model)
    assert isinstance(compact.h, nn.ModuleList)
    assert not isinstance(compact.h, GrowableStack)
    assert len(compact.h) == 3
    torch.testing.assert_close(_logits(compact), _logits(model), rtol=0, atol=0)
    assert compact.num_parameters() == model.num_parameters(active_only=True)


def test_export_compact_keeps_a_pending_ramp_gate() -> None:
    model = tiny_gpt(preserve="gate_ramp", ramp_steps=4)
    train_steps(model)
    model.h.grow(_copy_init)  # type: ignore[union-attr]
    model.h.advance(2)  # type: ignore[union-attr]
    compact = export_compact(model)
    torch.testing.assert_close(_logits(compact), _logits(model), rtol=0, atol=0)


def test_state_dict_carries_the_active_set() -> None:
    model = tiny_gpt()
    train_steps(model)
    model.h.grow()  # type: ignore[union-attr]
    state = model.state_dict()
    assert state["h.active"].tolist() == [False, False, True, True]
    fresh = tiny_gpt(seed=5)
    fresh.load_state_dict(state)
    assert fresh.h.active_slots == [2, 3]  # type: ignore[union-attr]
    torch.testing.assert_close(_logits(fresh), _logits(model), rtol=0, atol=0)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(_logits(clone), _logits(model), rtol=0, atol=0)


def test_the_parameter_set_is_static() -> None:
    stack = GrowableStack(_linear_blocks(), preserve="none")
    with pytest.raises(TypeError, match="static"):
        stack.append(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="static"):
        stack[0] = nn.Linear(4, 4)


def test_original_initialisation_and_tied_head() -> None:
    torch.manual_seed(0)
    model = AIetherGPT(TINY)
    assert model.lm_head.weight is model.wte.weight
    block = model.h[0]
    assert (
        abs(float(block.attn.c_proj.weight.detach().std()) - 0.02 / (2 * TINY.n_layer) ** 0.5)
        < 0.003
    )
    assert abs(float(block.mlp.c_fc.weight.detach().std()) - 0.02) < 0.003
    assert block.mlp.c_fc.out_features == 8 * TINY.n_embd
    assert block.mlp.c_proj.in_features == 4 * TINY.n_embd
    assert float(block.attn.c_attn.bias.detach().abs().max()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_active": 0}, "initial_active"),
        ({"initial_active": 5}, "initial_active"),
        ({"slot_order": "sideways"}, "slot_order"),
        ({"slot_order": (0, 1, 1, 3)}, "permutation"),
        ({"preserve": "magic"}, "preserve"),
        ({"preserve": "zero_out"}, "out_proj_names"),
        ({"preserve": "zero_out", "out_proj_names": ["nope"]}, "no submodule 'nope'"),
        ({"preserve": "none", "ramp_steps": 0}, "ramp_steps"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GrowableStack(_linear_blocks(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        GrowableStack(_linear_blocks(1), preserve="none")


def test_activate_refuses_an_active_slot() -> None:
    stack = GrowableStack(_linear_blocks(), preserve="none")
    with pytest.raises(ValueError, match="already active"):
        stack.activate(3)
