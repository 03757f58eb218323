"""``AionBlock``: a pre-norm residual block ``x + α·layer(norm(x))`` around any layer.

It keeps the aion-torch 1.0.x ``AionBlock(layer, dim, ...)`` call style and attributes (``norm``,
``layer``, ``aion``) and accepts any residual with the ``forward(x, y, x_norm=None)`` interface of
:mod:`aion_torch.residuals` (post-norm residuals such as DeepNorm get ``residual(x, layer(x))``).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from aion_torch._residual import AionResidual

__all__ = ["AionBlock"]

_NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")


class AionBlock(nn.Module):
    """Residual block ``out = residual(x, layer(n), x_norm=n)`` with ``n = norm(x)``.

    Args:
        layer: Sublayer mapping ``(..., D)`` to ``(..., D)``.
        dim: Feature size ``D`` of the norm.
        alpha0: Initial base scale, passed to :class:`AionResidual`.
        beta: Initial sensitivity, passed to :class:`AionResidual`.
        ema_gamma: EMA decay, passed to :class:`AionResidual`.
        epsilon: Stream-energy ε, passed to :class:`AionResidual`.
        norm: ``"layernorm"`` or ``"rmsnorm"``.
        residual: Use this residual module instead of a new ``AionResidual`` (then no
            ``aion_kwargs`` may be given). A residual whose class has ``post_norm = True`` is
            called as ``residual(x, layer(x))`` and ``norm`` is an ``nn.Identity``.
        **aion_kwargs: Keyword options of :class:`AionResidual` (``mode``, ``sync_stats``, ...).

    Attributes:
        norm: The pre-norm.
        layer: The wrapped layer.
        aion: The residual module (also available as ``residual``).

    Raises:
        ValueError: ``dim`` not a positive int, an unknown ``norm``, or ``aion_kwargs`` together
            with ``residual``.
    """

    def __init__(
        self,
        layer: nn.Module,
        dim: int,
        alpha0: float = 0.1,
        beta: float = 0.05,
        ema_gamma: float = 0.99,
        epsilon: float = 1e-8,
        *,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        residual: nn.Module | None = None,
        **aion_kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if residual is not None and aion_kwargs:
            raise ValueError(
                f"aion_kwargs {sorted(aion_kwargs)} cannot be combined with an explicit residual"
            )
        res = (
            residual
            if residual is not None
            else AionResidual(alpha0, beta, ema_gamma, epsilon, **aion_kwargs)
        )
        self.post_norm = bool(getattr(res, "post_norm", False))
        self.norm: nn.Module
        if self.post_norm:
            self.norm = nn.Identity()
        elif norm == "rmsnorm":
            self.norm = nn.RMSNorm(dim)
        else:
            self.norm = nn.LayerNorm(dim)
        self.layer = layer
        self.aion = res

    @property
    def residual(self) -> nn.Module:
        """Alias of :attr:`aion`."""
        return self.aion

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Apply the block.

        Args:
            x: Input ``(..., D)``, e.g. ``(B, T, D)``.
            mask: Optional bool ``x.shape[:-1]`` (e.g. ``(B, T)``), True = real token; only an
                ``AionResidual`` accepts it.

        Returns:
            ``(..., D)``, same dtype as ``x``.
        """
        if self.post_norm:
            out: Tensor = self.aion(x, self.layer(x))
            return out
        n = self.norm(x)
        if mask is None:
            out = self.aion(x, self.layer(n), x_norm=n)
            return out
        if not isinstance(self.aion, AionResidual):
            raise TypeError(
                f"mask is only supported with AionResidual, got {type(self.aion).__name__}"
            )
        out = self.aion(x, self.layer(n), x_norm=n, mask=mask)
        return out
