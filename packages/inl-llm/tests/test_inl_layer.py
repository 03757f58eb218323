"""INLLayer behaviour: zero-update init, validation, shared controller, excitation, state (spec §3.1)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from inl_llm import INLConfig, INLLayer, SharedINLController


def _inputs(
    d: int = 16, b: int = 2, s: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, s, d, generator=gen), torch.randn(b, s, d, generator=gen)


@pytest.mark.parametrize(
    "options", [{}, {"variant": "full", "excitation": "sparse"}, {"halting": "threshold"}]
)
def test_zero_update_at_initialisation(options: dict[str, object]) -> None:
    layer = INLLayer(INLConfig(d_model=16, **options)).train()  # type: ignore[arg-type]
    x0, h = _inputs()
    out = layer(x0, h)
    assert out.shape == x0.shape
    assert torch.equal(out, torch.zeros_like(x0))


def test_a_block_with_inl_equals_the_block_without_it_at_init() -> None:
    torch.manual_seed(0)
    d = 16
    attn = nn.MultiheadAttention(d, 2, batch_first=True)
    norm, inl = nn.LayerNorm(d), INLLayer(INLConfig(d_model=d))
    x = torch.randn(2, 6, d)
    a = attn(x, x, x, need_weights=False)[0]
    with_inl = x + a + inl(norm(x + a), a)
    assert torch.equal(with_inl, x + a)


def test_only_the_gate_gets_gradient_at_init_and_then_everything_learns() -> None:
    torch.manual_seed(0)
    layer = INLLayer(INLConfig(d_model=8, num_iterations=3))
    x0, h = _inputs(8)
    layer(x0, h).square().sum().backward()  # zero output: zero gradient everywhere
    assert all(p.grad is None or not p.grad.any() for p in layer.parameters())
    layer.zero_grad()
    (layer(x0, h) * torch.randn_like(x0)).sum().backward()
    assert layer.gate.grad is not None and layer.gate.grad.abs().sum() > 0
    with torch.no_grad():
        layer.gate.fill_(1.0)
    layer.zero_grad()
    (layer(x0, h) * torch.randn_like(x0)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_initial_coefficients_are_the_configured_ones() -> None:
    cfg = INLConfig(d_model=8, init_alpha=0.6, init_g=0.3, init_damping=0.05)
    layer = INLLayer(cfg)
    assert layer.controller is not None
    raw = layer.controller(torch.zeros(1, 64), torch.zeros(1, 8), torch.zeros(1, 8))
    from inl_llm.functional import stable_coefficients

    alpha, beta, g = stable_coefficients(
        raw[:, 0], raw[:, 1], raw[:, 2], alpha_max=0.95, p_margin=0.9, dt=0.1
    )
    torch.testing.assert_close(alpha, torch.full_like(alpha, 0.6))
    torch.testing.assert_close(g, torch.full_like(g, 0.3))
    torch.testing.assert_close(0.1 * g * beta, torch.full_like(g, 0.05))
    critical = INLConfig(d_model=8, init_alpha=0.5)
    assert critical.init_p == pytest.approx((1 - 0.5**0.5) ** 2)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpha_max": 1.0}, "alpha_max"),
        ({"alpha_max": 0.0}, "alpha_max"),
        ({"p_margin": 0.0}, "p_margin"),
        ({"p_margin": 1.5}, "p_margin"),
        ({"num_iterations": 0}, "num_iterations"),
        ({"dt": 0.0}, "dt"),
        ({"dt": float("nan")}, "dt"),
        ({"group_size": 0}, "group_size"),
        ({"variant": "deep"}, "variant"),
        ({"halting": "always"}, "halting"),
        ({"min_iterations": 9}, "min_iterations"),
        ({"init_alpha": 0.99}, "init_alpha"),
        ({"init_damping": 5.0}, "init_damping"),
        ({"excitation": "sparse"}, "excitation"),
        ({"compat": "reference", "variant": "full"}, "compat"),
        ({"d_model": 0}, "d_model"),
        ({"halt_eps": -1.0}, "halt_eps"),
    ],
)
def test_config_rejects_bad_values(options: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"d_model": 8}
    base.update(options)
    with pytest.raises(ValueError, match=match):
        INLConfig(**base)  # type: ignore[arg-type]


def test_forward_rejects_bad_shapes_and_masks() -> None:
    layer = INLLayer(INLConfig(d_model=8))
    x0, h = _inputs(8)
    with pytest.raises(ValueError, match="x0 must be"):
        layer(x0[..., :4], h[..., :4])
    with pytest.raises(ValueError, match="x0 must be"):
        layer(x0[0], h[0])
    with pytest.raises(ValueError, match="h must have"):
        layer(x0, h[:, :3])
    with pytest.raises(ValueError, match="mask"):
        layer(x0, h, mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="mask"):
        layer(x0, h, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="INLConfig"):
        INLLayer({"d_model": 8})  # type: ignore[arg-type]


def test_shared_scope_validation() -> None:
    cfg = INLConfig(d_model=8, controller_scope="shared")
    with pytest.raises(ValueError, match="needs shared"):
        INLLayer(cfg)
    with pytest.raises(ValueError, match="controller_scope is 'layer'"):
        INLLayer(INLConfig(d_model=8), shared=SharedINLController(cfg))
    with pytest.raises(ValueError, match="built for"):
        INLLayer(cfg, shared=SharedINLController(INLConfig(d_model=16, controller_scope="shared")))


class _Stack(nn.Module):
    def __init__(self, layers: int, d: int) -> None:
        super().__init__()
        cfg = INLConfig(
            d_model=d, num_iterations=3, controller_scope="shared", output_gate_init=1.0
        )
        self.controller = SharedINLController(cfg)
        self.layers = nn.ModuleList(INLLayer(cfg, shared=self.controller) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x, x)
        return x


def test_shared_controller_is_one_instance_with_gradients_from_every_layer() -> None:
    torch.manual_seed(0)
    stack = _Stack(3, 8)
    n_ctrl = sum(p.numel() for p in stack.controller.parameters())
    assert sum(
        p.numel() for p in stack.parameters()
    ) == n_ctrl + 3 * INLLayer.expected_num_parameters(stack.layers[0].config)
    assert all(layer.shared_controller is stack.controller for layer in stack.layers)
    assert not any(k.startswith("layers.") and ".controller" in k for k in stack.state_dict())
    # Each layer's output receives a gradient in one backward (hook count = L), and the shared
    # controller runs T times per layer.
    contributions: list[int] = []
    calls: list[int] = []

    def on_output(module: nn.Module, args: object, out: torch.Tensor) -> None:
        out.register_hook(lambda g: contributions.append(1))

    stack.controller.register_forward_hook(lambda m, i, o: calls.append(1))
    for layer in stack.layers:
        layer.register_forward_hook(on_output)
    x = torch.randn(2, 4, 8)
    stack(x).square().sum().backward()
    assert len(contributions) == 3
    assert len(calls) == 3 * 3
    # Zeroing the gradient path of one layer changes the shared gradient: every layer contributes.
    full = stack.controller.out.weight.grad.clone()  # type: ignore[union-attr]
    for skip in range(3):
        stack.zero_grad()
        y = x
        for i, layer in enumerate(stack.layers):
            y = y + (layer(y, y).detach() if i == skip else layer(y, y))
        y.square().sum().backward()
        assert not torch.allclose(stack.controller.out.weight.grad, full)  # type: ignore[arg-type]


def test_shared_controller_film_is_per_layer() -> None:
    torch.manual_seed(0)
    stack = _Stack(2, 8)
    x0, h = _inputs(8)
    a, b = stack.layers
    torch.testing.assert_close(a(x0, h), b(x0, h))
    with torch.no_grad():
        b.film_bias.add_(0.5)
    assert not torch.allclose(a(x0, h), b(x0, h))


def test_deepcopy_keeps_the_sharing_and_state_dict_round_trips() -> None:
    stack = _Stack(2, 8)
    twin = copy.deepcopy(stack)
    assert all(layer.shared_controller is twin.controller for layer in twin.layers)
    assert twin.layers[0].shared_controller is not stack.controller
    fresh = _Stack(2, 8)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(torch.randn_like(p))
    fresh.load_state_dict(stack.state_dict())
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(fresh(x), stack(x))


def test_excitation_only_in_training_and_on_the_configured_channels() -> None:
    cfg = INLConfig(
        d_model=40,
        variant="full",
        excitation="sparse",
        excitation_sparsity=0.1,
        output_gate_init=1.0,
    )
    layer = INLLayer(cfg)
    assert layer.excite_index.tolist() == [0, 10, 20, 30]
    x0, h = _inputs(40)
    quiet = INLLayer(INLConfig(d_model=40, variant="full", output_gate_init=1.0))
    quiet.load_state_dict(
        {k: v for k, v in layer.state_dict().items() if not k.startswith("excite")}
    )
    torch.testing.assert_close(layer.eval()(x0, h), quiet.eval()(x0, h))
    assert not torch.allclose(layer.train()(x0, h), quiet.train()(x0, h))
    # Seeded init: two layers agree, a different seed differs.
    other = INLLayer(INLConfig(d_model=40, variant="full", excitation="sparse", excitation_seed=7))
    assert torch.equal(INLLayer(cfg).excite_phase, layer.excite_phase)
    assert not torch.equal(other.excite_phase, layer.excite_phase)


def test_checkpointed_iterations_give_the_same_values_and_gradients() -> None:
    torch.manual_seed(0)
    cfg = INLConfig(d_model=8, num_iterations=4, output_gate_init=0.7)
    plain = INLLayer(cfg)
    ckpt = INLLayer(
        INLConfig(d_model=8, num_iterations=4, output_gate_init=0.7, checkpoint_iterations=True)
    )
    ckpt.load_state_dict(plain.state_dict())
    x0, h = _inputs(8)
    grads = []
    for layer in (plain, ckpt):
        x = x0.clone().requires_grad_()
        layer(x, h).square().sum().backward()
        grads.append([x.grad, *(p.grad for p in layer.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_eval_leaves_state_untouched_and_parameter_counts_match() -> None:
    for options in [
        {},
        {"mu_mode": "per_dim"},
        {"variant": "full", "excitation": "sparse"},
        {"compat": "reference"},
        {"halting": "threshold"},
    ]:
        cfg = INLConfig(d_model=24, group_size=10, **options)  # type: ignore[arg-type]
        layer = INLLayer(cfg).eval()
        assert sum(p.numel() for p in layer.parameters()) == INLLayer.expected_num_parameters(cfg)
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        layer(*_inputs(24))
        after = layer.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
        n_ctrl = sum(p.numel() for p in layer.controller_parameters())
        n_other = sum(p.numel() for p in layer.other_parameters())
        assert n_ctrl + n_other == INLLayer.expected_num_parameters(cfg)


def test_reference_mode_returns_x_T_and_masked_tokens_keep_x0() -> None:
    torch.manual_seed(0)
    layer = INLLayer(INLConfig(d_model=8, compat="reference"))
    x0, h = _inputs(8)
    out = layer(x0, h)
    assert not torch.allclose(out, torch.zeros_like(out))
    mask = torch.tensor([[True, True, False, True, False]] * 2)
    masked = layer(x0, h, mask=mask)
    torch.testing.assert_close(masked[~mask], x0[~mask])
    torch.testing.assert_close(masked[mask], out[mask])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_is_finite_and_close(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = INLLayer(INLConfig(d_model=16, output_gate_init=1.0))
    x0, h = _inputs(16)
    ref = layer(x0, h)
    out = layer.to(dtype)(x0.to(dtype), h.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(), ref, rtol=0.05, atol=0.05
    )  # bf16 has 8 bits of mantissa


def test_a_foreign_copy_of_inlconfig_is_accepted() -> None:
    # trust_remote_code loads configuration and modelling files into separate module folders, so
    # the config's INLConfig is another class with the same fields; the layer re-creates it.
    import dataclasses

    import inl_llm.inl_config as mod

    foreign_cls = dataclasses.make_dataclass(
        "INLConfig",
        [(f.name, f.type, f) for f in dataclasses.fields(mod.INLConfig)],
        frozen=True,
        kw_only=True,
    )
    foreign = foreign_cls(d_model=8, num_iterations=2)
    layer = INLLayer(foreign)
    assert type(layer.config) is INLConfig
    assert layer.config == INLConfig(d_model=8, num_iterations=2)
    with pytest.raises(TypeError, match="INLConfig"):
        INLLayer(object())  # type: ignore[arg-type]
