"""Python numbers and host scalars as device tensors, without a host-to-device copy.

``torch.tensor(values, device=d)`` and ``torch.as_tensor(x, device=d)`` build the data on the host
and copy it to ``d``; on CUDA that copy synchronises with the device (and cannot be captured in a
CUDA graph). Here the values travel as kernel arguments instead (a fill, a scalar-list foreach
multiply), and a 0-D CPU tensor is read where it lies (it is a valid operand of a device op). The
values are bit for bit those of ``torch.tensor(values, dtype=dtype)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _vector(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, with no host-to-device copy.

    On CPU that is the plain factory; elsewhere ``1·v_i`` by one scalar-list foreach multiply of a
    ones vector (exact: the scalar is rounded to ``dtype`` as the factory rounds it).
    """
    if device.type == "cpu":
        return torch.tensor(values, dtype=dtype)
    ones = torch.ones((len(values),), dtype=dtype, device=device).unbind(0)
    return torch.stack(torch._foreach_mul(ones, list(values)))


def _scalar(x: float | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``x`` (a float or a 1-element tensor) as a 0-D ``dtype`` operand for ops on ``device``.

    A float becomes a fill on ``device``; a tensor already there, or on the CPU (read on the host
    by the op, no transfer), is only reshaped and cast; a tensor on another device is copied.
    """
    if not isinstance(x, Tensor):
        return torch.full((), x, dtype=dtype, device=device)
    x = x.reshape(()).to(dtype=dtype)
    if x.device == device or x.device.type == "cpu":
        return x
    return x.to(device=device)
