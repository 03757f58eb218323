"""EMATracker and ema_update_: the NaN-safe, host-sync-free exponential moving average."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptnn_core import EMATracker, ema_update_, energy_ratio, keep_fp32, masked_mean


def test_one_update_oracle() -> None:
    t = EMATracker(gamma=0.99, init=1.0)
    out = t.update_(torch.tensor(0.5))
    torch.testing.assert_close(out, torch.tensor(0.995))
    torch.testing.assert_close(t.value, torch.tensor(0.995))
    assert t.value.dtype == torch.float32
    assert t.num_updates.dtype == t.num_skipped.dtype == torch.int64
    assert int(t.num_updates) == 1
    assert int(t.num_skipped) == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_is_skipped(bad: float) -> None:
    t = EMATracker(gamma=0.9, init=2.0)
    t.update_(torch.tensor(1.0))
    before = t.value.clone()
    out = t.update_(torch.tensor(bad))
    assert torch.equal(t.value, before)
    assert torch.equal(out, before)
    assert int(t.num_updates) == 1
    assert int(t.num_skipped) == 1
    t.update_(torch.tensor(1.0))
    torch.testing.assert_close(t.value, before * 0.9 + 0.1)


def test_masked_mean_nan_skips_the_update() -> None:
    t = EMATracker(gamma=0.5, init=1.0)
    stat = masked_mean(torch.ones(4), torch.zeros(4, dtype=torch.bool))
    t.update_(stat)
    assert torch.equal(t.value, torch.tensor(1.0))
    assert int(t.num_skipped) == 1


def test_partly_non_finite_vector_updates_only_finite_entries() -> None:
    t = EMATracker(gamma=0.5, init=1.0, shape=(4,))
    t.update_(torch.tensor([3.0, float("nan"), float("inf"), -1.0]))
    torch.testing.assert_close(t.value, torch.tensor([2.0, 1.0, 1.0, 0.0]))
    assert int(t.num_updates) == 1
    assert int(t.num_skipped) == 1


def test_valid_mask_and_broadcasting() -> None:
    t = EMATracker(gamma=0.5, init=0.0, shape=(2, 3))
    t.update_(torch.tensor([2.0, 4.0, 6.0]), valid=torch.tensor([True, False]).unsqueeze(1))
    torch.testing.assert_close(t.value, torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    assert int(t.num_updates) == 1
    assert int(t.num_skipped) == 1
    t.update_(torch.tensor(2.0))  # a scalar broadcasts to the whole shape
    torch.testing.assert_close(t.value, torch.tensor([[1.5, 2.0, 2.5], [1.0, 1.0, 1.0]]))


def test_input_dtype_is_cast_and_detached() -> None:
    t = EMATracker(gamma=0.5, init=0.0)
    x = torch.tensor(3.0, dtype=torch.float16, requires_grad=True)
    out = t.update_(x * 2)
    assert not out.requires_grad
    assert t.value.dtype == torch.float32
    torch.testing.assert_close(t.value, torch.tensor(3.0))


def test_bias_correction_gives_exact_mean_of_constant_stream() -> None:
    t = EMATracker(gamma=0.9, init=0.0, bias_correction=True)
    torch.testing.assert_close(t.read(), torch.tensor(0.0))  # no update yet: 0, not 0/0
    for _ in range(30):
        out = t.update_(torch.tensor(3.7))
        torch.testing.assert_close(out, torch.tensor(3.7))
    # Without correction the raw value is still biased towards 0.
    torch.testing.assert_close(t.value, torch.tensor(3.7 * (1 - 0.9**30)))


def test_bias_correction_requires_zero_init() -> None:
    with pytest.raises(ValueError, match="init=0"):
        EMATracker(init=1.0, bias_correction=True)


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan")])
def test_gamma_out_of_range(gamma: float) -> None:
    with pytest.raises(ValueError, match="gamma"):
        EMATracker(gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        ema_update_(torch.zeros(()), torch.tensor(1.0), gamma)


def test_gamma_one_freezes_and_gamma_zero_copies() -> None:
    t = EMATracker(gamma=1.0, init=2.0)
    t.update_(torch.tensor(100.0))
    assert torch.equal(t.value, torch.tensor(2.0))
    t0 = EMATracker(gamma=0.0, init=2.0)
    t0.update_(torch.tensor(5.0))
    assert torch.equal(t0.value, torch.tensor(5.0))


def test_bad_inputs_name_the_argument() -> None:
    t = EMATracker(shape=(3,))
    with pytest.raises(ValueError, match="x of shape"):
        t.update_(torch.ones(4))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        t.update_(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid must be a bool tensor"):
        t.update_(torch.ones(3), valid=torch.ones(3))
    with pytest.raises(ValueError, match="valid of shape"):
        t.update_(torch.ones(3), valid=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="buf must have a real floating-point dtype"):
        ema_update_(torch.zeros(3, dtype=torch.int64), torch.ones(3), 0.9)
    with pytest.raises(ValueError, match="shape"):
        EMATracker(shape=(-1,))
    # Nothing changed after the rejected calls.
    assert torch.equal(t.value, torch.ones(3))
    assert int(t.num_updates) == int(t.num_skipped) == 0


def test_ema_update_on_caller_buffer() -> None:
    buf = torch.tensor([1.0, 1.0])
    out = ema_update_(buf, torch.tensor([0.0, float("nan")]), 0.75)
    assert out is buf
    torch.testing.assert_close(buf, torch.tensor([0.75, 1.0]))
    ema_update_(buf, torch.tensor([1.0, 2.0]), 0.5, valid=torch.tensor([False, True]))
    torch.testing.assert_close(buf, torch.tensor([0.75, 1.5]))


def test_state_dict_round_trip_and_deepcopy() -> None:
    t = EMATracker(gamma=0.8, init=0.0, shape=(2,), bias_correction=True)
    for v in (1.0, float("nan"), 3.0):
        t.update_(torch.tensor([v, 2 * v]))
    sd = t.state_dict()
    assert set(sd) == {"value", "num_updates", "num_skipped"}
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    t2 = EMATracker(gamma=0.8, init=0.0, shape=(2,), bias_correction=True)
    t2.load_state_dict(torch.load(buf, weights_only=True))
    for name in sd:
        assert torch.equal(getattr(t2, name), getattr(t, name))
    torch.testing.assert_close(t2.read(), t.read())
    t3 = copy.deepcopy(t)
    t3.update_(torch.tensor([0.0, 0.0]))
    assert not torch.equal(t3.value, t.value)  # the copy owns its buffers
    assert int(t3.num_updates) == int(t.num_updates) + 1


def test_update_is_in_place_on_the_registered_buffers() -> None:
    t = EMATracker(shape=(3,))
    ptrs = (t.value.data_ptr(), t.num_updates.data_ptr(), t.num_skipped.data_ptr())
    t.update_(torch.ones(3) * 0.5)
    t.update_(torch.full((3,), float("nan")))
    assert (t.value.data_ptr(), t.num_updates.data_ptr(), t.num_skipped.data_ptr()) == ptrs


# --- dtype conversions: the statistic stays fp32 --------------------------------------------

_HALF_CASTS = {
    "half": lambda m: m.half(),
    "bfloat16": lambda m: m.bfloat16(),
    "to_bf16": lambda m: m.to(torch.bfloat16),
    "to_fp16": lambda m: m.to(torch.float16),
}


@pytest.mark.parametrize("cast", sorted(_HALF_CASTS))
def test_half_casts_keep_the_value_fp32_without_rounding(cast: str) -> None:
    t = EMATracker(gamma=0.99, init=1.0 + 2.0**-20, shape=(2,))  # not representable in bf16/fp16
    before = t.value.clone()
    out = _HALF_CASTS[cast](t)
    assert out is t
    assert t.value.dtype == torch.float32
    assert torch.equal(t.value, before)  # the fp32 values, not rounded through the half dtype
    assert t.num_updates.dtype == t.num_skipped.dtype == torch.int64


def test_float64_cast_upgrades_and_device_moves_apply() -> None:
    t = EMATracker(gamma=0.9, init=0.5)
    assert t.double().value.dtype == torch.float64  # fp32 is the floor, not a ceiling
    assert t.float().value.dtype == torch.float32
    t.to(torch.device("meta"), torch.bfloat16)  # device move and half cast in one call
    assert t.value.device.type == "meta" and t.value.dtype == torch.float32
    assert t.num_updates.device.type == "meta"


def test_bf16_module_ema_trajectory_equals_fp32() -> None:
    """200 updates at a constant 1.5 from 1.0: a bf16 value would stall far below 1.5."""
    fp32 = EMATracker(gamma=0.99, init=1.0)
    bf16 = EMATracker(gamma=0.99, init=1.0).bfloat16()
    x = torch.tensor(1.5, dtype=torch.bfloat16)  # the observation itself is exact in bf16
    for _ in range(200):
        fp32.update_(x.float())
        bf16.update_(x)
        assert torch.equal(bf16.value, fp32.value)  # the same fp32 lerp on the same input
    # closed form 1.5 − 0.5·0.99²⁰⁰ = 1.43302…; 200 fp32 lerps stay within a few ulps of it
    torch.testing.assert_close(fp32.value, torch.tensor(1.5 - 0.5 * 0.99**200, dtype=torch.float32))


def test_keep_fp32_rule() -> None:
    orig = torch.tensor([1.0 + 2.0**-20])
    assert torch.equal(keep_fp32(orig.bfloat16(), orig), orig)
    assert keep_fp32(orig.bfloat16(), orig).dtype == torch.float32
    d = orig.double()
    assert keep_fp32(d, orig) is d
    i = torch.tensor([3])
    assert keep_fp32(i, i) is i
    with pytest.raises(TypeError, match=r"converted must be a torch\.Tensor"):
        keep_fp32(1.0, orig)  # type: ignore[arg-type]


# --- no host sync and no graph break -------------------------------------------------------


@pytest.fixture
def no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every host read-back of a tensor raise for the duration of the test."""

    def _boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("host sync")

    for name in ("item", "__bool__", "tolist", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, _boom)


