"""Logic of the inl-llm benchmarks (a) and (d) that CI's bench-quick smoke run does not check:
the parameter-saving arithmetic against closed forms, the verdict's reading of the card's claim,
the count cross-check, the generation output check, the rounds rule and the INL-share hooks."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_inl_generation as gen
from benchmarks import bench_inl_params as params
from inl_llm.configuration_inl import INLLLMConfig

TINY = {
    "d_model": 32,
    "num_layers": 1,
    "num_heads": 2,
    "num_iterations_per_layer": 2,
    "feedforward_dim": 64,
}


@pytest.fixture(scope="module")
def summary() -> dict[str, object]:
    _, s = params.analyse(("default", "small"))
    return s


def test_controller_saving_equals_closed_form(summary: dict[str, dict[str, object]]) -> None:
    for name in ("default", "small"):
        cfg = params.make_config(name)
        d, layers, hidden = cfg.d_model, cfg.num_layers, cfg.inl_controller_hidden
        one = 3 * d * hidden + hidden + hidden * 3 * d + 3 * d  # [h, x, v] → H → 3D
        film = 2 * 3 * layers
        c = summary[name]["controllers"]
        assert isinstance(c, dict)
        assert c["controllers_per_layer"] == layers * one
        assert c["controller_shared"] == one
        assert c["film"] == film
        assert c["pct_of_controllers"] == pytest.approx(100 * (1 - (one + film) / (layers * one)))
        assert c["pct_of_model"] < 5.0 < c["pct_of_controllers"]


def test_embedding_saving_equals_closed_form(summary: dict[str, dict[str, object]]) -> None:
    cfg = params.make_config("default")
    v, d, r = cfg.vocab_size, cfg.d_model, cfg.embedding_rank
    e = summary["default"]["embeddings"]
    assert isinstance(e, dict)
    assert e["embedding_full"] == v * d
    assert e["embedding_lowrank"] == v * r + r * d
    assert e["pct_of_embedding"] == pytest.approx(100 * (v * d - v * r - r * d) / (v * d))
    assert e["pct_of_embedding_and_head"] == pytest.approx(
        100 * (v * d - v * r - r * d) / (2 * v * d)
    )
    assert e["total_lowrank_untied"] - e["total_lowrank_tied"] == v * d


def test_verdict_reads_the_claim_from_the_numbers(summary: dict[str, object]) -> None:
    text = params.verdict(summary)
    assert "is right only as a statement about the controllers" in text
    # With 6 layers sharing saves 1 − 1/6 of the controllers: the claim no longer holds.
    fake = {"default": summary["small"]}
    assert "does not match even the controllers alone" in params.verdict(fake)


def test_count_refuses_disagreeing_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = INLLLMConfig.from_preset("small")
    assert params.count(cfg)["total"] == cfg.expected_num_parameters()
    monkeypatch.setattr(INLLLMConfig, "expected_num_parameters", lambda self: 1)
    with pytest.raises(RuntimeError, match="disagree"):
        params.count(cfg)


def test_check_same_tokens() -> None:
    a = torch.tensor([[1, 2, 3], [4, 5, 6]])
    gen.check_same_tokens(a, a.clone(), (2, 3))
    b = a.clone()
    b[1, 2] = 7
    with pytest.raises(RuntimeError, match="batch row 1, position 2"):
        gen.check_same_tokens(a, b, (2, 3))
    with pytest.raises(RuntimeError, match="shape"):
        gen.check_same_tokens(a, a, (2, 4))


def test_rounds_rule() -> None:
    cell = (64, 256, 8)
    assert gen.uncached_cost(cell) == sum(8 * (64 + i) for i in range(256))
    assert gen.rounds_for(cell, 10**12) == gen.MAX_ROUNDS
    assert gen.rounds_for(cell, 1) == 1
    assert gen.rounds_for(cell, 2 * gen.uncached_cost(cell)) == 2


def test_tiny_cell_and_inl_share() -> None:
    cpu = torch.device("cpu")
    model = gen.build_model(TINY, halting=False, device=cpu)
    rec = gen.time_cell(model, (4, 3, 2), 1, cpu, torch.Generator().manual_seed(0))
    assert rec["outputs_match"] and rec["speedup"] > 0
    ids = torch.randint(0, gen.VOCAB, (1, 4))
    for shares in (
        gen.inl_share_wall(model, ids, 3, cpu),
        gen.inl_share_profiler(model, ids, 3)[0],
    ):
        assert 0.0 < shares["decode_inl_ms"] < shares["decode_forward_ms"] <= shares["decode_ms"]
        assert 0.0 < shares["inl_share_of_decode"] <= shares["inl_share_of_decode_forwards"] < 1.0
    assert gen.decode_host_syncs(model, ids) == 0
