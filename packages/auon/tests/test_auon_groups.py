"""matrix_param_groups membership (and its deprecated old name), build_optimizers and the single-optimizer AuONWithAuxAdam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auon import (
    AuON,
    AuONWithAuxAdam,
    Muon,
    build_optimizers,
    matrix_param_groups,
    param_groups,
)


class _TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(32, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.block = nn.ModuleDict(
            {"ln": nn.LayerNorm(16), "fc1": nn.Linear(16, 64), "fc2": nn.Linear(64, 16, bias=False)}
        )
        self.norm_f = nn.LayerNorm(16)
        self.lm_head = nn.Linear(16, 32, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)  # (B, T, D)
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        h = self.block["ln"](x)
        x = x + self.block["fc2"](torch.relu(self.block["fc1"](h)))
        return self.lm_head(self.norm_f(x))


def _ids(groups: list[dict[str, object]]) -> set[int]:
    return {id(p) for g in groups for p in g["params"]}  # type: ignore[attr-defined]


def test_param_groups_membership() -> None:
    m = _TinyGPT()
    mats, others = matrix_param_groups(m, lr=0.02, adamw_lr=1e-3, adamw_weight_decay=0.1)
    assert _ids(mats) == {id(m.conv.weight), id(m.block["fc1"].weight), id(m.block["fc2"].weight)}
    special, vectors = others
    assert _ids([special]) == {id(m.tok_emb.weight)}  # tied head deduplicated
    assert special["weight_decay"] == 0.1 and vectors["weight_decay"] == 0.0
    assert len(vectors["params"]) == 6  # conv bias, ln w/b, fc1 bias, norm_f w/b
    all_ids = [id(p) for g in mats + others for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(m.parameters()))


def test_untied_head_and_extra_adamw() -> None:
    m = _TinyGPT()
    m.lm_head.weight = nn.Parameter(torch.randn(32, 16))
    mats, others = matrix_param_groups(m, lr=0.02, adamw_lr=1e-3, extra_adamw=["conv.weight"])
    assert id(m.lm_head.weight) in _ids(others) and id(m.conv.weight) in _ids(others)
    assert _ids(mats) == {id(m.block["fc1"].weight), id(m.block["fc2"].weight)}


def test_param_groups_is_a_deprecated_alias() -> None:
    m = _TinyGPT()
    new = matrix_param_groups(m, lr=0.02, adamw_lr=1e-3, extra_adamw=["conv.weight"])
    with pytest.warns(DeprecationWarning, match=r"auon\.matrix_param_groups"):
        old = param_groups(m, lr=0.02, adamw_lr=1e-3, extra_adamw=["conv.weight"])
    assert [[_ids([g]) for g in side] for side in old] == [
        [_ids([g]) for g in side] for side in new
    ]
    assert [[{k: v for k, v in g.items() if k != "params"} for g in side] for side in old] == [
        [{k: v for k, v in g.items() if k != "params"} for g in side] for side in new
    ]


def test_no_matrix_raises() -> None:
    with pytest.raises(ValueError, match="model"):
        matrix_param_groups(nn.Embedding(4, 4), lr=0.1, adamw_lr=0.1)


def test_build_optimizers_and_aux_adam_train() -> None:
    torch.manual_seed(0)
    idx = torch.randint(0, 32, (4, 8))
    for kind, cls in (("auon", AuON), ("muon", Muon)):
        m = _TinyGPT()
        opts = build_optimizers(m, kind, lr=0.02)  # type: ignore[arg-type]
        assert isinstance(opts[0], cls) and isinstance(opts[1], torch.optim.AdamW)
    m = _TinyGPT()
    opt = AuONWithAuxAdam.from_model(m, lr=0.02, adamw_lr=3e-3)
    assert [g["use_auon"] for g in opt.param_groups] == [True, False, False]
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(m(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_aux_adam_groups_match_separate_optimizers() -> None:
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(8, 8))
    b = torch.nn.Parameter(torch.randn(8))
    w2, b2 = torch.nn.Parameter(w.detach().clone()), torch.nn.Parameter(b.detach().clone())
    one = AuONWithAuxAdam(
        [
            {"params": [w], "use_auon": True, "lr": 0.05},
            {"params": [b], "use_auon": False, "lr": 1e-2, "weight_decay": 0.1},
        ]
    )
    oa = AuON([w2], lr=0.05)
    ob = torch.optim.AdamW([b2], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        gw, gb = torch.randn(8, 8), torch.randn(8)
        w.grad, b.grad, w2.grad, b2.grad = gw, gb, gw.clone(), gb.clone()
        one.step()
        oa.step()
        ob.step()
    # the AuON group is AuON's step, the AdamW group is torch's functional AdamW: the same bits
    assert torch.equal(w, w2)
    assert torch.equal(b, b2)
    sd = one.state_dict()
    assert set(sd["state"][1]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("foreach", [None, False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_aux_adamw_groups_are_bit_identical_to_torch_adamw(
    foreach: bool | None, maximize: bool
) -> None:
    torch.manual_seed(2)
    shapes = [(8, 8), (8,), (3, 4, 2)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kw = {"lr": 3e-3, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.05}
    kw |= {"maximize": maximize, "foreach": foreach}
    one = AuONWithAuxAdam([{"params": ours, "use_auon": False, **kw}])
    ref = torch.optim.AdamW(theirs, **kw)  # type: ignore[arg-type]
    for _ in range(6):
        for a, b in zip(ours, theirs, strict=True):
            g = torch.randn_like(a) * 10.0
            a.grad, b.grad = g, g.clone()
        one.step()
        ref.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(one.state[a]["exp_avg_sq"], ref.state[b]["exp_avg_sq"])
        assert torch.equal(one.state[a]["step"], ref.state[b]["step"])