def test_no_host_sync_in_update_and_energy(no_host_sync: None) -> None:
    t = EMATracker(gamma=0.9, init=0.0, shape=(), bias_correction=True)
    y, x = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.rand(2, 5) > 0.5
    for reduction in ("none", "mean", "ratio_of_means"):
        energy_ratio(y, x, mask=mask, reduction=reduction)
    t.update_(energy_ratio(y, x, mask=mask))
    t.update_(torch.tensor(float("nan")))
    t.read()
    ema_update_(torch.zeros(3), torch.ones(3), 0.5, valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(AssertionError, match="host sync"):
        bool(torch.tensor(True))  # the patch is active: the test can fail


@pytest.mark.gpu
def test_no_host_sync_cuda_sync_debug_mode() -> None:
    dev = torch.device("cuda")
    t = EMATracker(gamma=0.9).to(dev)
    y, x = torch.randn(2, 5, 8, device=dev), torch.randn(2, 5, 8, device=dev)
    t.update_(energy_ratio(y, x))  # warm-up outside the checked region
    torch.cuda.set_sync_debug_mode("error")
    try:
        t.update_(energy_ratio(y, x, mask=torch.ones(2, 5, dtype=torch.bool, device=dev)))
        t.read()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_zero_graph_breaks_dynamo_explain() -> None:
    torch._dynamo.reset()
    t = EMATracker(gamma=0.9, init=0.0, shape=(3,), bias_correction=True)
    x = torch.tensor([1.0, float("nan"), 2.0])
    explained = torch._dynamo.explain(t.update_)(x, torch.tensor([True, True, False]))
    assert explained.graph_break_count == 0
    assert explained.graph_count == 1
    explained = torch._dynamo.explain(ema_update_)(torch.zeros(3), x, 0.9)
    assert explained.graph_break_count == 0
    y, z = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    explained = torch._dynamo.explain(lambda a, b: t.update_(energy_ratio(a, b)[None]))(y, z)
    assert explained.graph_break_count == 0


# --- hypothesis: against a float64 reference loop ------------------------------------------

_values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)


