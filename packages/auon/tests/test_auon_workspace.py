"""The CPU workspace: persistent scratch buffers that change nothing but the allocations."""

from __future__ import annotations

import copy

import pytest
import torch

from auon import AuON, AuONWithAuxAdam, auon_step

SHAPES = [(16, 8), (8, 32), (4, 3, 3, 2)]


def _params_and_grads(seed: int) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    gs = [torch.randn(s, generator=gen) for s in SHAPES]
    return ps, gs


@pytest.mark.parametrize("nonfinite", ["skip", "propagate"])
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_workspace_gives_the_same_bits(
    nonfinite: str, nesterov: bool, foreach: bool, dtype: torch.dtype
) -> None:
    kw = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 0.01}
    results = []
    for use_ws in (False, True):
        ps, gs = _params_and_grads(0)
        ps = [p.detach().to(dtype) for p in ps]
        gs = [g.to(dtype) for g in gs]
        ms = [torch.zeros_like(p) for p in ps]
        ws = [(torch.empty_like(p), torch.empty_like(p)) for p in ps] if use_ws else None
        for step in range(3):
            grads = [g * (step + 1) for g in gs]
            auon_step(
                ps,
                grads,
                ms,
                compute_dtype=dtype,
                nonfinite=nonfinite,  # type: ignore[arg-type]
                foreach=foreach,
                workspace=ws,
                **kw,
            )
        results.append((ps, ms))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1], strict=True):
        assert torch.equal(a, b)


def test_optimizer_reuses_its_workspace_and_keeps_it_out_of_the_state() -> None:
    ps, gs = _params_and_grads(1)
    opt = AuON(ps, lr=0.05)
    for p, g in zip(ps, gs, strict=True):
        p.grad = g.clone()
    opt.step()
    ws = opt.__dict__["_auon_workspace"]
    pointers = {k: (v[1].data_ptr(), v[2].data_ptr()) for k, v in ws.items()}
    assert len(pointers) == len(ps)
    opt.step()
    assert {k: (v[1].data_ptr(), v[2].data_ptr()) for k, v in ws.items()} == pointers
    sd = opt.state_dict()
    assert all(set(s) == {"momentum_buffer", "nonfinite_steps"} for s in sd["state"].values())
    clone = copy.deepcopy(opt)
    assert "_auon_workspace" not in clone.__dict__  # rebuilt lazily, never shared


def test_workspace_matches_a_fresh_optimizer_after_resume() -> None:
    # A resumed optimiser (no workspace yet) continues exactly like the one that had it.
    ps_a, gs = _params_and_grads(2)
    model_b = [torch.nn.Parameter(p.detach().clone()) for p in ps_a]
    opt_a, opt_b = AuON(ps_a, lr=0.05), AuON(model_b, lr=0.05)
    for step in range(4):
        for pa, pb, g in zip(ps_a, model_b, gs, strict=True):
            pa.grad = g * (step + 1)
            pb.grad = g * (step + 1)
        opt_a.step()
        if step == 2:
            state = copy.deepcopy(opt_b.state_dict())
            opt_b = AuON(model_b, lr=0.05)
            opt_b.load_state_dict(state)
        opt_b.step()
    for a, b in zip(ps_a, model_b, strict=True):
        assert torch.equal(a, b)


def test_aux_adam_uses_the_workspace_too() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    opt = AuONWithAuxAdam.from_model(model, lr=0.02, adamw_lr=1e-3)
    model(torch.randn(3, 8)).square().mean().backward()
    opt.step()
    assert len(opt.__dict__["_auon_workspace"]) >= 1


def test_workspace_length_is_checked() -> None:
    ps, gs = _params_and_grads(3)
    ms = [torch.zeros_like(p) for p in ps]
    with pytest.raises(ValueError, match="workspace"):
        auon_step([p.detach() for p in ps], gs, ms, lr=0.1, workspace=[(ms[0], ms[0])])
