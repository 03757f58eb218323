"""``AionResidual``: ported aion-torch assertions (both modes) and the default-mode guarantees."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from aion_torch import AionBlock, AionResidual

MODES = ["default", "reference"]
STATE_KEYS = {"alpha0", "beta", "ratio_ema", "step_count", "alpha_cached"}


# α ≈ 0.1: the fp32 default atol (1e-5) would hide a 1e-4 relative error in α; compare α
# relatively, at fp32 resolution, and only with atol where a comment says why.
ALPHA_TOL = {"rtol": 1.3e-6, "atol": 0.0}


def _pair(*shape: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    return torch.randn(*shape).to(dtype), (0.3 * torch.randn(*shape)).to(dtype)


def _ratio_pair(*shape: int, r: float) -> tuple[Tensor, Tensor]:
    """``x`` random and ``y = √r·x``: every token has energy ratio ``r`` (up to ε/E[x²] ≈ 1e-8)."""
    x = torch.randn(*shape)
    return x, r**0.5 * x


def _first_step_alpha(r: float, alpha0: float = 0.1, beta: float = 0.05) -> float:
    """Hand-derived α of a fresh module's first training step (γ = 0.99, EMA from 1.0)."""
    return alpha0 / (1 + beta * (0.99 + 0.01 * r))


