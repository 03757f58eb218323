"""Tests of the shared benchmark harness: corpora, the reference GPT, timing, statistics, results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

from benchmarks.harness import (
    GPT,
    GPTConfig,
    bits_per_byte,
    cosine_schedule,
    count_aten_ops,
    count_host_syncs,
    downsample,
    estimate_loss,
    get_batch,
    interleaved_timing,
    load_corpus,
    mean_std,
    paired_t_interval,
    student_t_quantile,
    t_interval,
    train_lm,
    wilson_interval,
    write_results,
)

TINY = GPTConfig(seq_len=16, d_model=32, n_layers=2, n_heads=2)


def test_pydoc_corpus_is_deterministic_and_disjoint() -> None:
    a, b = load_corpus("pydoc"), load_corpus("pydoc")
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))
        assert getattr(a, split).dtype == torch.uint8
    assert a.train.numel() > 300_000 and a.val.numel() > 5_000 and a.test.numel() > 5_000
    probe = bytes(a.val[:200].tolist())
    assert probe not in bytes(a.train.tolist())


def test_text_file_corpus(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(256)) * 10)
    c = load_corpus("pydoc", str(path))
    assert c.train.numel() + c.val.numel() + c.test.numel() == 2560
    (tmp_path / "small.txt").write_text("tiny")
    with pytest.raises(ValueError, match="data"):
        load_corpus("pydoc", str(tmp_path / "small.txt"))


def test_get_batch_targets_are_shifted_inputs() -> None:
    data = torch.arange(200, dtype=torch.uint8)
    x, y = get_batch(data, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    torch.testing.assert_close(y - x, torch.ones_like(x))
    with pytest.raises(ValueError, match="seq_len"):
        get_batch(data[:5], 1, 10, torch.Generator())


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_gpt_is_causal(positions: Literal["learned", "rotary"]) -> None:
    model = GPT(GPTConfig(seq_len=16, d_model=32, n_layers=2, n_heads=2, positions=positions))
    idx = torch.randint(0, 256, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt_ties_head_and_scales_output_projections() -> None:
    model = GPT(TINY)
    assert model.lm_head.weight is model.tok_emb.weight
    assert abs(float(model.blocks[0].mlp.fc2.weight.detach().std()) - 0.02 / 2) < 0.003
    untied = GPT(GPTConfig(seq_len=16, d_model=32, n_layers=2, n_heads=2, tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight


def test_gpt_residual_factory_contract() -> None:
    calls: list[tuple[int, bool]] = []

    class Recording(nn.Module):
        post_norm = False

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

        def forward(
            self, x: torch.Tensor, y: torch.Tensor, x_norm: torch.Tensor | None = None
        ) -> torch.Tensor:
            calls.append((self.index, x_norm is not None))
            return x + 0.5 * y

    class PostNorm(nn.Module):
        post_norm = True

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(32)

        def forward(
            self, x: torch.Tensor, y: torch.Tensor, x_norm: torch.Tensor | None = None
        ) -> torch.Tensor:
            assert x_norm is None
            out: torch.Tensor = self.norm(x + y)
            return out

    model = GPT(TINY, residual_factory=lambda i, c: Recording(i))
    model(torch.randint(0, 256, (1, 8)))
    assert calls == [(0, True), (1, True), (2, True), (3, True)]
    post = GPT(TINY, residual_factory=lambda i, c: PostNorm())
    assert post(torch.randint(0, 256, (1, 8))).shape == (1, 8, 256)


def test_gpt_rejects_bad_config_and_input() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="seq_len"):
        GPT(TINY)(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="idx"):
        GPT(TINY)(torch.zeros(17, dtype=torch.long))


def test_training_lowers_the_loss_and_is_reproducible() -> None:
    data = torch.tensor(list(b"abcabcabd" * 200), dtype=torch.uint8)

    def run() -> list[float]:
        torch.manual_seed(0)
        model = GPT(TINY)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        log = train_lm(
            model, opt, data, steps=30, batch_size=4, seq_len=16, seed=1, progress_bar=False
        )
        assert not log.crashed and len(log.losses) == 30
        return log.losses

    first, second = run(), run()
    assert first == second
    assert first[-1] < first[0] - 1.0


def test_estimate_loss_restores_mode() -> None:
    model = GPT(TINY)
    model.train()
    data = torch.randint(0, 256, (500,), dtype=torch.uint8)
    loss = estimate_loss(model, data, batch_size=2, seq_len=16, iters=2)
    assert model.training and abs(loss - math.log(256)) < 0.5


def test_schedule_statistics_and_units() -> None:
    assert cosine_schedule(0, 100) == pytest.approx(0.1)
    assert cosine_schedule(9, 100) == pytest.approx(1.0)
    assert cosine_schedule(100, 100) == pytest.approx(0.1)
    assert bits_per_byte(math.log(2.0)) == pytest.approx(1.0)
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("df", "expected"),
    # two-sided 95% critical values of Student's t (standard tables, 9 significant digits)
    [(1, 12.7062047), (2, 4.30265273), (4, 2.77644511), (9, 2.26215716), (30, 2.04227246)],
)
def test_student_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert student_t_quantile(0.975, df) == pytest.approx(expected, rel=1e-8)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, rel=1e-8)


def test_t_interval_is_the_textbook_formula() -> None:
    ci = t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.18244631 * math.sqrt(5.0 / 3.0) / 2.0  # t_{0.975,3} · s / √n, s² = 5/3
    assert (ci.mean, ci.n) == (2.5, 4)
    assert (ci.lo, ci.hi) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-8)
    assert ci.excludes_zero
    # three seeds whose differences straddle 0: the min–max would exclude nothing, t widens it
    wide = paired_t_interval([3.0, 3.1, 2.9], [3.05, 3.0, 3.0])
    assert wide.lo < wide.mean < wide.hi and not wide.excludes_zero
    single = t_interval([0.5])
    assert single.n == 1 and math.isnan(single.lo) and "no interval" in single.fmt()
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t_interval([1.0], [1.0, 2.0])


def test_downsample_keeps_ends_and_bounds_length() -> None:
    xs = [float(i) for i in range(1001)]
    ds = downsample(xs, 200)
    assert len(ds) == 200 and ds[0] == 0.0 and ds[-1] == 1000.0 and ds == sorted(ds)
    assert downsample(xs[:10], 200) == xs[:10]


def test_interleaved_timing_runs_arms_in_rounds() -> None:
    order: list[str] = []
    arms = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    result = interleaved_timing(arms, warmup=2, iters=5)
    assert order == ["a", "b"] * 7
    assert set(result) == {"a", "b"} and len(result["a"].samples_ms) == 5
    assert result["a"].q1_ms <= result["a"].median_ms <= result["a"].q3_ms


def test_count_aten_ops_counts_dispatched_operators() -> None:
    a, b = torch.ones(3), torch.ones(3)
    assert count_aten_ops(lambda: a + b) == 1
    assert count_aten_ops(lambda: (a + b).mul(2).sum()) == 3
    assert count_aten_ops(lambda: None) == 0


def test_timing_samples_us_rounds_to_significant_digits() -> None:
    result = interleaved_timing({"a": lambda: None}, warmup=1, iters=3)
    t = result["a"]
    assert len(t.samples_us()) == 3
    for ms, us in zip(t.samples_ms, t.samples_us(digits=2), strict=True):
        assert us == float(f"{ms * 1e3:.2g}")


def test_count_host_syncs() -> None:
    t = torch.ones(3)
    assert count_host_syncs(lambda: t.sum().item()) == 1
    assert count_host_syncs(lambda: t + 1) == 0


def test_write_results(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], label="a")
    ax.set(title="t", xlabel="step", ylabel="loss")
    folder = write_results(
        "pkg",
        "bench",
        config={"n": 1},
        records=[{"x": 1.5, "curve": [0.5, 0.25]}],
        markdown="| a |\n",
        figures={"": fig, "curve": fig},
        out_dir=tmp_path,
    )
    text = (folder / "bench.json").read_text()
    payload = json.loads(text)
    assert payload["config"] == {"n": 1} and payload["records"] == [
        {"x": 1.5, "curve": [0.5, 0.25]}
    ]
    assert '"curve": [0.5,0.25]' in text  # arrays on one line
    env = payload["environment"]
    assert env["threads"] == torch.get_num_threads()
    assert isinstance(env["argv"], list) and env["git_dirty"] in (True, False, None)
    md = (folder / "bench.md").read_text()
    assert "| a |" in md and "](bench.png)" in md and "](bench_curve.png)" in md
    assert (folder / "bench.png").stat().st_size > 0 and (folder / "bench_curve.png").exists()


def test_write_results_refuses_unlabelled_figures_and_large_files(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    ax.set_title("no axis labels")
    with pytest.raises(ValueError, match="labels"):
        write_results(
            "pkg", "b", config={}, records=[], markdown="", figures={"": fig}, out_dir=tmp_path
        )
    ax.set(xlabel="x", ylabel="y", title="")
    with pytest.raises(ValueError, match="title"):
        write_results(
            "pkg", "b", config={}, records=[], markdown="", figures={"": fig}, out_dir=tmp_path
        )
    with pytest.raises(ValueError, match="bytes"):
        write_results(
            "pkg", "big", config={}, records=[{"x": [0.1] * 300_000}], markdown="", out_dir=tmp_path
        )
    assert not (tmp_path / "pkg" / "big.json").exists()
