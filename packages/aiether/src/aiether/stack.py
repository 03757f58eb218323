"""``GrowableStack``: a block list with a static parameter set and a dynamic depth.

Every block of the final model is allocated and registered from step 0 (so optimisers, DDP and
checkpoints see one fixed parameter set); a persistent boolean buffer ``active`` says which
blocks run, in index order. Growing activates one more slot; an inactive block is never
computed, gets no gradient (``grad`` stays ``None``) and so is untouched by AdamW.

The stack is an ``nn.ModuleList`` subclass whose children keep their indices, so state-dict keys
are those of the plain model (``transformer.h.3.attn.c_proj.weight``) plus ``….active``.
Iterating it (``for block in stack``) or slicing it (``stack[:n]``, what Hugging Face Llama
does) yields only the active blocks, as callables; integer indexing returns any block itself.

Function preservation (``preserve``):

- ``"zero_out"``: the new block's output projections (weights and biases) are zeroed, which
  makes a pre-norm residual block ``x + f(x)`` the exact identity;
- ``"gate_ramp"``: the block runs as ``x + g·(block(x) − x)`` with a buffer ``g`` rising linearly
  from 0 to 1 over ``ramp_steps`` calls of :meth:`GrowableStack.advance` (any block type);
- ``"rezero"``: the same form with a learnable gate initialised at 0;
- ``"none"``: the new block runs as initialised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

SlotOrder = Literal["top_down", "bottom_up"]
Preserve = Literal["zero_out", "gate_ramp", "rezero", "none"]
PRESERVE_MODES: tuple[str, ...] = ("zero_out", "gate_ramp", "rezero", "none")


def _resolve_order(slot_order: SlotOrder | Sequence[int], n: int) -> tuple[int, ...]:
    if slot_order == "top_down":
        return tuple(range(n - 1, -1, -1))
    if slot_order == "bottom_up":
        return tuple(range(n))
    if isinstance(slot_order, str):
        raise ValueError(
            f"slot_order must be 'top_down', 'bottom_up' or a sequence of slots, got {slot_order!r}"
        )
    order = tuple(int(s) for s in slot_order)
    if sorted(order) != list(range(n)):
        raise ValueError(
            f"slot_order must be a permutation of range({n}) (every slot once), got {list(order)}"
        )
    return order


def _get_submodule(block: nn.Module, name: str) -> nn.Module:
    try:
        return block.get_submodule(name)
    except AttributeError as err:
        raise ValueError(
            f"out_proj_names: block {type(block).__name__} has no submodule {name!r}"
        ) from err


def zero_output_projections(block: nn.Module, out_proj_names: Sequence[str]) -> None:
    """Zero the weights and biases of ``block``'s output projections, in place."""
    with torch.no_grad():
        for name in out_proj_names:
            proj = _get_submodule(block, name)
            params = list(proj.parameters(recurse=False))
            if not params:
                raise ValueError(
                    f"out_proj_names: {name!r} in {type(block).__name__} has no parameters"
                )
            for p in params:
                p.zero_()


class _GatedCall:
    """Calls one block as ``x + g·(block(x) − x)``; the first output tensor is the one gated."""

    __slots__ = ("block", "gate")

    def __init__(self, block: nn.Module, gate: Tensor) -> None:
        self.block = block
        self.gate = gate

    def __call__(self, hidden: Tensor, *args: Any, **kwargs: Any) -> Any:
        out = self.block(hidden, *args, **kwargs)
        if isinstance(out, Tensor):
            return hidden + self.gate * (out - hidden)
        if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
            return (hidden + self.gate * (out[0] - hidden), *out[1:])
        raise TypeError(
            f"gated preservation needs a block returning a tensor or a tuple starting with one, "
            f"got {type(out).__name__}"
        )