@settings(max_examples=40, deadline=None)
@given(
    gamma=st.floats(0.0, 1.0),
    init=st.floats(-10.0, 10.0),
    stream=st.lists(_values, min_size=1, max_size=12),
)
def test_hypothesis_matches_reference_loop(gamma: float, init: float, stream: list[float]) -> None:
    t = EMATracker(gamma=gamma, init=init)
    ref, n_up, n_skip = float(torch.tensor(init, dtype=torch.float32)), 0, 0
    for v in stream:
        t.update_(torch.tensor(v))
        if math.isfinite(v):
            ref = gamma * ref + (1 - gamma) * float(torch.tensor(v, dtype=torch.float32))
            n_up += 1
        else:
            n_skip += 1
    assert torch.isfinite(t.value)
    # fp32 state against a float64 reference: fp32 rounding, relative to the largest magnitude
    # that went through the lerp (cancellation makes the result itself a poor scale).
    scale = max([abs(init), *(abs(v) for v in stream if math.isfinite(v))])
    atol = 1e-5 + 2 * len(stream) * 2.0**-24 * scale
    torch.testing.assert_close(
        t.value, torch.tensor(ref, dtype=torch.float32), rtol=1.3e-6, atol=atol
    )
    assert (int(t.num_updates), int(t.num_skipped)) == (n_up, n_skip)
