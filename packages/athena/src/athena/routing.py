"""Top-k routing over a mixture of low-rank (LoRA) experts, and the Switch balance loss.

The router gives each token a probability over E experts, `p = softmax(R·x)`; the k most probable
experts serve the token with weights `p̃` (renormalised over the selected experts when asked, so
they sum to one; `k == E` with renormalisation is soft merging of all experts, "Soft Merging of
Experts with Adaptive Routing"). The balance loss is the auxiliary loss of "Switch Transformers:
Scaling to Trillion Parameter Models with Simple and Efficient Sparsity", `E·Σ_i f_i·P_i`, with
f_i the share of the N·k assignments that went to expert i and P_i the mean probability of expert
i; it is 1 for uniform routing and grows as routing collapses onto few experts.

Two ways to apply the experts, equal up to float rounding:

* `expert_mix_dense`: every expert's factors in two matmuls, `x·[A_1; …; A_E]ᵀ` (N, E·r), the
  unselected experts' columns zeroed by the gates, then `·[B_1 … B_E]ᵀ`. It costs as much as one
  LoRA of rank E·r, has static shapes and no host synchronisation, and compiles;
* `expert_mix_gather`: gathers the k selected experts' factors per token (N, k, r, in) and
  contracts them, doing k/E of the arithmetic at the price of the gather's memory traffic.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Routing",
    "balance_loss",
    "expert_mix_dense",
    "expert_mix_gather",
    "route",
    "routing_entropy",
]


class Routing(NamedTuple):
    """The routing decision for N tokens over E experts.

    Attributes:
        probs: (N, E) router probabilities (float32).
        indices: (N, k) selected experts, most probable first.
        weights: (N, k) the selected experts' weights (renormalised when asked).
        gates: (N, E) `weights` scattered into the full expert axis, zeros elsewhere.
    """

    probs: Tensor
    indices: Tensor
    weights: Tensor
    gates: Tensor


def route(logits: Tensor, top_k: int, renormalize: bool = True) -> Routing:
    """Top-k routing from router logits.

    Args:
        logits: (N, E) router logits.
        top_k: experts per token, 1 ≤ k ≤ E.
        renormalize: divide the selected probabilities by their sum.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    weights, indices = probs.topk(top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    gates = torch.zeros_like(probs).scatter(-1, indices, weights)
    return Routing(probs, indices, weights, gates)


def balance_loss(routing: Routing) -> Tensor:
    """Switch balance loss `E·Σ_i f_i·P_i` (a 0-dim tensor; gradient flows through P only)."""
    probs, indices = routing.probs, routing.indices
    num_experts = probs.shape[-1]
    counts = torch.zeros(num_experts, device=probs.device, dtype=probs.dtype)
    counts = counts.scatter_add(
        0, indices.reshape(-1), torch.ones_like(indices.reshape(-1), dtype=probs.dtype)
    )
    share = counts / indices.numel()
    return num_experts * (share * probs.mean(dim=0)).sum()


def routing_entropy(probs: Tensor) -> Tensor:
    """(N,) entropy in nats of each token's router distribution."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def expert_mix_dense(x: Tensor, moe_a: Tensor, moe_b: Tensor, gates: Tensor) -> Tensor:
    """Σ_e gates[:, e] · B_e A_e x for every token, all experts computed, unselected ones zeroed.

    Args:
        x: (N, in) adapter input.
        moe_a: (E, r, in) expert down-projections.
        moe_b: (E, out, r) expert up-projections.
        gates: (N, E) expert weights, zero for unselected experts.

    Returns:
        (N, out).
    """
    num_experts, rank, in_features = moe_a.shape
    hidden = x @ moe_a.reshape(num_experts * rank, in_features).t()  # (N, E·r)
    hidden = hidden.view(-1, num_experts, rank) * gates.to(hidden.dtype).unsqueeze(-1)
    up = moe_b.permute(0, 2, 1).reshape(num_experts * rank, moe_b.shape[1])  # (E·r, out)
    return hidden.reshape(-1, num_experts * rank) @ up


def expert_mix_gather(x: Tensor, moe_a: Tensor, moe_b: Tensor, routing: Routing) -> Tensor:
    """The same sum over only the k selected experts, by gathering their factors per token.

    Args:
        x: (N, in) adapter input.
        moe_a: (E, r, in), moe_b: (E, out, r) expert factors.
        routing: the routing of the N tokens.

    Returns:
        (N, out).
    """
    a_sel = moe_a[routing.indices]  # (N, k, r, in)
    b_sel = moe_b[routing.indices]  # (N, k, out, r)
    hidden = torch.einsum("nd,nkrd->nkr", x, a_sel) * routing.weights.to(x.dtype).unsqueeze(-1)
    return torch.einsum("nkr,nkor->no", hidden, b_sel)
