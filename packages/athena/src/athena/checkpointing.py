"""`enable_input_require_grads`: make activation checkpointing work over a frozen embedding.

With every base parameter frozen, the embedding output does not require grad, so a checkpointed
block (`torch.utils.checkpoint` with `use_reentrant=True`, the Hugging Face default for many
models) sees inputs without grad, recomputes nothing and the adapters inside it get no gradient.
A forward hook that marks the embedding output as requiring grad fixes it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["enable_input_require_grads"]


def _mark(_module: nn.Module, _inputs: Any, output: Any) -> None:
    if isinstance(output, Tensor) and output.is_floating_point():
        output.requires_grad_(True)


def enable_input_require_grads(
    model: nn.Module, embedding: nn.Module | None = None
) -> RemovableHandle:
    """Make the output of `embedding` (default: `model.get_input_embeddings()`) require grad.

    Args:
        model: the model (an `AthenaModel`, a Hugging Face model or any module).
        embedding: the input embedding module, when the model has no `get_input_embeddings`.

    Returns:
        The hook handle; `handle.remove()` undoes it.

    Raises:
        ValueError: no embedding was given and the model cannot say which it is.
    """
    if embedding is None:
        getter = getattr(model, "get_input_embeddings", None)
        embedding = getter() if callable(getter) else None
    if not isinstance(embedding, nn.Module):
        raise ValueError(
            f"{type(model).__name__} has no get_input_embeddings(); pass embedding= explicitly"
        )
    return embedding.register_forward_hook(_mark)
