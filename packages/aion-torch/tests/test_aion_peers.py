"""Peer residuals, ``make_residual``, ``AionBlock`` and the parameter-group helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import aion_torch
from aion_torch import AionBlock, AionResidual, aion_parameters, weight_decay_param_groups
from aion_torch.residuals import (
    RESIDUAL_KINDS,
    AdminResidual,
    DeepNormResidual,
    FixedScaleResidual,
    LayerScaleResidual,
    PlainResidual,
    ReZeroResidual,
    deepnorm_init_,
    make_residual,
)


def test_simple_peers() -> None:
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    torch.testing.assert_close(PlainResidual()(x, y), x + y)
    torch.testing.assert_close(FixedScaleResidual(0.1)(x, y, x_norm=x), x + 0.1 * y)
    assert torch.equal(ReZeroResidual()(x, y), x)  # identity at init
    ls = LayerScaleResidual(8)
    torch.testing.assert_close(ls.gamma, torch.full((8,), 1e-5))
    torch.testing.assert_close(ls(x, y), x + 1e-5 * y)
    assert set(FixedScaleResidual(0.5).state_dict()) == {"scale"}
    with pytest.raises(ValueError, match="Input shapes must match"):
        PlainResidual()(x, y[..., :4])
    with pytest.raises(ValueError, match="scale must be finite"):
        FixedScaleResidual(math.inf)


def test_rezero_learns_from_zero() -> None:
    res = ReZeroResidual()
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    res(x, y).pow(2).sum().backward()
    assert res.alpha.grad is not None and float(res.alpha.grad) != 0.0


def test_deepnorm_oracles() -> None:
    res = DeepNormResidual(16, 12)
    assert res.alpha == (2 * 12) ** 0.25
    assert res.alpha == pytest.approx(2.21336, abs=5e-6)  # the spec quotes 5 decimals
    x, y = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    torch.testing.assert_close(res(x, y), nn.functional.layer_norm(2.21336 * x + y, (16,)))
    model = nn.ModuleDict(
        {"v_proj": nn.Linear(4, 4), "fc1": nn.Linear(4, 4), "q_proj": nn.Linear(4, 4)}
    )
    before = {k: m.weight.detach().clone() for k, m in model.items()}  # type: ignore[union-attr]
    names = deepnorm_init_(model, 12)
    assert sorted(names) == ["fc1", "v_proj"]
    beta = (8 * 12) ** -0.25
    assert beta == pytest.approx(0.319472, abs=5e-7)  # the spec quotes 6 digits
    torch.testing.assert_close(model["v_proj"].weight, before["v_proj"] * beta)
    torch.testing.assert_close(model["fc1"].weight, before["fc1"] * beta)
    assert torch.equal(model["q_proj"].weight, before["q_proj"])
    with pytest.raises(ValueError, match="matched no submodule"):
        deepnorm_init_(nn.Linear(2, 2), 12)


def test_admin_oracles() -> None:
    logn = AdminResidual(8, 12)
    w_logn = math.sqrt(13 / math.log(13) - 1)  # √((N+1)/ln(N+1) − 1), N = 12
    assert w_logn == pytest.approx(2.01701, abs=5e-6)  # the spec quotes 5 decimals
    torch.testing.assert_close(logn.omega, torch.full((8,), w_logn))
    const = AdminResidual(8, 12, output_change="O(1)")
    assert math.sqrt(12) == pytest.approx(3.46410, abs=5e-6)
    torch.testing.assert_close(const.omega, torch.full((8,), math.sqrt(12)))
    x, y = torch.randn(2, 8), torch.randn(2, 8)
    torch.testing.assert_close(logn(x, y), nn.functional.layer_norm(logn.omega * x + y, (8,)))
    with pytest.raises(ValueError, match="output_change"):
        AdminResidual(8, 12, output_change="O(n)")  # type: ignore[arg-type]


def test_post_norm_flags_and_factory() -> None:
    flags = {kind: make_residual(kind, dim=8, num_layers=6).post_norm for kind in RESIDUAL_KINDS}  # type: ignore[arg-type]
    assert flags == {k: k in ("deepnorm", "admin") for k in RESIDUAL_KINDS}
    ref = make_residual("aion_reference", dim=8, num_layers=6)
    assert isinstance(ref, AionResidual) and ref.mode == "reference"
    fixed = make_residual("aion_fixed", dim=8, num_layers=6)
    assert isinstance(fixed, AionResidual)
    assert float(fixed.beta) == 0.0 and not fixed.beta.requires_grad and fixed.alpha0.requires_grad
    admin = make_residual("admin", dim=8, num_layers=6)
    assert isinstance(admin, AdminResidual)
    torch.testing.assert_close(admin.omega[0], torch.tensor(math.sqrt(13 / math.log(13) - 1)))
    scaled = make_residual("fixed", dim=8, num_layers=6, scale=1 / math.sqrt(12))
    assert isinstance(scaled, FixedScaleResidual)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_residual("resnet", dim=8, num_layers=6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aion_fixed sets beta"):
        make_residual("aion_fixed", dim=8, num_layers=6, beta=0.1)


def test_aion_block_structure_and_forward() -> None:
    layer = nn.Linear(8, 8)
    block = AionBlock(layer, 8, alpha0=0.2, ema_gamma=0.5)
    assert isinstance(block.norm, nn.LayerNorm) and block.layer is layer
    assert isinstance(block.aion, AionResidual) and block.residual is block.aion
    assert float(block.aion.alpha0.detach()) == pytest.approx(0.2) and block.aion.ema_gamma == 0.5
    with torch.no_grad():  # layer(n) = 2·n: energy ratio 4 against x_norm = n (not against x)
        layer.weight.copy_(2 * torch.eye(8))
        layer.bias.zero_()
    x = 3 * torch.randn(2, 3, 8) + 1
    out = block(x)
    n = nn.functional.layer_norm(x, (8,))
    alpha = 0.2 / (1 + 0.05 * (0.5 * 1.0 + 0.5 * 4.0))  # α0 / (1 + β·(γ·1 + (1 − γ)·4))
    torch.testing.assert_close(out, x + alpha * 2 * n)
    # α ≈ 0.18: fp32-relative (the default atol 1e-5 would be 5e-5 of α)
    torch.testing.assert_close(block.aion.alpha_cached, torch.tensor(alpha), rtol=1.3e-6, atol=0)
    assert set(block.state_dict()) >= {"aion.alpha0", "aion.ratio_ema", "norm.weight"}
    assert isinstance(AionBlock(nn.Identity(), 8, norm="rmsnorm").norm, nn.RMSNorm)
    masked = AionBlock(nn.Identity(), 8, mode="default")
    assert masked(x, mask=torch.ones(2, 3, dtype=torch.bool)).shape == x.shape


def test_aion_block_with_peer_residuals() -> None:
    x = torch.randn(2, 3, 8)
    post = AionBlock(nn.Linear(8, 8), 8, residual=DeepNormResidual(8, 4))
    assert isinstance(post.norm, nn.Identity)
    torch.testing.assert_close(post(x), post.aion(x, post.layer(x)))
    pre = AionBlock(nn.Linear(8, 8), 8, residual=PlainResidual())
    torch.testing.assert_close(pre(x), x + pre.layer(pre.norm(x)))
    with pytest.raises(TypeError, match="mask is only supported"):
        pre(x, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="cannot be combined"):
        AionBlock(nn.Identity(), 8, residual=PlainResidual(), sync_stats="deferred")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        AionBlock(nn.Identity(), 0)
    with pytest.raises(ValueError, match="norm must be one of"):
        AionBlock(nn.Identity(), 8, norm="batchnorm")  # type: ignore[arg-type]


def test_parameter_helpers() -> None:
    model = nn.Sequential(
        AionBlock(nn.Linear(8, 8), 8),
        AionBlock(nn.Linear(8, 8), 8, residual=LayerScaleResidual(8)),
        AionBlock(nn.Linear(8, 8), 8, residual=make_residual("aion_fixed", dim=8, num_layers=3)),
    )
    assert len(list(aion_parameters(model))) == 4
    groups = weight_decay_param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    zero_ids = {id(p) for p in groups[1]["params"]}
    assert id(model[0].aion.alpha0) in zero_ids and id(model[1].aion.gamma) in zero_ids
    assert id(model[2].aion.beta) not in zero_ids  # frozen: in no group
    assert id(model[0].layer.weight) in {id(p) for p in groups[0]["params"]}
    n_listed = sum(len(g["params"]) for g in groups)
    assert n_listed == sum(p.requires_grad for p in model.parameters())
    torch.optim.AdamW(groups, lr=1e-3)
    with pytest.raises(ValueError, match="weight_decay"):
        weight_decay_param_groups(model, -1.0)


def test_param_groups_is_a_deprecated_alias() -> None:
    """``aion_torch.param_groups`` (the old name; ``auon.param_groups`` has another contract)."""
    model = nn.Sequential(AionBlock(nn.Linear(8, 8), 8), nn.Linear(8, 8))
    with pytest.warns(DeprecationWarning, match=r"aion_torch\.weight_decay_param_groups") as rec:
        old = aion_torch.param_groups(model, 0.1)
    assert len(rec) == 1 and rec[0].filename == __file__  # attributed to the caller
    new = weight_decay_param_groups(model, 0.1)
    assert [g["weight_decay"] for g in old] == [g["weight_decay"] for g in new] == [0.1, 0.0]
    for a, b in zip(old, new, strict=True):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