@contextmanager
def _no_host_sync() -> Iterator[None]:
    """Patch the host-sync entry points of Tensor to raise."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("host sync")

    saved = {name: getattr(Tensor, name) for name in ("item", "__bool__", "tolist")}
    try:
        for name in saved:
            setattr(Tensor, name, boom)
        yield
    finally:
        for name, fn in saved.items():
            setattr(Tensor, name, fn)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha0": 0.0}, "alpha0 must be positive"),
        ({"alpha0": -1.0}, "alpha0 must be positive"),
        ({"beta": -0.1}, "beta must be non-negative"),
        ({"ema_gamma": 1.5}, r"ema_gamma must be in \[0, 1\]"),
        ({"ema_gamma": -0.1}, r"ema_gamma must be in \[0, 1\]"),
        ({"epsilon": 0.0}, "epsilon must be positive"),
        ({"mode": "fast"}, "mode must be one of"),
        ({"reduction": "median"}, "reduction must be one of"),
        ({"sync_stats": "always"}, "sync_stats must be one of"),
        ({"max_ratio": 0.0}, "max_ratio must be positive"),
        ({"trainable": ("alpha0", "gamma")}, "trainable must contain only"),
        ({"reduction": "ratio_of_means", "sync_stats": "deferred"}, "ratio_of_means"),
        ({"mode": "reference", "detach_stats": False}, "detach_stats"),
        ({"mode": "reference", "sync_stats": "allreduce"}, "sync_stats"),
        ({"mode": "reference", "max_ratio": 10.0}, "max_ratio"),
        ({"mode": "reference", "trainable": ("alpha0",)}, "trainable"),
    ],
)
def test_constructor_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AionResidual(**kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_forward_errors_leave_state_untouched(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    before = copy.deepcopy(m.state_dict())
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="cannot be empty"):
        m(torch.zeros(0, 8), torch.zeros(0, 8))
    with pytest.raises(ValueError, match="y cannot be empty"):
        m(x, torch.zeros(0))
    with pytest.raises(ValueError, match=r"Input shapes must match: x .* vs y"):
        m(x, torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match=r"Input shapes must match: x .* vs x_norm"):
        m(x, x, torch.randn(2, 8))
    with pytest.raises(TypeError, match="return_stats by keyword"):
        m(x, x, True)
    with pytest.raises(ValueError, match="mask"):
        m(x, x, mask=torch.ones(2, 4, 8, dtype=torch.bool))
    if mode == "default":
        with pytest.raises(ValueError, match=r"mask must be bool with shape x.shape\[:-1\]"):
            m(x, x, mask=torch.ones(2, 4))
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert int(m.num_skipped) == 0 and torch.equal(m.pending, torch.zeros(2))


# ----------------------------------------------------------------------------- ported assertions
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(8, 16), (2, 8, 16), (2, 3, 4, 16), (2, 2, 2, 3, 16)])
def test_shapes_2d_to_5d(mode: str, shape: tuple[int, ...]) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    x, y = _ratio_pair(*shape, r=0.5)
    out = m(x, y)
    assert out.shape == shape
    alpha = _first_step_alpha(0.5)  # 0.0952608 (spec §4)
    torch.testing.assert_close(m.alpha_cached, torch.tensor(alpha), **ALPHA_TOL)
    torch.testing.assert_close(out, x + alpha * y)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_preserved(mode: str, dtype: torch.dtype) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    x, y = _pair(2, 4, 16, dtype=dtype)
    assert m(x, y).dtype == dtype
    assert m.eval()(x, y).dtype == dtype
    assert m.alpha_cached.dtype == torch.float32 and m.ratio_ema.dtype == torch.float32


@pytest.mark.parametrize("mode", MODES)
def test_step_count_counts_training_forwards_only(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    x, y = _pair(2, 4, 8)
    for _ in range(3):
        m(x, y)
    m.eval()
    ema = m.ratio_ema.clone()
    m(x, y)
    assert int(m.step_count) == 3 and m.step_count.dtype == torch.int32
    assert torch.equal(m.ratio_ema, ema)


@pytest.mark.parametrize("mode", MODES)
def test_larger_branch_energy_gives_smaller_alpha(mode: str) -> None:
    x = torch.randn(2, 4, 8)
    alphas = []
    for scale in (0.1, 1.0, 10.0):
        m = AionResidual(mode=mode, ema_gamma=0.0)  # type: ignore[arg-type]
        m(x, scale * torch.randn(2, 4, 8))
        alphas.append(float(m.alpha_cached))
    assert alphas[0] > alphas[1] > alphas[2]


@pytest.mark.parametrize("mode", MODES)
def test_gamma_semantics(mode: str) -> None:
    x, y = _pair(2, 4, 8)
    frozen = AionResidual(mode=mode, ema_gamma=1.0)  # type: ignore[arg-type]
    _, stats = frozen(x, y, return_stats=True)
    if mode == "reference":
        assert float(frozen.ratio_ema) == 1.0  # the original never touches it
    else:  # default: no smoothing, the buffer stores the last statistic for eval
        torch.testing.assert_close(frozen.ratio_ema, stats["ratio"])
    moving = AionResidual(mode=mode, ema_gamma=0.9)  # type: ignore[arg-type]
    moving(x, y)
    assert float(moving.ratio_ema) != 1.0


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_round_trip_and_partial_load(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    x, y = _pair(2, 4, 8)
    for _ in range(3):
        m(x, y)
    sd = m.state_dict()
    assert set(sd) == STATE_KEYS
    fresh = AionResidual(mode=mode)  # type: ignore[arg-type]
    fresh.load_state_dict(sd)
    for k in STATE_KEYS:
        assert torch.equal(fresh.state_dict()[k], sd[k])
    partial = AionResidual(mode=mode)  # type: ignore[arg-type]
    result = partial.load_state_dict({"alpha0": torch.tensor(0.3)}, strict=False)
    assert float(partial.alpha0.detach()) == pytest.approx(0.3)
    assert set(result.missing_keys) == STATE_KEYS - {"alpha0"}


def test_checkpoints_cross_load_between_modes_strict() -> None:
    x, y = _pair(2, 4, 8)
    ref = AionResidual(mode="reference")
    ref(x, y)
    default = AionResidual()
    default.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(default.ratio_ema, ref.ratio_ema)
    default(x, y)
    ref.load_state_dict(default.state_dict(), strict=True)
    assert int(ref.step_count) == 2


@pytest.mark.parametrize("mode", MODES)
def test_zero_inputs_and_extreme_magnitudes(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    z = torch.zeros(2, 4, 8)
    assert torch.equal(m(z, z), z)
    for mag in (1e-10, 1e10):
        x, y = _pair(2, 4, 8)
        out = m(mag * x, mag * y)
        assert torch.isfinite(out).all() and torch.isfinite(m.alpha_cached)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 128])
def test_batch_sizes(mode: str, batch: int) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    x, y = _pair(batch, 4, 8)
    assert m(x, y).shape == (batch, 4, 8)


@pytest.mark.parametrize("mode", MODES)
def test_hundred_steps_finite(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    for _ in range(100):
        x, y = _pair(2, 4, 8)
        out = m(x, y)
    assert torch.isfinite(out).all() and int(m.step_count) == 100


@pytest.mark.parametrize("mode", MODES)
def test_double_backward_with_retain_graph(mode: str) -> None:
    m = AionResidual(mode=mode)  # type: ignore[arg-type]
    x, y = _pair(2, 4, 8)
    y.requires_grad_(True)
    out = m(x, y)
    out.sum().backward(retain_graph=True)
    assert m.alpha0.grad is not None
    g1 = m.alpha0.grad.clone()
    out.sum().backward()
    torch.testing.assert_close(m.alpha0.grad, 2 * g1)


# ----------------------------------------------------------------------------- default mode
def _tiny_model(**kw: Any) -> nn.Sequential:
    return nn.Sequential(*(AionBlock(nn.Linear(16, 16), 16, **kw) for _ in range(4)))


@pytest.mark.parametrize("sync", ["none", "deferred", "allreduce"])
def test_no_host_sync_in_forward_and_backward(sync: str) -> None:
    model = _tiny_model(sync_stats=sync)
    x = torch.randn(2, 5, 16)
    mask = torch.rand(2, 5) > 0.3
    with _no_host_sync():
        model(x).sum().backward()
        for block in model:
            block(x, mask=mask).sum().backward()
        model.eval()
        model(x).sum().backward()


def test_nan_batch_is_skipped() -> None:
    m = AionResidual()
    x, y = _pair(2, 4, 8)
    m(x, y)
    ema = m.ratio_ema.clone()
    bad = y.clone()
    bad[0, 0, 0] = float("nan")
    m(x, bad)
    assert torch.equal(m.ratio_ema, ema)
    assert int(m.num_skipped) == 1
    m(x, torch.full_like(y, float("inf")))  # Inf in y: clamping must not let it through
    m(torch.full_like(x, float("inf")), y)  # Inf in x: the ratio would be 0, still skipped
    assert torch.equal(m.ratio_ema, ema) and int(m.num_skipped) == 3
    out = m(x, y)
    assert torch.isfinite(out).all() and torch.isfinite(m.alpha_cached)
    assert float(m.ratio_ema) != float(ema)
    assert int(m.step_count) == 5


def test_padding_mask_gives_the_unpadded_alpha() -> None:
    x, y = _pair(2, 6, 8)
    real = AionResidual(ema_gamma=0.0)
    real(x, y)
    xp = torch.cat([x, torch.zeros(2, 6, 8)], dim=1)
    yp = torch.cat([y, torch.randn(2, 6, 8)], dim=1)  # branch output on padding is not 0
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 6)], dim=1).bool()
    padded = AionResidual(ema_gamma=0.0)
    padded(xp, yp, mask=mask)
    # the same tokens summed inside a longer masked row: fp32 summation order only (a few ulps)
    torch.testing.assert_close(padded.alpha_cached, real.alpha_cached, **ALPHA_TOL)
    unmasked = AionResidual(ema_gamma=0.0)
    unmasked(xp, yp)  # without the mask the padding dominates (clamped ratios of y/ε)
    assert float(unmasked.alpha_cached) < 0.5 * float(real.alpha_cached)


def test_all_padding_skips_the_update() -> None:
    m = AionResidual()
    x, y = _pair(2, 4, 8)
    m(x, y, mask=torch.zeros(2, 4, dtype=torch.bool))
    assert float(m.ratio_ema) == 1.0 and int(m.num_skipped) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_zero_and_large_values_give_finite_alpha(dtype: torch.dtype) -> None:
    m = AionResidual()
    y = torch.randn(2, 4, 64).to(dtype)
    m(torch.zeros(2, 4, 64, dtype=dtype), y)  # zero stream: ε must not underflow
    assert torch.isfinite(m.alpha_cached) and torch.isfinite(m.ratio_ema)
    big = (1000 * torch.randn(2, 4, 64)).to(dtype)  # RMS 1000: E[x²] = 1e6 > fp16 max
    out = m(big, big)
    assert torch.isfinite(m.alpha_cached) and torch.isfinite(out).all()
    assert float(m.ratio_ema) != 1.0


def test_max_ratio_clamps_the_statistic() -> None:
    m = AionResidual(ema_gamma=0.0, max_ratio=5.0)
    x = torch.ones(2, 4, 8)
    _, stats = m(x, 100 * x, return_stats=True)
    torch.testing.assert_close(stats["ratio"], torch.tensor(5.0))


def test_ratio_of_means() -> None:
    m = AionResidual(ema_gamma=0.0, reduction="ratio_of_means")
    x = torch.stack([torch.ones(8), 3 * torch.ones(8)]).unsqueeze(0)  # energies 1 and 9
    y = torch.stack([2 * torch.ones(8), torch.ones(8)]).unsqueeze(0)  # energies 4 and 1
    _, stats = m(x, y, return_stats=True)
    torch.testing.assert_close(stats["ratio"], torch.tensor(5.0 / 10.0))


def test_deepcopy_averaged_model_and_eval_backward() -> None:
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 5, 16)
    model(x).pow(2).mean().backward()
    opt.step()
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(x), model(x))
    avg = AveragedModel(model)
    avg.update_parameters(model)
    assert avg(x).shape == x.shape
    model.eval()
    for _ in range(2):  # twice: no stale graph is held between calls
        opt.zero_grad()
        model(x).pow(2).mean().backward()
    res = model[0].aion
    assert isinstance(res, AionResidual) and res.alpha0.grad is not None
    assert float(res.alpha0.grad) != 0.0


def test_buffers_are_updated_in_place() -> None:
    m = AionResidual(sync_stats="deferred")
    ptrs = {name: b.data_ptr() for name, b in m.named_buffers()}
    pending_ptr = m.pending.data_ptr()  # the accumulator is not a buffer (DDP would broadcast it)
    x, y = _pair(2, 4, 8)
    for _ in range(3):
        m(x, y)
    m.eval()(x, y)
    assert ptrs == {name: b.data_ptr() for name, b in m.named_buffers()}
    assert m.pending.data_ptr() == pending_ptr and float(m.pending[1]) == 3 * 8


def test_eval_alpha_uses_current_parameters() -> None:
    m = AionResidual()
    x, y = _ratio_pair(2, 4, 8, r=0.5)
    m(x, y)  # ratio_ema = 0.99 + 0.01·0.5 = 0.995
    with torch.no_grad():  # an optimiser step after the last training forward
        m.alpha0.add_(0.2)
    m.eval()
    out, stats = m(x, y, return_stats=True)
    expected = 0.3 / (1 + 0.05 * 0.995)  # the new α0 = 0.3, not the cached α of α0 = 0.1
    torch.testing.assert_close(stats["alpha"], torch.tensor(expected), **ALPHA_TOL)
    torch.testing.assert_close(out, x + expected * y)
    torch.testing.assert_close(m.alpha_cached, torch.tensor(_first_step_alpha(0.5)), **ALPHA_TOL)


def test_negative_beta_and_alpha0_are_clamped_with_straight_through_gradient() -> None:
    m = AionResidual()
    x, y = _pair(2, 4, 8)
    with torch.no_grad():
        m.beta.fill_(-1.0)
    m(x, y).sum().backward()
    torch.testing.assert_close(m.alpha_cached, m.alpha0.detach().reshape(()))  # β = −1 as β = 0
    assert m.beta.grad is not None and float(m.beta.grad) != 0.0  # it can come back
    with torch.no_grad():
        m.alpha0.fill_(-0.5)
    assert torch.equal(m.eval()(x, y), x)  # α0 < 0 acts as 0


def test_detached_statistics_give_exact_identity_gradients() -> None:
    m = AionResidual()
    x, y = _ratio_pair(2, 4, 8, r=2.0)
    x.requires_grad_(True)
    y.requires_grad_(True)
    m(x, y).sum().backward()
    assert x.grad is not None and y.grad is not None
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(y.grad, m.alpha_cached.expand_as(y))
    torch.testing.assert_close(m.alpha_cached, torch.tensor(_first_step_alpha(2.0)), **ALPHA_TOL)


def test_undetached_statistics_match_reference_gradients() -> None:
    live = AionResidual(detach_stats=False)
    ref = AionResidual(mode="reference")
    for _ in range(3):
        x, y = _pair(2, 4, 8)
        grads = []
        for m in (live, ref):
            xi = x.clone().requires_grad_(True)
            yi = y.clone().requires_grad_(True)
            m(xi, yi).pow(2).sum().backward()
            grads.append((xi.grad, yi.grad, m.alpha0.grad, m.beta.grad))
            m.zero_grad()
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(live.ratio_ema, ref.ratio_ema)


def test_trainable_freezes_parameters() -> None:
    m = AionResidual(beta=0.0, trainable=("alpha0",))
    assert m.alpha0.requires_grad and not m.beta.requires_grad
    assert m.no_weight_decay() == {"alpha0", "beta"}


def test_return_stats_default_mode() -> None:
    m = AionResidual()
    x, y = _ratio_pair(2, 4, 8, r=2.0)
    out, stats = m(x, y, return_stats=True)
    alpha = _first_step_alpha(2.0)  # 0.0951928 (spec §4)
    torch.testing.assert_close(out, x + alpha * y)
    torch.testing.assert_close(stats["alpha"], torch.tensor(alpha), **ALPHA_TOL)
    torch.testing.assert_close(stats["ratio"], torch.tensor(2.0))
    torch.testing.assert_close(stats["ratio_ema"], torch.tensor(0.99 + 0.01 * 2.0))
    assert set(stats) == {"alpha", "ratio", "ratio_ema"}
    assert all(
        isinstance(v, Tensor) and v.ndim == 0 and not v.requires_grad for v in stats.values()
    )
    torch.testing.assert_close(stats["alpha"], m.alpha_cached)


def test_gradcheck_float64() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    a0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)

    def call(mod: AionResidual) -> Callable[..., Tensor]:
        def f(x: Tensor, y: Tensor, a0: Tensor, b: Tensor) -> Tensor:
            # fresh EMA per call, so repeated evaluations see the same function
            state = {"alpha0": a0, "beta": b, "ratio_ema": torch.tensor(0.7, dtype=torch.float64)}
            out: Tensor = torch.func.functional_call(mod, state, (x, y))
            return out

        return f

    for kw in ({"detach_stats": False}, {"mode": "reference"}):
        for training in (True, False):
            mod = AionResidual(ema_gamma=0.9, **kw).double().train(training)  # type: ignore[arg-type]
            assert torch.autograd.gradcheck(call(mod), (x, y, a0, b))
    # detached statistics: exact w.r.t. the parameters (x and y enter α only through no_grad)
    mod = AionResidual(ema_gamma=0.9).double()
    xd, yd = x.detach(), y.detach()
    assert torch.autograd.gradcheck(lambda a, c: call(mod)(xd, yd, a, c), (a0, b))