class _CacheGuard:
    """Refuses a key/value cache while some slots are inactive (layer indices would not match)."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("use_cache"):
            raise ValueError(
                "use_cache=True with inactive slots: cache layer indices would not match the "
                "active blocks; pass use_cache=False, or generate after export_compact()"
            )
        return self.call(*args, **kwargs)


class GatedBlock(nn.Module):
    """A block frozen at gate value ``g``: what :meth:`GrowableStack.export_compact` emits for a
    block whose ramp or ReZero gate is not 1."""

    def __init__(self, block: nn.Module, gate: float) -> None:
        super().__init__()
        self.block = block
        self.gate: Tensor
        self.register_buffer("gate", torch.tensor(float(gate)))

    def forward(self, hidden: Tensor, *args: Any, **kwargs: Any) -> Any:
        return _GatedCall(self.block, self.gate)(hidden, *args, **kwargs)


def _after_load(module: GrowableStack, _keys: Any) -> None:
    module._sync_mirrors()


class GrowableStack(nn.ModuleList):
    """A fixed set of blocks of which an ordered subset runs.

    Args:
        blocks: every block of the final model (at least 2).
        initial_active: how many slots run at the start (the first ones of ``slot_order``).
        slot_order: the order in which slots are activated: ``"top_down"`` (AIether: the last
            slot first, each new block below all others), ``"bottom_up"``, or an explicit
            permutation of the slot indices.
        preserve: how an activated block keeps the function unchanged (module docstring).
        out_proj_names: submodule names of each block's output projections (``"zero_out"``).
        ramp_steps: length of the ``"gate_ramp"`` ramp in :meth:`advance` calls.
        cache_guard: refuse ``use_cache=True`` in block calls while a slot is inactive (set by
            the Hugging Face adapters).

    Raises:
        ValueError: fewer than 2 blocks, ``initial_active`` outside ``[1, len(blocks)]``, a bad
            ``slot_order`` or ``preserve``, ``"zero_out"`` without ``out_proj_names`` (or names the
            blocks lack), ``ramp_steps < 1``.
    """

    active: Tensor

    def __init__(
        self,
        blocks: Iterable[nn.Module],
        *,
        initial_active: int = 1,
        slot_order: SlotOrder | Sequence[int] = "top_down",
        preserve: Preserve = "zero_out",
        out_proj_names: Sequence[str] | None = None,
        ramp_steps: int = 200,
        cache_guard: bool = False,
    ) -> None:
        nn.Module.__init__(self)  # ModuleList.__init__ would go through the disabled `+=`
        for i, block in enumerate(blocks):
            self.add_module(str(i), block)
        n = len(self._modules)
        if n < 2:
            raise ValueError(f"blocks: a growable stack needs at least 2 blocks, got {n}")
        if isinstance(initial_active, bool) or not 1 <= int(initial_active) <= n:
            raise ValueError(f"initial_active must be in [1, {n}], got {initial_active!r}")
        order = _resolve_order(slot_order, n)
        if preserve not in PRESERVE_MODES:
            raise ValueError(f"preserve must be one of {PRESERVE_MODES}, got {preserve!r}")
        names = tuple(out_proj_names or ())
        if preserve == "zero_out" and not names:
            raise ValueError(
                "preserve='zero_out' needs out_proj_names (the blocks' output projections)"
            )
        for name in names:
            _get_submodule(self._block(0), name)
        if isinstance(ramp_steps, bool) or int(ramp_steps) < 1:
            raise ValueError(f"ramp_steps must be a positive integer, got {ramp_steps!r}")
        self.order: tuple[int, ...] = order
        self.preserve: Preserve = preserve
        self.out_proj_names: tuple[str, ...] = names
        self.ramp_steps = int(ramp_steps)
        self.cache_guard = bool(cache_guard)
        first = set(self.order[: int(initial_active)])
        flags = [i in first for i in range(n)]
        self.register_buffer("active", torch.tensor(flags, dtype=torch.bool))
        # per-slot gates: a buffer for the ramp, a parameter for ReZero, absent otherwise
        self.gate: Tensor | None
        gates = torch.tensor([float(f) for f in flags])
        if preserve == "gate_ramp":
            self.register_buffer("gate", gates)
        elif preserve == "rezero":
            self.register_parameter("gate", nn.Parameter(gates))
        else:
            self.register_buffer("gate", None)
        # host mirrors from Python values: the buffers may live on the meta device here
        self._active_py: tuple[bool, ...] = tuple(flags)
        self._gate_py: tuple[float, ...] = tuple(float(f) for f in flags)
        self.register_load_state_dict_post_hook(_after_load)  # type: ignore[no-untyped-call]

    # -- state -------------------------------------------------------------------------------
    def _sync_mirrors(self) -> None:
        """Host copies of ``active`` and the gates, read by forward (reading the buffers there
        would be a host sync per block). Refreshed after ``load_state_dict`` and every change."""
        self._active_py = tuple(bool(a) for a in self.active.tolist())
        gates = self.gate.detach().tolist() if self.gate is not None else [1.0] * len(self)
        self._gate_py = tuple(float(g) for g in gates)

    def _block(self, i: int) -> nn.Module:
        return self._modules[str(i)]

    @property
    def max_layers(self) -> int:
        """Number of slots (the final depth)."""
        return len(self._modules)

    @property
    def active_slots(self) -> list[int]:
        """Active slot indices, in the order they run (ascending)."""
        return [i for i, a in enumerate(self._active_py) if a]

    @property
    def num_active(self) -> int:
        return sum(self._active_py)

    @property
    def is_full(self) -> bool:
        return all(self._active_py)

    def set_active(self, slots: Iterable[int]) -> None:
        """Set the active slot set (resume, tests); gates of the given slots are set to 1."""
        chosen = sorted({int(s) for s in slots})
        if not chosen or chosen[0] < 0 or chosen[-1] >= len(self):
            raise ValueError(
                f"slots must be a non-empty subset of range({len(self)}), got {chosen}"
            )
        with torch.no_grad():
            self.active.zero_()
            self.active[chosen] = True
            if self.gate is not None:
                self.gate[chosen] = 1.0
        # mirrors from Python values (the buffers may be on the meta device while HF builds)
        self._active_py = tuple(i in chosen for i in range(len(self)))
        self._gate_py = tuple(1.0 if i in chosen else g for i, g in enumerate(self._gate_py))

    # -- growth ------------------------------------------------------------------------------
    def next_slot(self) -> int:
        """The slot the next growth activates.

        Raises:
            ValueError: the stack is at full depth.
        """
        for slot in self.order:
            if not self._active_py[slot]:
                return slot
        raise ValueError(f"cannot grow past max_layers={len(self)}: every slot is active")

    def source_slot(self, slot: int) -> int:
        """The active slot nearest to ``slot`` (the frontier the new block extrapolates from);
        ties go to the slot above (the one whose input the new block will produce)."""
        active = self.active_slots
        return min(active, key=lambda s: (abs(s - slot), -s))

    def activate(self, slot: int) -> None:
        """Apply ``preserve`` to block ``slot`` and make it run (call after initialising it)."""
        if not 0 <= slot < len(self):
            raise ValueError(f"slot must be in range({len(self)}), got {slot}")
        if self._active_py[slot]:
            raise ValueError(f"slot {slot} is already active")
        with torch.no_grad():
            if self.preserve == "zero_out":
                zero_output_projections(self._block(slot), self.out_proj_names)
            if self.gate is not None:
                self.gate[slot] = 0.0
            self.active[slot] = True
        self._sync_mirrors()

    def grow(self, init: Callable[[nn.Module, nn.Module], None] | None = None) -> tuple[int, int]:
        """Activate the next slot: ``init(new_block, source_block)`` first (if given), then
        ``preserve``. Returns ``(slot, source_slot)``."""
        slot = self.next_slot()
        source = self.source_slot(slot)
        if init is not None:
            init(self._block(slot), self._block(source))
        self.activate(slot)
        return slot, source

    def advance(self, steps: int = 1) -> None:
        """Move every ``"gate_ramp"`` gate below 1 by ``steps / ramp_steps`` (no-op otherwise)."""
        if self.preserve != "gate_ramp" or self.gate is None:
            return
        if all(g >= 1.0 for g, a in zip(self._gate_py, self._active_py, strict=True) if a):
            return
        with torch.no_grad():
            ramping = torch.tensor(
                [a and g < 1.0 for g, a in zip(self._gate_py, self._active_py, strict=True)]
            )
            self.gate.add_(
                ramping.to(self.gate.device, self.gate.dtype) * (steps / self.ramp_steps)
            )
            self.gate.clamp_(max=1.0)
        self._gate_py = tuple(
            min(1.0, g + steps / self.ramp_steps) if (a and g < 1.0) else g
            for g, a in zip(self._gate_py, self._active_py, strict=True)
        )

    # -- running -----------------------------------------------------------------------------
    def _call(self, slot: int) -> Callable[..., Any]:
        block = self._block(slot)
        call: Callable[..., Any] = block
        if self.gate is not None and (self.preserve == "rezero" or self._gate_py[slot] < 1.0):
            call = _GatedCall(block, self.gate[slot])
        if self.cache_guard and not all(self._active_py):
            call = _CacheGuard(call)
        return call

    def __iter__(self) -> Iterator[Any]:
        return iter([self._call(i) for i, a in enumerate(self._active_py) if a])

    def __getitem__(self, idx: int | slice) -> Any:
        """An integer gives the block itself (active or not); a slice gives the active blocks in
        it as callables, the way iteration does (Hugging Face Llama runs ``layers[:n]``)."""
        if isinstance(idx, slice):
            return [self._call(i) for i in range(len(self))[idx] if self._active_py[i]]
        return super().__getitem__(idx)

    def forward(self, hidden: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the active blocks in order: ``hidden = block(hidden, *args, **kwargs)``."""
        for call in self:
            hidden = call(hidden, *args, **kwargs)
        return hidden

    def export_compact(self) -> nn.ModuleList:
        """A deep copy of the active blocks only, in running order (a plain ``nn.ModuleList``).

        A block whose gate is not 1 is wrapped in :class:`GatedBlock` at its current gate value.
        Attributes named ``layer_idx`` in the copies are renumbered 0…n−1, so a key/value cache
        indexes them correctly.
        """
        import copy

        out = nn.ModuleList()
        for new_idx, slot in enumerate(self.active_slots):
            block = copy.deepcopy(self._block(slot))
            for module in block.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    object.__setattr__(module, "layer_idx", new_idx)
            gate = self._gate_py[slot]
            if self.gate is not None and (self.preserve == "rezero" or gate != 1.0):
                out.append(GatedBlock(block, gate))
            else:
                out.append(block)
        return out

    # -- a static parameter set: no structural edits -------------------------------------------
    def _static(self, *_: Any, **__: Any) -> Any:
        raise TypeError("GrowableStack has a static set of blocks; use grow() to add depth")

    append = extend = insert = pop = __delitem__ = __iadd__ = __add__ = __setitem__ = _static

    def extra_repr(self) -> str:
        return f"active={self.active_slots}, max_layers={len(self)}, preserve={self.preserve!r}"

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)
