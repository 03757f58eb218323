"""Statistics stay fp32 through module dtype conversions: :func:`keep_fp32`.

``nn.Module.half()``, ``.bfloat16()`` and ``.to(dtype)`` cast every floating buffer, statistics
included. A running statistic must not follow: in bf16 an EMA with γ = 0.99 stalls as soon as its
step ``(1 − γ)·(x − value)`` falls below half an ulp of the value, and an accumulated sum loses
its small terms. Modules that hold statistics override ``_apply`` and pass each statistic buffer through
:func:`keep_fp32` after ``super()._apply``: device moves still apply, casts to a floating dtype
narrower than fp32 do not, and casts to fp32 or float64 (``.float()``, ``.double()``) do.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["keep_fp32"]

_AT_LEAST_FP32 = (torch.float32, torch.float64)


def keep_fp32(converted: Tensor, original: Tensor) -> Tensor:
    """The statistic buffer to keep after a module conversion turned ``original`` into ``converted``.

    Use it in an ``nn.Module._apply`` override, on the buffer as it was before and after
    ``super()._apply(fn)``.

    Args:
        converted: ``fn(original)``, the tensor the conversion produced.
        original: The buffer before the conversion.

    Returns:
        ``converted`` if it is not floating or is fp32 or float64; otherwise ``original``
        converted to fp32 on ``converted``'s device: from the original values, never rounded
        through the narrow dtype.

    Raises:
        TypeError: an argument is not a tensor.
    """
    for name, t in (("converted", converted), ("original", original)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not converted.is_floating_point() or converted.dtype in _AT_LEAST_FP32:
        return converted
    return original.to(device=converted.device, dtype=torch.float32)
