"""Rehearsal memory for continual learning: store a bounded set of past examples and replay them.

`CrossTaskMemory` keeps at most ``memory_size`` examples drawn from a stream of batches (one task
after another) and hands back collated rehearsal batches to mix into the training of later tasks
(experience replay). Each stored example is a detached CPU clone of *one* row of the batch,
trimmed to its real length, so the memory costs what the examples cost, not what their batches
cost. Three rules decide what is kept once the memory is full:

* ``"reservoir"`` (default): Vitter's Algorithm R ("Random Sampling with a Reservoir", Vitter,
  1985). The first ``M`` items are kept; the ``n``-th item (``n > M``) replaces a uniformly chosen
  slot with probability ``M / n``. Every item of the stream is then in the memory with the same
  probability ``M / n``, whatever its task.
* ``"class_balanced"``: one ring buffer per class, a class being a ``(task_id, label)`` pair (so
  label 0 of task 0 and label 0 of task 1 are different classes). The capacity is shared equally
  among the classes seen so far. While the memory is not full every example is stored. Once it is
  full, an example of class ``c`` takes the slot of the oldest example of the largest class only
  when that makes the counts more even (``count[c] + 1 < max count``); otherwise it replaces the
  oldest example of its own class (a class holding no example always takes a slot, even when
  there are more classes than slots). When several classes are largest, the one holding the
  oldest example gives up that example. A new class therefore grows by one slot per example it offers
  until it reaches its equal share, and once every class has offered at least its share the counts
  differ by at most one.
* ``"fifo"``: the original ATHENA behaviour, a ring buffer of the ``M`` most recent examples.

Usage::

    memory = CrossTaskMemory(memory_size=200, strategy="reservoir", seed=0)
    for task_id, loader in enumerate(task_loaders):
        for batch in loader:
            if len(memory) > 0:
                replay = memory.sample(8)  # dict of right-padded tensors plus "task_ids"
                ...
            memory.add(batch, task_id)

``retrieve`` is a small pure-torch replacement for the original's scikit-learn nearest-neighbour
search over stored features (cosine similarity, softmax weights with a temperature).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

__all__ = ["CrossTaskMemory", "Strategy"]

Strategy = Literal["reservoir", "class_balanced", "fifo"]
"""How a full memory decides which example to drop (see the module docstring)."""

_STRATEGIES: tuple[str, ...] = get_args(Strategy)
_IGNORE_INDEX = -100  # label padding value understood by torch.nn.CrossEntropyLoss and HF models
_RESERVED_KEY = "task_ids"


def _reservoir_slot(n: int, capacity: int, generator: torch.Generator) -> int | None:
    """One step of Vitter's Algorithm R: where the ``n``-th item of a stream goes.

    Args:
        n: 1-based position of the item in the stream (the number of items offered so far,
            this one included).
        capacity: Reservoir size ``M``.
        generator: Source of randomness (one draw per item beyond the first ``M``).

    Returns:
        The slot index in ``[0, M)`` the item is written to (for ``n <= M`` the next free slot
        ``n - 1``), or ``None`` when the item is not kept. For ``n > M`` an index ``j`` is drawn
        uniformly from ``[0, n)``; the item replaces slot ``j`` when ``j < M``, which happens with
        probability ``M / n`` and then picks each slot with probability ``1 / M``.
    """
    if n <= capacity:
        return n - 1
    j = int(torch.randint(0, n, (), generator=generator))
    return j if j < capacity else None


@dataclass(frozen=True)
class _Example:
    """One stored example.

    Attributes:
        tensors: The example's tensors, keyed like the batch it came from (no batch dimension;
            sequence-shaped tensors trimmed to the real length).
        seq_keys: Keys of ``tensors`` whose first dimension is the sequence (padded on collation).
        task_id: Task the example belongs to.
        order: 0-based position of the example in the stream of offered items.
        label: Class label (``"class_balanced"`` only), else ``None``.
        feature: Optional ``(feature_dim,)`` feature used by `CrossTaskMemory.retrieve`.
    """

    tensors: dict[str, Tensor]
    seq_keys: frozenset[str]
    task_id: int
    order: int
    label: int | None
    feature: Tensor | None


def _check_int(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _real_spans(mask: Tensor) -> list[tuple[int, int]]:
    """``[start, end)`` of the ones in each row of a ``(B, T)`` attention mask.

    Right padding (ones then zeros) and left padding (zeros then ones) are both accepted; a row
    whose ones are not one contiguous run, or that has no ones, raises ``ValueError``.
    """
    real = mask != 0
    batch, length = real.shape
    lengths = real.sum(dim=1)
    start = real.to(torch.uint8).argmax(dim=1)
    end = length - real.flip(dims=(1,)).to(torch.uint8).argmax(dim=1)
    spans: list[tuple[int, int]] = []
    for row, (n, s, e) in enumerate(
        zip(lengths.tolist(), start.tolist(), end.tolist(), strict=True)
    ):
        if n == 0:
            raise ValueError(f"attention_mask row {row} has no nonzero entry (an empty example)")
        if e - s != n:
            raise ValueError(
                f"attention_mask row {row} is neither right- nor left-padded: its nonzero entries "
                f"are not one contiguous run ({mask[row].tolist()})"
            )
        spans.append((s, e))
    assert len(spans) == batch
    return spans


def _pad_value(key: str, label_keys: Iterable[str], pad_token_id: int) -> int:
    if key == "input_ids":
        return pad_token_id
    if key in label_keys:
        return _IGNORE_INDEX
    return 0  # attention_mask, token_type_ids, position_ids, anything else sequence-shaped


def _collate(
    examples: Sequence[_Example], label_keys: Iterable[str], pad_token_id: int
) -> dict[str, Tensor]:
    """Stack examples into a batch, right-padding the sequence-shaped tensors."""
    label_keys = set(label_keys)
    keys = set(examples[0].tensors)
    for ex in examples[1:]:
        if set(ex.tensors) != keys:
            raise ValueError(
                "cannot collate examples with different keys: "
                f"{sorted(keys)} (task {examples[0].task_id}) vs {sorted(ex.tensors)} "
                f"(task {ex.task_id}); sample one task at a time with task_ids="
            )
    out: dict[str, Tensor] = {}
    for key in sorted(keys):
        parts = [ex.tensors[key] for ex in examples]
        is_seq = [key in ex.seq_keys for ex in examples]
        if any(is_seq) and not all(is_seq):
            raise ValueError(
                f"cannot collate {key!r}: it is sequence-shaped in some stored examples and "
                "per-example in others; sample one task at a time with task_ids="
            )
        trailing = {tuple(p.shape[1:]) if is_seq[0] else tuple(p.shape) for p in parts}
        if len(trailing) > 1:
            raise ValueError(f"cannot collate {key!r}: stored shapes differ ({sorted(trailing)})")
        dtypes = {p.dtype for p in parts}
        if len(dtypes) > 1:
            raise ValueError(
                f"cannot collate {key!r}: stored dtypes differ ({sorted(map(str, dtypes))})"
            )
        if not is_seq[0]:
            out[key] = torch.stack(parts)
            continue
        longest = max(p.shape[0] for p in parts)
        value = _pad_value(key, label_keys, pad_token_id)
        padded = parts[0].new_full((len(parts), longest, *parts[0].shape[1:]), value)
        for row, p in enumerate(parts):
            padded[row, : p.shape[0]] = p
        out[key] = padded
    out[_RESERVED_KEY] = torch.tensor([ex.task_id for ex in examples], dtype=torch.long)
    return out


class CrossTaskMemory:
    """A bounded rehearsal memory shared across tasks (experience replay).

    Examples are offered with `add` (a dict batch of tensors with a leading batch dimension) and
    replayed with `sample` (a collated, right-padded batch). Which examples stay once the memory
    is full depends on ``strategy`` (see the module docstring for the three rules).

    Storage rules:

    * Every tensor of the batch must have the same leading size ``B``.
    * A tensor whose shape starts with ``(B, T)``, ``T`` the length of ``attention_mask``, is
      sequence-shaped: each row is cut to the span where ``attention_mask`` is nonzero. Right and
      left padding are both handled (the stored example has no padding; `sample` pads on the
      right); a mask row that is not one contiguous run of nonzeros raises ``ValueError``. Without
      an ``attention_mask`` nothing is trimmed and tensors shaped ``(B, T_ids, ...)`` like
      ``input_ids`` are treated as sequences.
    * Each stored tensor is a contiguous, detached CPU clone of one row (the batch is moved to the
      CPU once, never copied per example).

    Collation (`sample`, `gather`): sequence-shaped tensors are right-padded to the longest
    example drawn, ``input_ids`` with ``pad_token_id``, the labels key (``labels_key`` of `add`)
    with -100, ``attention_mask``, ``token_type_ids`` and any other sequence with 0; per-example
    tensors (scalar class labels) are stacked. A ``task_ids`` tensor ``(N,)`` (int64) is added.

    Args:
        model: Accepted for compatibility with the original signature and kept as ``self.model``;
            the memory does not need it (it stores inputs, not model features).
        memory_size: Capacity ``M`` (number of examples). Must be >= 1.
        feature_dim: Size of the optional per-example features given to `add` and `retrieve`.
        num_neighbors: Default ``k`` of `retrieve`.
        temperature: Softmax temperature of `retrieve` (> 0).
        strategy: ``"reservoir"``, ``"class_balanced"`` or ``"fifo"``.
        seed: Seeds the memory's two private generators, one for what is stored (reservoir
            decisions) and one for `sample`, so sampling never changes what gets stored.
        pad_token_id: Padding value for ``input_ids`` in collated batches.

    Raises:
        ValueError: For ``memory_size < 1``, ``feature_dim < 1``, ``num_neighbors < 1``,
            ``temperature <= 0`` (or not finite) or an unknown ``strategy``.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        memory_size: int = 1000,
        feature_dim: int = 768,
        num_neighbors: int = 5,
        temperature: float = 0.1,
        *,
        strategy: Strategy = "reservoir",
        seed: int = 0,
        pad_token_id: int = 0,
    ) -> None:
        self.memory_size = _check_int("memory_size", memory_size, 1)
        self.feature_dim = _check_int("feature_dim", feature_dim, 1)
        self.num_neighbors = _check_int("num_neighbors", num_neighbors, 1)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise TypeError(f"temperature must be a float, got {temperature!r}")
        if not (temperature > 0 and temperature < float("inf")):
            raise ValueError(f"temperature must be a finite value > 0, got {temperature}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {list(_STRATEGIES)}, got {strategy!r}")
        self.temperature = float(temperature)
        self.strategy: Strategy = strategy
        self.seed = _check_int("seed", seed)
        self.pad_token_id = _check_int("pad_token_id", pad_token_id)
        self.model = model
        self._storage_generator = torch.Generator().manual_seed(self.seed)
        self._sample_generator = torch.Generator().manual_seed(self.seed + 1)
        self._reset()

    def _reset(self) -> None:
        self._slots: list[_Example] = []
        self._num_seen = 0
        self._label_keys: set[str] = set()
        # class_balanced only: slot indices per (task_id, label), oldest first
        self._class_slots: dict[tuple[int, int], deque[int]] = {}

    # ------------------------------------------------------------------ inspection

    @property
    def num_seen(self) -> int:
        """Total number of examples offered to `add` so far (stored or not)."""
        return self._num_seen

    def __len__(self) -> int:
        """Number of examples stored (at most ``memory_size``)."""
        return len(self._slots)

    def task_counts(self) -> dict[int, int]:
        """Number of stored examples per task id, sorted by task id."""
        counts: dict[int, int] = {}
        for ex in self._slots:
            counts[ex.task_id] = counts.get(ex.task_id, 0) + 1
        return dict(sorted(counts.items()))

    def class_counts(self) -> dict[tuple[int, int], int]:
        """Stored examples per ``(task_id, label)`` class (``"class_balanced"`` only).

        Raises:
            ValueError: When the strategy is not ``"class_balanced"``.
        """
        if self.strategy != "class_balanced":
            raise ValueError(f"class_counts needs strategy='class_balanced', not {self.strategy!r}")
        return {key: len(slots) for key, slots in sorted(self._class_slots.items()) if slots}

    def __repr__(self) -> str:
        return (
            f"CrossTaskMemory(memory_size={self.memory_size}, strategy={self.strategy!r}, "
            f"stored={len(self)}, num_seen={self.num_seen})"
        )

    # ------------------------------------------------------------------ adding

    def add(
        self,
        batch: Mapping[str, Tensor],
        task_id: int,
        labels_key: str = "labels",
        *,
        features: Tensor | None = None,
    ) -> None:
        """Offer every example of a batch to the memory.

        The whole batch is validated before anything is stored.

        Args:
            batch: Tensors with a common leading batch size ``B`` (``input_ids``,
                ``attention_mask``, ``labels`` and so on). Labels are per-example ``(B,)`` (class
                labels) or per-token ``(B, T)`` (causal LM). The key ``"task_ids"`` is reserved.
            task_id: Task the examples belong to.
            labels_key: Key of the labels: padded with -100 on collation when per-token, and the
                class of each example for ``"class_balanced"`` (which needs integer or bool labels
                of shape ``(B,)`` or ``(B, 1)``).
            features: Optional ``(B, feature_dim)`` features stored with the examples for
                `retrieve` (for example the pooled encoder output).

        Raises:
            TypeError: For a non-tensor value or a non-int ``task_id``.
            ValueError: For an empty batch, the reserved key, inconsistent batch sizes, a bad
                attention mask, non-finite floating values, a features shape other than
                ``(B, feature_dim)``, or (``"class_balanced"``) missing or non-class labels.
        """
        task_id = _check_int("task_id", task_id)
        if not isinstance(batch, Mapping) or len(batch) == 0:
            raise ValueError(f"batch must be a non-empty dict of tensors, got {batch!r}")
        if _RESERVED_KEY in batch:
            raise ValueError(f"batch key {_RESERVED_KEY!r} is reserved (sample() adds it)")
        for key, value in batch.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"batch[{key!r}] must be a Tensor, got {type(value).__name__}")
            if value.dim() == 0:
                raise ValueError(f"batch[{key!r}] has no batch dimension (shape ())")
        sizes = {key: int(value.shape[0]) for key, value in batch.items()}
        b = next(iter(sizes.values()))
        if any(size != b for size in sizes.values()):
            raise ValueError(f"inconsistent batch sizes (leading dimensions): {sizes}")
        if features is not None:
            if not isinstance(features, Tensor):
                raise TypeError(f"features must be a Tensor, got {type(features).__name__}")
            if tuple(features.shape) != (b, self.feature_dim):
                raise ValueError(
                    f"features must have shape (B, feature_dim) = {(b, self.feature_dim)}, "
                    f"got {tuple(features.shape)}"
                )
            if not features.is_floating_point():
                raise ValueError(f"features must be floating point, got {features.dtype}")
        if self.strategy == "class_balanced" and labels_key not in batch:
            raise ValueError(
                f"strategy='class_balanced' needs class labels: labels_key={labels_key!r} is not "
                f"in the batch (keys: {sorted(batch)})"
            )
        if b == 0:
            return

        cpu = {key: value.detach().to("cpu") for key, value in batch.items()}
        for key, value in cpu.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"batch[{key!r}] has non-finite values")
        cpu_features = None if features is None else features.detach().to("cpu")
        if cpu_features is not None and not bool(torch.isfinite(cpu_features).all()):
            raise ValueError("features has non-finite values")

        labels: list[int] | None = None
        if self.strategy == "class_balanced":
            lab = cpu[labels_key]
            if lab.dim() == 2 and lab.shape[1] == 1:
                lab = lab[:, 0]
            if lab.dim() != 1 or lab.is_floating_point() or lab.is_complex():
                raise ValueError(
                    "strategy='class_balanced' needs one integer class label per example: "
                    f"batch[{labels_key!r}] has shape {tuple(cpu[labels_key].shape)} and dtype "
                    f"{cpu[labels_key].dtype}"
                )
            labels = [int(v) for v in lab.tolist()]

        mask = cpu.get("attention_mask")
        if mask is not None:
            if mask.dim() != 2:
                raise ValueError(f"attention_mask must have shape (B, T), got {tuple(mask.shape)}")
            seq_len = int(mask.shape[1])
            spans = _real_spans(mask)
        else:
            ids = cpu.get("input_ids")
            seq_len = int(ids.shape[1]) if ids is not None and ids.dim() >= 2 else -1
            spans = [(0, seq_len)] * b
        seq_keys = frozenset(
            key for key, value in cpu.items() if value.dim() >= 2 and value.shape[1] == seq_len
        )

        examples: list[_Example] = []
        for row in range(b):
            start, end = spans[row]
            tensors = {
                key: (value[row, start:end] if key in seq_keys else value[row]).clone(
                    memory_format=torch.contiguous_format
                )
                for key, value in cpu.items()
            }
            feature = None
            if cpu_features is not None:
                feature = cpu_features[row].clone(memory_format=torch.contiguous_format)
            examples.append(
                _Example(
                    tensors=tensors,
                    seq_keys=seq_keys,
                    task_id=task_id,
                    order=self._num_seen + row,
                    label=None if labels is None else labels[row],
                    feature=feature,
                )
            )

        self._label_keys.add(labels_key)
        for ex in examples:
            self._num_seen += 1
            self._insert(ex)

    def _insert(self, ex: _Example) -> None:
        m = self.memory_size
        if self.strategy == "reservoir":
            slot = _reservoir_slot(self._num_seen, m, self._storage_generator)
            if slot is None:
                return
            if slot == len(self._slots):
                self._slots.append(ex)
            else:
                self._slots[slot] = ex
        elif self.strategy == "fifo":
            if len(self._slots) < m:
                self._slots.append(ex)
            else:
                self._slots[ex.order % m] = ex
        else:
            self._insert_balanced(ex)

    def _insert_balanced(self, ex: _Example) -> None:
        assert ex.label is not None
        key = (ex.task_id, ex.label)
        own = self._class_slots.setdefault(key, deque())
        if len(self._slots) < self.memory_size:
            own.append(len(self._slots))
            self._slots.append(ex)
            return
        largest = max(len(slots) for slots in self._class_slots.values())
        if len(own) + 1 < largest or not own:
            # the largest class holding the oldest example gives that example up
            donor = min(
                (slots for slots in self._class_slots.values() if len(slots) == largest),
                key=lambda slots: self._slots[slots[0]].order,
            )
            slot = donor.popleft()
        else:
            slot = own.popleft()  # ring buffer: replace the class's own oldest example
        self._slots[slot] = ex
        own.append(slot)

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        batch_size: int,
        *,
        task_ids: int | Iterable[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Draw a rehearsal batch uniformly without replacement from the stored examples.

        When fewer than ``batch_size`` examples are eligible, all of them are returned (in random
        order): the batch is capped at what is stored.

        Args:
            batch_size: Number of examples to draw (>= 1).
            task_ids: Restrict the draw to these task ids (one id or several); ``None`` for all.
            generator: CPU generator to draw with; the memory's own seeded sampling generator when
                ``None`` (so a seed gives the same sequence of batches).

        Returns:
            The collated batch (see the class docstring): the stored keys, right-padded, plus
            ``task_ids`` ``(N,)``, ``N = min(batch_size, eligible examples)``.

        Raises:
            ValueError: For ``batch_size < 1``, an empty memory, or no stored example of the
                requested tasks.
        """
        batch_size = _check_int("batch_size", batch_size, 1)
        if not self._slots:
            raise ValueError("cannot sample from an empty memory (add examples first)")
        if task_ids is None:
            candidates = list(range(len(self._slots)))
        else:
            wanted = {task_ids} if isinstance(task_ids, int) else set(task_ids)
            for t in wanted:
                _check_int("task_ids entry", t)
            candidates = [i for i, ex in enumerate(self._slots) if ex.task_id in wanted]
            if not candidates:
                raise ValueError(
                    f"the memory holds no example of task_ids={sorted(wanted)} "
                    f"(stored per task: {self.task_counts()})"
                )
        gen = self._sample_generator if generator is None else generator
        perm = torch.randperm(len(candidates), generator=gen)[:batch_size].tolist()
        return self.gather([candidates[i] for i in perm])

    def get_rehearsal_batch(
        self,
        batch_size: int,
        *,
        task_ids: int | Iterable[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Alias of `sample` (the original ATHENA name)."""
        return self.sample(batch_size, task_ids=task_ids, generator=generator)

    def gather(self, indices: Sequence[int] | Tensor) -> dict[str, Tensor]:
        """Collate the stored examples at the given slot indices (as returned by `retrieve`).

        Indices are positions in the memory, ``0 <= i < len(self)``, valid until the next `add`.

        Args:
            indices: Slot indices (a sequence of ints or a 1-D integer tensor), at least one.

        Returns:
            The collated batch, in the order of ``indices`` (see the class docstring).

        Raises:
            ValueError: For no index or an index out of range.
        """
        idx = indices.reshape(-1).tolist() if isinstance(indices, Tensor) else list(indices)
        if not idx:
            raise ValueError("indices must name at least one stored example")
        for i in idx:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self._slots):
                raise ValueError(
                    f"index {i!r} is out of range for a memory of {len(self)} examples"
                )
        return _collate([self._slots[i] for i in idx], self._label_keys, self.pad_token_id)

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, features: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """Nearest stored examples by cosine similarity, with softmax weights.

        Only examples stored with ``features=`` take part. ``k`` is capped at their number.

        Args:
            features: Query features ``(feature_dim,)`` or ``(Q, feature_dim)``.
            k: Number of neighbours (default ``num_neighbors``), >= 1.

        Returns:
            ``(indices, weights)``, both ``(Q, k)`` (``(k,)`` for a 1-D query), on the CPU:
            slot indices (int64, usable with `gather`) ordered from most to least similar, and
            ``softmax(cos / temperature)`` over those ``k`` neighbours (float32, or float64 for a
            float64 query).

        Raises:
            ValueError: When no stored example has a feature, for a bad query shape, non-finite
                query values or ``k < 1``.
        """
        k = self.num_neighbors if k is None else _check_int("k", k, 1)
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a Tensor, got {type(features).__name__}")
        single = features.dim() == 1
        query = features.unsqueeze(0) if single else features
        if query.dim() != 2 or query.shape[1] != self.feature_dim:
            raise ValueError(
                f"features must have shape (feature_dim,) or (Q, feature_dim) with feature_dim="
                f"{self.feature_dim}, got {tuple(features.shape)}"
            )
        owners = [i for i, ex in enumerate(self._slots) if ex.feature is not None]
        if not owners:
            raise ValueError(
                "retrieve needs stored features: no example in the memory was added with features="
            )
        if not features.is_floating_point():
            raise ValueError(f"features must be floating point, got {features.dtype}")
        dtype = torch.promote_types(features.dtype, torch.float32)
        query = query.detach().to("cpu", dtype)
        if not bool(torch.isfinite(query).all()):
            raise ValueError("features has non-finite values")
        keys = torch.stack([f for i in owners if (f := self._slots[i].feature) is not None])
        keys = torch.nn.functional.normalize(keys.to(dtype), dim=1)
        cos = torch.nn.functional.normalize(query, dim=1) @ keys.T  # (Q, S)
        k = min(k, len(owners))
        sims, pos = cos.topk(k, dim=1)
        weights = torch.softmax(sims / self.temperature, dim=1)
        indices = torch.tensor(owners, dtype=torch.long)[pos]
        if single:
            return indices[0], weights[0]
        return indices, weights

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The memory's contents and generator states, as tensors and plain Python values.

        Loadable with ``torch.load(..., weights_only=True)`` after `torch.save`. Stored tensors are
        returned by reference (the memory never modifies them in place).
        """
        return {
            "strategy": self.strategy,
            "memory_size": self.memory_size,
            "num_seen": self._num_seen,
            "label_keys": sorted(self._label_keys),
            "storage_rng_state": self._storage_generator.get_state(),
            "sample_rng_state": self._sample_generator.get_state(),
            "examples": [
                {
                    "tensors": dict(ex.tensors),
                    "seq_keys": sorted(ex.seq_keys),
                    "task_id": ex.task_id,
                    "order": ex.order,
                    "label": ex.label,
                    "feature": ex.feature,
                }
                for ex in self._slots
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict`; adding and sampling then continue exactly as they would have.

        The state is validated completely before the memory changes; tensors are cloned.

        Args:
            state: A dict from `state_dict` of a memory with the same ``strategy`` and
                ``memory_size``.

        Raises:
            ValueError: For missing keys, a different ``strategy`` or ``memory_size``, or
                malformed entries.
        """
        required = {
            "strategy",
            "memory_size",
            "num_seen",
            "label_keys",
            "storage_rng_state",
            "sample_rng_state",
            "examples",
        }
        missing = required - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if state["strategy"] != self.strategy:
            raise ValueError(
                f"state has strategy={state['strategy']!r}, this memory has {self.strategy!r}"
            )
        if state["memory_size"] != self.memory_size:
            raise ValueError(
                f"state has memory_size={state['memory_size']!r}, this memory has "
                f"{self.memory_size}"
            )
        num_seen = _check_int("state['num_seen']", state["num_seen"], 0)
        entries = state["examples"]
        if not isinstance(entries, list) or len(entries) > self.memory_size:
            raise ValueError(
                f"state['examples'] must be a list of at most {self.memory_size} entries"
            )
        if len(entries) > num_seen:
            raise ValueError(f"state holds {len(entries)} examples but num_seen={num_seen}")
        examples: list[_Example] = []
        for n, entry in enumerate(entries):
            try:
                tensors = entry["tensors"]
                feature = entry["feature"]
                label = entry["label"]
                if not isinstance(tensors, Mapping) or not all(
                    isinstance(t, Tensor) for t in tensors.values()
                ):
                    raise TypeError("tensors must be a dict of tensors")
                if feature is not None and (
                    not isinstance(feature, Tensor) or tuple(feature.shape) != (self.feature_dim,)
                ):
                    raise TypeError(f"feature must be None or a ({self.feature_dim},) tensor")
                seq_keys = frozenset(str(s) for s in entry["seq_keys"])
                if not seq_keys <= set(tensors):
                    raise TypeError("seq_keys must name keys of tensors")
                if (label is None) != (self.strategy != "class_balanced"):
                    raise TypeError("label must be an int exactly for strategy='class_balanced'")
                ex = _Example(
                    tensors={str(key): t.detach().clone() for key, t in tensors.items()},
                    seq_keys=seq_keys,
                    task_id=_check_int("task_id", entry["task_id"]),
                    order=_check_int("order", entry["order"], 0),
                    label=None if label is None else _check_int("label", label),
                    feature=None if feature is None else feature.detach().clone(),
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"state['examples'][{n}] is malformed: {err}") from err
            examples.append(ex)
        for name in ("storage_rng_state", "sample_rng_state"):
            rng = state[name]
            if not isinstance(rng, Tensor) or rng.dtype != torch.uint8:
                raise ValueError(f"state[{name!r}] must be a uint8 tensor (Generator.get_state())")
        storage_gen = torch.Generator()
        sample_gen = torch.Generator()
        try:
            storage_gen.set_state(state["storage_rng_state"].clone())
            sample_gen.set_state(state["sample_rng_state"].clone())
        except RuntimeError as err:
            raise ValueError(f"state holds an invalid generator state: {err}") from err

        self._reset()
        self._slots = examples
        self._num_seen = num_seen
        self._label_keys = {str(key) for key in state["label_keys"]}
        self._storage_generator = storage_gen
        self._sample_generator = sample_gen
        if self.strategy == "class_balanced":
            by_class: dict[tuple[int, int], list[int]] = {}
            for slot, ex in enumerate(examples):
                assert ex.label is not None
                by_class.setdefault((ex.task_id, ex.label), []).append(slot)
            self._class_slots = {
                key: deque(sorted(slots, key=lambda s: examples[s].order))
                for key, slots in by_class.items()
            }
