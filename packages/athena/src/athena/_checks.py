"""Argument checks shared by :class:`~athena.config.PolyAdapterConfig` and
:class:`~athena.poly_adapter.AdapterSpec`, so both reject the same values with the same words."""

from __future__ import annotations


def check_switches(use_lora: bool, use_ia3: bool, use_moe: bool) -> None:
    """At least one branch must be on."""
    if not (use_lora or use_ia3 or use_moe):
        raise ValueError("use_lora, use_ia3 and use_moe are all False: nothing to adapt")


def check_dropout(value: float, name: str) -> None:
    """A dropout probability in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_moe_impl(value: str) -> None:
    if value not in ("dense", "gather"):
        raise ValueError(f"moe_impl must be 'dense' or 'gather', got {value!r}")


def check_mixture(
    *, num_experts: int, top_k: int, moe_rank: int | None, router_jitter: float, k_name: str
) -> None:
    """The mixture of LoRA experts: E ≥ 1, 1 ≤ k ≤ E, expert rank ≥ 1 (``None``: the LoRA rank),
    jitter ≥ 0. ``k_name`` is the caller's name for k (``top_k`` in the config, ``k`` in the
    original-compatible constructor)."""
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts!r}")
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"{k_name} must be in [1, num_experts={num_experts}], got {top_k!r}")
    if moe_rank is not None and moe_rank < 1:
        raise ValueError(f"moe_rank must be >= 1, got {moe_rank!r}")
    if router_jitter < 0:
        raise ValueError(f"router_jitter must be >= 0, got {router_jitter!r}")
