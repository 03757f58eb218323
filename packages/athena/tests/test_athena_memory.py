"""Tests of athena.memory.CrossTaskMemory: reservoir statistics, class balance, FIFO, collation,
determinism, state round trips, retrieval and input validation."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch

from athena.memory import CrossTaskMemory, _reservoir_slot

# ---------------------------------------------------------------------------- helpers


def _stream_batch(start: int, size: int, length: int = 3) -> dict[str, torch.Tensor]:
    """``size`` examples numbered ``start, start + 1, ...``: input_ids[i] = [n, n, ...]."""
    ids = torch.arange(start, start + size).unsqueeze(1).repeat(1, length)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones(size, length, dtype=torch.long),
        "labels": torch.arange(start, start + size) % 2,
    }


def _stored_numbers(memory: CrossTaskMemory) -> list[int]:
    """Example numbers (first token) in slot order."""
    if len(memory) == 0:
        return []
    batch = memory.gather(list(range(len(memory))))
    return [int(v) for v in batch["input_ids"][:, 0].tolist()]


def _simulate_reservoir(
    core: Callable[[int, int, torch.Generator], int | None],
    n: int,
    capacity: int,
    generator: torch.Generator,
) -> list[int]:
    """Run a pure-index reservoir over positions 0..n-1; returns the final slot contents."""
    slots: list[int] = []
    for pos in range(1, n + 1):
        slot = core(pos, capacity, generator)
        if slot is None:
            continue
        if slot == len(slots):
            slots.append(pos - 1)
        else:
            slots[slot] = pos - 1
    return slots


def _chi2_sf(x: float, df: int) -> float:
    """Survival function of the χ² distribution: Q(df/2, x/2), the regularised upper gamma."""
    return float(
        torch.special.gammaincc(
            torch.tensor(df / 2, dtype=torch.float64), torch.tensor(x / 2, dtype=torch.float64)
        )
    )


def _inclusion_p_value(
    core: Callable[[int, int, torch.Generator], int | None],
    runs: int = 10_000,
    n: int = 50,
    capacity: int = 10,
    seed: int = 0,
) -> float:
    """χ² test that every position of an n-stream is kept with probability M/n.

    O_i counts the runs (R of them) that end with position i in the reservoir; under the null
    E = R·p with p = M/n. Each run keeps exactly M positions (a sample without replacement), so
    the counts are not multinomial: Var(O_i) = R·p(1-p) and, because Σ_i O_i = R·M is fixed,
    Cov(O) = R·p(1-p)·n/(n-1)·(I - J/n). The statistic
        X² = (n-1)/n · Σ_i (O_i - E)² / (E·(1-p))
    is therefore asymptotically χ² with n-1 degrees of freedom (the plain Pearson sum would be
    too small by the factor (1-p)·n/(n-1) and the test too lenient).
    """
    generator = torch.Generator().manual_seed(seed)
    counts = [0] * n
    for _ in range(runs):
        for pos in _simulate_reservoir(core, n, capacity, generator):
            counts[pos] += 1
    p = capacity / n
    expected = runs * p
    x2 = (n - 1) / n * sum((o - expected) ** 2 for o in counts) / (expected * (1 - p))
    return _chi2_sf(x2, n - 1)


# ---------------------------------------------------------------------------- reservoir


def test_reservoir_inclusion_probability_is_m_over_n() -> None:
    assert _inclusion_p_value(_reservoir_slot) > 1e-3


def test_reservoir_chi2_test_rejects_an_off_by_one_reservoir() -> None:
    # the classic bug: j drawn from [0, n-1) keeps the n-th item with probability M/(n-1)
    def biased(n: int, capacity: int, generator: torch.Generator) -> int | None:
        if n <= capacity:
            return n - 1
        j = int(torch.randint(0, n - 1, (), generator=generator))
        return j if j < capacity else None

    assert _inclusion_p_value(biased) < 1e-3


def test_chi2_survival_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for x, df in [(49.0, 49), (80.0, 49), (3.0, 1), (0.5, 4)]:
        assert math.isclose(_chi2_sf(x, df), float(stats.chi2.sf(x, df)), rel_tol=1e-9)


def test_reservoir_core_keeps_first_m_and_returns_valid_slots() -> None:
    g = torch.Generator().manual_seed(3)
    assert [_reservoir_slot(n, 4, g) for n in range(1, 5)] == [0, 1, 2, 3]
    later = [_reservoir_slot(n, 4, g) for n in range(5, 2000)]
    assert all(s is None or 0 <= s < 4 for s in later)
    assert any(s is None for s in later)
    assert {s for s in later if s is not None} == {0, 1, 2, 3}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_class_uses_the_reservoir_core(seed: int) -> None:
    # the memory's storage generator is seeded with `seed`: same decisions as the core alone
    memory = CrossTaskMemory(memory_size=10, strategy="reservoir", seed=seed)
    for start in range(0, 50, 7):
        memory.add(_stream_batch(start, min(7, 50 - start)), task_id=0)
    expected = _simulate_reservoir(_reservoir_slot, 50, 10, torch.Generator().manual_seed(seed))
    assert _stored_numbers(memory) == expected
    assert memory.num_seen == 50
    assert len(memory) == 10


def test_reservoir_keeps_the_first_m_exactly() -> None:
    memory = CrossTaskMemory(memory_size=10)
    memory.add(_stream_batch(0, 4), task_id=0)
    memory.add(_stream_batch(4, 6), task_id=1)
    assert _stored_numbers(memory) == list(range(10))
    assert memory.task_counts() == {0: 4, 1: 6}
    memory.add(_stream_batch(10, 200), task_id=2)
    assert len(memory) == 10
    assert memory.num_seen == 210
    assert sum(memory.task_counts().values()) == 10


# ---------------------------------------------------------------------------- class balanced


def _class_batch(labels: list[int], start: int) -> dict[str, torch.Tensor]:
    size = len(labels)
    return {
        "input_ids": torch.arange(start, start + size).unsqueeze(1),
        "attention_mask": torch.ones(size, 1, dtype=torch.long),
        "labels": torch.tensor(labels),
    }


@pytest.mark.parametrize("memory_size", [30, 31, 32])
def test_class_balanced_counts_are_equal_after_a_skewed_stream(memory_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    # 80% / 15% / 5% of 1,000 examples: every class offers more than its share (≈ 10)
    stream = torch.multinomial(torch.tensor([0.80, 0.15, 0.05]), 1000, True, generator=g).tolist()
    memory = CrossTaskMemory(memory_size=memory_size, strategy="class_balanced")
    offered: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for start in range(0, 1000, 25):
        chunk = stream[start : start + 25]
        memory.add(_class_batch(chunk, start), task_id=0)
        for offset, label in enumerate(chunk):
            offered[label].append(start + offset)
    assert min(len(v) for v in offered.values()) > memory_size // 3
    counts = memory.class_counts()
    assert set(counts) == {(0, 0), (0, 1), (0, 2)}
    assert sum(counts.values()) == memory_size
    assert max(counts.values()) - min(counts.values()) <= 1
    # each class is a ring buffer: it holds its own most recent examples
    batch = memory.gather(list(range(len(memory))))
    for label in range(3):
        kept = sorted(
            int(n)
            for n, lab in zip(
                batch["input_ids"][:, 0].tolist(), batch["labels"].tolist(), strict=True
            )
            if lab == label
        )
        assert kept == offered[label][-counts[(0, label)] :]


def test_class_balanced_classes_are_per_task_and_new_classes_take_from_the_largest() -> None:
    memory = CrossTaskMemory(memory_size=8, strategy="class_balanced")
    memory.add(_class_batch([0, 1] * 4, 0), task_id=0)
    assert memory.class_counts() == {(0, 0): 4, (0, 1): 4}
    # label 0 of task 1 is a new class: it takes slots from the largest classes until balanced
    memory.add(_class_batch([0] * 10, 100), task_id=1)
    counts = memory.class_counts()
    assert counts[(1, 0)] in (2, 3)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert memory.task_counts() == {0: 8 - counts[(1, 0)], 1: counts[(1, 0)]}


def test_class_balanced_with_more_classes_than_slots() -> None:
    memory = CrossTaskMemory(memory_size=2, strategy="class_balanced")
    memory.add(_class_batch([0, 1, 2], 0), task_id=0)
    # class 2 holds no example so it takes the oldest slot (class 0's)
    assert memory.class_counts() == {(0, 1): 1, (0, 2): 1}


def test_class_balanced_label_errors() -> None:
    memory = CrossTaskMemory(memory_size=4, strategy="class_balanced")
    batch = _class_batch([0, 1], 0)
    with pytest.raises(ValueError, match="labels_key='label'"):
        memory.add(batch, task_id=0, labels_key="label")
    with pytest.raises(ValueError, match="one integer class label"):
        memory.add({**batch, "labels": torch.tensor([0.5, 1.0])}, task_id=0)
    with pytest.raises(ValueError, match="one integer class label"):
        memory.add({**batch, "labels": torch.tensor([[0, 1, 1], [1, 0, 0]])}, task_id=0)
    memory.add({**batch, "labels": torch.tensor([[0], [1]])}, task_id=0)  # (B, 1) is fine
    assert memory.class_counts() == {(0, 0): 1, (0, 1): 1}
    with pytest.raises(ValueError, match="class_balanced"):
        CrossTaskMemory(memory_size=4).class_counts()


# ---------------------------------------------------------------------------- fifo


def test_fifo_keeps_the_latest() -> None:
    memory = CrossTaskMemory(memory_size=5, strategy="fifo")
    for start in range(0, 12, 3):
        memory.add(_stream_batch(start, 3), task_id=start // 6)
    assert sorted(_stored_numbers(memory)) == [7, 8, 9, 10, 11]
    assert memory.num_seen == 12
    assert memory.task_counts() == {1: 5}


# ---------------------------------------------------------------------------- collation


def _padded_batch() -> dict[str, torch.Tensor]:
    # three examples of lengths 4, 2, 3, right-padded to 5; per-token labels (causal LM)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    ids = torch.tensor([[11, 12, 13, 14, 0], [21, 22, 0, 0, 0], [31, 32, 33, 0, 0]])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]),
        "labels": torch.where(mask.bool(), ids, torch.full_like(ids, -100)),
    }


def test_collation_pads_trimmed_examples() -> None:
    memory = CrossTaskMemory(memory_size=10, pad_token_id=7)
    memory.add(_padded_batch(), task_id=3)
    out = memory.gather([1, 0, 2])
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "labels", "task_ids"}
    torch.testing.assert_close(
        out["input_ids"], torch.tensor([[21, 22, 7, 7], [11, 12, 13, 14], [31, 32, 33, 7]])
    )
    torch.testing.assert_close(
        out["attention_mask"], torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    )
    torch.testing.assert_close(
        out["token_type_ids"], torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0]])
    )
    torch.testing.assert_close(
        out["labels"],
        torch.tensor([[21, 22, -100, -100], [11, 12, 13, 14], [31, 32, 33, -100]]),
    )
    torch.testing.assert_close(out["task_ids"], torch.tensor([3, 3, 3]))
    # a draw of the two shortest is padded to its own longest example only
    assert memory.gather([1])["input_ids"].shape == (1, 2)
    # sample() collates the same way
    sampled = memory.sample(3)
    assert sampled["input_ids"].shape == (3, 4)
    assert sorted(sampled["input_ids"][:, 0].tolist()) == [11, 21, 31]


def test_stored_examples_are_trimmed_detached_cpu_clones_of_one_row() -> None:
    batch = _padded_batch()
    embeds = torch.randn(3, 5, 4, requires_grad=True)
    memory = CrossTaskMemory(memory_size=10)
    memory.add({**batch, "inputs_embeds": embeds * 2}, task_id=0)
    state = memory.state_dict()
    lengths = [4, 2, 3]
    for ex, length in zip(state["examples"], lengths, strict=True):
        for key, t in ex["tensors"].items():
            assert t.device.type == "cpu"
            assert not t.requires_grad
            assert t.shape[0] == length, key
            # its own storage, the size of the example (not of the batch)
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), key
    batch["input_ids"].fill_(99)  # the caller reusing its buffers changes nothing stored
    assert memory.gather([0])["input_ids"].tolist() == [[11, 12, 13, 14]]
    torch.testing.assert_close(memory.gather([2])["inputs_embeds"][0], (embeds * 2).detach()[2, :3])
    assert memory.gather([1, 2])["inputs_embeds"].shape == (2, 3, 4)


def test_left_padding_is_handled_like_right_padding() -> None:
    right = _padded_batch()
    lengths = right["attention_mask"].sum(1).tolist()
    left = {
        key: torch.stack([torch.roll(row, 5 - n) for row, n in zip(value, lengths, strict=True)])
        for key, value in right.items()
    }
    assert left["attention_mask"][1].tolist() == [0, 0, 0, 1, 1]
    a = CrossTaskMemory(memory_size=10)
    b = CrossTaskMemory(memory_size=10)
    a.add(right, task_id=0)
    b.add(left, task_id=0)
    for key, value in a.gather([0, 1, 2]).items():
        torch.testing.assert_close(b.gather([0, 1, 2])[key], value)


def test_scalar_labels_are_stacked() -> None:
    memory = CrossTaskMemory(memory_size=10)
    batch = _padded_batch()
    batch["labels"] = torch.tensor([2, 0, 1])
    memory.add(batch, task_id=0)
    out = memory.gather([2, 0])
    assert out["labels"].tolist() == [1, 2]
    assert out["labels"].dtype == torch.long
    assert out["input_ids"].shape == (2, 4)


def test_token_labels_under_another_key_are_padded_with_ignore_index() -> None:
    memory = CrossTaskMemory(memory_size=10)
    batch = _padded_batch()
    batch["targets"] = batch.pop("labels")
    memory.add(batch, task_id=0, labels_key="targets")
    assert memory.gather([1, 0])["targets"][0].tolist() == [21, 22, -100, -100]


def test_batch_without_attention_mask_is_stored_whole() -> None:
    memory = CrossTaskMemory(memory_size=10, pad_token_id=5)
    memory.add({"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([0])}, 0)
    memory.add({"input_ids": torch.tensor([[4]]), "labels": torch.tensor([1])}, 1)
    assert memory.gather([0, 1])["input_ids"].tolist() == [[1, 2, 3], [4, 5, 5]]


def test_mixed_keys_need_a_task_filter() -> None:
    memory = CrossTaskMemory(memory_size=10)
    memory.add(_stream_batch(0, 2), task_id=0)
    extra = _stream_batch(2, 2)
    extra["token_type_ids"] = torch.zeros_like(extra["input_ids"])
    memory.add(extra, task_id=1)
    with pytest.raises(ValueError, match="different keys"):
        memory.gather([0, 2])
    assert "token_type_ids" in memory.sample(4, task_ids=[1])


# ---------------------------------------------------------------------------- sampling


def test_sample_without_replacement_capped_and_filtered() -> None:
    memory = CrossTaskMemory(memory_size=20)
    memory.add(_stream_batch(0, 6), task_id=0)
    memory.add(_stream_batch(6, 4), task_id=1)
    out = memory.sample(7)
    numbers = out["input_ids"][:, 0].tolist()
    assert len(numbers) == len(set(numbers)) == 7
    assert sorted(memory.sample(100)["input_ids"][:, 0].tolist()) == list(range(10))
    only = memory.sample(3, task_ids=1)
    assert only["task_ids"].tolist() == [1, 1, 1]
    assert set(only["input_ids"][:, 0].tolist()) <= {6, 7, 8, 9}
    assert memory.sample(50, task_ids=[0, 5])["task_ids"].tolist() == [0] * 6
    with pytest.raises(ValueError, match=r"task_ids=\[5\]"):
        memory.sample(2, task_ids=[5])


def test_sample_is_uniform_over_stored_examples() -> None:
    # draws of 3 from 10 stored: each example appears with probability 3/10 per draw
    memory = CrossTaskMemory(memory_size=10, seed=4)
    memory.add(_stream_batch(0, 10), task_id=0)
    counts = [0] * 10
    draws = 2000
    for _ in range(draws):
        for n in memory.sample(3)["input_ids"][:, 0].tolist():
            counts[n] += 1
    # same χ² correction as the reservoir test (a sample of 3 without replacement per draw)
    p, n = 0.3, 10
    e = draws * p
    x2 = (n - 1) / n * sum((o - e) ** 2 for o in counts) / (e * (1 - p))
    assert _chi2_sf(x2, n - 1) > 1e-3


def _fill(memory: CrossTaskMemory) -> CrossTaskMemory:
    for start in range(0, 40, 8):
        memory.add(_stream_batch(start, 8), task_id=start // 16)
    return memory


def test_sampling_is_deterministic_for_a_seed() -> None:
    a = _fill(CrossTaskMemory(memory_size=12, seed=5))
    b = _fill(CrossTaskMemory(memory_size=12, seed=5))
    c = _fill(CrossTaskMemory(memory_size=12, seed=6))
    draws_a = [a.sample(4)["input_ids"].tolist() for _ in range(5)]
    assert draws_a == [b.sample(4)["input_ids"].tolist() for _ in range(5)]
    assert draws_a != [c.sample(4)["input_ids"].tolist() for _ in range(5)]
    # an explicit generator is used instead of (and does not advance) the memory's own
    ga = a.sample(4, generator=torch.Generator().manual_seed(1))
    gb = b.get_rehearsal_batch(4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ga, gb)
    assert a.sample(4)["input_ids"].tolist() == b.sample(4)["input_ids"].tolist()
    # the alias draws from the same stream
    torch.testing.assert_close(a.get_rehearsal_batch(3), b.sample(3))


def test_sampling_does_not_change_what_is_stored() -> None:
    a = CrossTaskMemory(memory_size=6, seed=2)
    b = CrossTaskMemory(memory_size=6, seed=2)
    for start in range(0, 60, 6):
        a.add(_stream_batch(start, 6), task_id=0)
        b.add(_stream_batch(start, 6), task_id=0)
        b.sample(3)
    assert _stored_numbers(a) == _stored_numbers(b)


# ---------------------------------------------------------------------------- state


@pytest.mark.parametrize("strategy", ["reservoir", "class_balanced", "fifo"])
def test_state_dict_round_trip_continues_identically(strategy: str) -> None:
    def make() -> CrossTaskMemory:
        return CrossTaskMemory(memory_size=9, strategy=strategy, seed=3, feature_dim=2)  # type: ignore[arg-type]

    a = make()
    for start in range(0, 30, 6):
        a.add(_stream_batch(start, 6), task_id=start // 12, features=torch.randn(6, 2))
    a.sample(4)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = make()
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert len(b) == len(a)
    assert b.num_seen == a.num_seen
    assert b.task_counts() == a.task_counts()
    query = torch.randn(2)
    torch.testing.assert_close(b.retrieve(query, k=3), a.retrieve(query, k=3))
    for start in range(30, 90, 6):
        feats = torch.randn(6, 2)
        a.add(_stream_batch(start, 6), task_id=start // 12, features=feats)
        b.add(_stream_batch(start, 6), task_id=start // 12, features=feats)
        torch.testing.assert_close(b.sample(5), a.sample(5))
    assert _stored_numbers(b) == _stored_numbers(a)
    if strategy == "class_balanced":
        assert b.class_counts() == a.class_counts()


def test_load_state_dict_validates_before_changing_anything() -> None:
    a = _fill(CrossTaskMemory(memory_size=12))
    state = a.state_dict()
    b = CrossTaskMemory(memory_size=12)
    b.add(_stream_batch(100, 2), task_id=9)
    with pytest.raises(ValueError, match="strategy"):
        CrossTaskMemory(memory_size=12, strategy="fifo").load_state_dict(state)
    with pytest.raises(ValueError, match="memory_size"):
        CrossTaskMemory(memory_size=13).load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        b.load_state_dict({k: v for k, v in state.items() if k != "num_seen"})
    broken = {**state, "examples": [*state["examples"][:-1], {"tensors": {}}]}
    with pytest.raises(ValueError, match=r"examples'\]\[11\] is malformed"):
        b.load_state_dict(broken)
    assert b.task_counts() == {9: 2}
    assert b.num_seen == 2


# ---------------------------------------------------------------------------- retrieval


def test_retrieve_returns_the_exact_cosine_neighbours() -> None:
    memory = CrossTaskMemory(memory_size=10, feature_dim=2, num_neighbors=2, temperature=0.1)

    def at(deg: float, radius: float) -> list[float]:
        return [radius * math.cos(math.radians(deg)), radius * math.sin(math.radians(deg))]

    # angles 0°, 30°, 90°, 180°, 35° with very different norms; slot 1 has no feature
    memory.add(_stream_batch(0, 2), 0, features=torch.tensor([at(0, 0.1), at(30, 5.0)]))
    memory.add(_stream_batch(2, 1), 0)
    memory.add(
        _stream_batch(3, 3), 1, features=torch.tensor([at(90, 1.0), at(180, 9.0), at(35, 0.01)])
    )
    # slots: 0 → 0°, 1 → 30°, 2 → none, 3 → 90°, 4 → 180°, 5 → 35°
    idx, w = memory.retrieve(torch.tensor(at(10, 3.0)))
    # query at 10°: cos to 0° = cos 10° (0.985) > cos to 30° = cos 20° (0.940) > 35° (cos 25°)
    assert idx.tolist() == [0, 1]
    e0, e1 = math.exp(math.cos(math.radians(10)) / 0.1), math.exp(math.cos(math.radians(20)) / 0.1)
    torch.testing.assert_close(w, torch.tensor([e0 / (e0 + e1), e1 / (e0 + e1)]))
    # a batch of queries, and k larger than the examples with features (capped at 5)
    idx, w = memory.retrieve(torch.tensor([at(33, 1.0), at(170, 1.0)]), k=10)
    assert idx.tolist() == [[5, 1, 0, 3, 4], [4, 3, 5, 1, 0]]
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    assert memory.gather(idx[1, :1])["input_ids"][0, 0].item() == 4


def test_retrieve_errors() -> None:
    memory = CrossTaskMemory(memory_size=4, feature_dim=3)
    memory.add(_stream_batch(0, 2), 0)
    with pytest.raises(ValueError, match="no example in the memory was added with features"):
        memory.retrieve(torch.ones(3))
    memory.add(_stream_batch(2, 1), 0, features=torch.ones(1, 3))
    with pytest.raises(ValueError, match="feature_dim=3"):
        memory.retrieve(torch.ones(4))
    with pytest.raises(ValueError, match="k must be >= 1"):
        memory.retrieve(torch.ones(3), k=0)
    with pytest.raises(ValueError, match="non-finite"):
        memory.retrieve(torch.tensor([1.0, math.nan, 0.0]))
    with pytest.raises(ValueError, match=r"\(B, feature_dim\) = \(2, 3\)"):
        memory.add(_stream_batch(3, 2), 0, features=torch.ones(2, 4))


# ---------------------------------------------------------------------------- validation


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="memory_size must be >= 1, got 0"):
        CrossTaskMemory(memory_size=0)
    with pytest.raises(ValueError, match="temperature must be a finite value > 0, got 0"):
        CrossTaskMemory(temperature=0.0)
    with pytest.raises(ValueError, match=r"temperature.*-1"):
        CrossTaskMemory(temperature=-1.0)
    with pytest.raises(ValueError, match=r"strategy must be one of .* got 'lru'"):
        CrossTaskMemory(strategy="lru")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_neighbors"):
        CrossTaskMemory(num_neighbors=0)
    with pytest.raises(ValueError, match="feature_dim"):
        CrossTaskMemory(feature_dim=0)
    # the original positional signature, with a model that is kept but not needed
    model = torch.nn.Linear(2, 2)
    memory = CrossTaskMemory(model, 100, 768, 5, 0.1)
    assert memory.model is model
    assert memory.memory_size == 100


def test_add_and_sample_validation_leaves_state_unchanged() -> None:
    memory = CrossTaskMemory(memory_size=10)
    with pytest.raises(ValueError, match="empty memory"):
        memory.sample(1)
    memory.add(_stream_batch(0, 3), 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        memory.sample(0)
    bad_sizes = {**_stream_batch(3, 3), "labels": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match="inconsistent batch sizes"):
        memory.add(bad_sizes, 0)
    holes = _stream_batch(3, 3)
    holes["attention_mask"][2] = torch.tensor([1, 0, 1])
    with pytest.raises(ValueError, match="row 2 is neither right- nor left-padded"):
        memory.add(holes, 0)
    empty_row = _stream_batch(3, 3)
    empty_row["attention_mask"][1] = 0
    with pytest.raises(ValueError, match="row 1 has no nonzero"):
        memory.add(empty_row, 0)
    with pytest.raises(ValueError, match="reserved"):
        memory.add({**_stream_batch(3, 3), "task_ids": torch.zeros(3)}, 0)
    with pytest.raises(ValueError, match="non-finite"):
        memory.add({**_stream_batch(3, 3), "weights": torch.tensor([1.0, math.inf, 0.0])}, 0)
    with pytest.raises(ValueError, match="non-empty"):
        memory.add({}, 0)
    with pytest.raises(TypeError, match="task_id"):
        memory.add(_stream_batch(3, 3), "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index 3 is out of range"):
        memory.gather([3])
    assert len(memory) == 3
    assert memory.num_seen == 3
    assert memory.task_counts() == {0: 3}
    memory.add(_stream_batch(3, 0), 0)  # an empty batch is a no-op
    assert memory.num_seen == 3
