"""The resumable state of a training run, stored without pickle: safetensors plus JSON.

A checkpoint folder written by ``inl-llm-train`` holds the model and tokenizer
(``save_pretrained``) and two more files:

* ``training_state.safetensors``: every tensor of the optimizer state (``optimizer.<i>.<key>``,
  i the parameter's index in the optimizer) and the random-number-generator states (``rng.torch``
  for the global CPU generator, ``rng.batches`` for the batch sampler, ``rng.cuda.<d>`` per CUDA
  device).
* ``training_state.json``: the step, the run's arguments, the optimizer's ``param_groups`` and its
  non-tensor per-parameter entries, and any other JSON scalars of the run.

Nothing is unpickled when loading, so a checkpoint from an untrusted source cannot run code.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "STATE_JSON",
    "STATE_TENSORS",
    "TrainingState",
    "load_training_state",
    "save_training_state",
]

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
_FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """What a resumed run needs beyond the model and tokenizer.

    Attributes:
        step: optimizer steps taken.
        optimizer: a ``torch.optim.Optimizer.state_dict()``.
        rng_torch: ``torch.get_rng_state()`` (the global CPU generator: dropout on CPU, init).
        rng_batches: the state of the batch sampler's :class:`torch.Generator`.
        rng_cuda: ``torch.cuda.get_rng_state_all()``, empty without CUDA.
        extra: JSON-serialisable values (the run's arguments, elapsed time, …).
    """

    step: int
    optimizer: dict[str, Any]
    rng_torch: torch.Tensor
    rng_batches: torch.Tensor
    rng_cuda: list[torch.Tensor] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def save_training_state(folder: str | Path, state: TrainingState) -> None:
    """Write ``training_state.safetensors`` and ``training_state.json`` into ``folder``.

    Args:
        folder: an existing folder (usually the one ``save_pretrained`` wrote).
        state: the state to save; ``extra`` must be JSON-serialisable.

    Raises:
        TypeError: when the optimizer state holds a value that is neither a tensor nor JSON.
    """
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {
        "rng.torch": state.rng_torch.detach().cpu().contiguous(),
        "rng.batches": state.rng_batches.detach().cpu().contiguous(),
    }
    for device, rng in enumerate(state.rng_cuda):
        tensors[f"rng.cuda.{device}"] = rng.detach().cpu().contiguous()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state.optimizer["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{int(index)}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                _check_json(value, f"optimizer state {index}.{key}")
                scalars.setdefault(str(int(index)), {})[key] = value
    _check_json(state.optimizer["param_groups"], "optimizer param_groups")
    _check_json(state.extra, "extra")
    save_file(tensors, str(folder / STATE_TENSORS))
    document = {
        "format_version": _FORMAT_VERSION,
        "step": int(state.step),
        "optimizer": {"param_groups": state.optimizer["param_groups"], "scalars": scalars},
        "cuda_devices": len(state.rng_cuda),
        "extra": state.extra,
    }
    (folder / STATE_JSON).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def load_training_state(folder: str | Path) -> TrainingState:
    """Read the state :func:`save_training_state` wrote (no pickle involved).

    Args:
        folder: a checkpoint folder.

    Returns:
        The state, with CPU tensors; ``optimizer`` is ready for ``Optimizer.load_state_dict``.

    Raises:
        ValueError: when ``folder`` lacks the two files or they are of an unknown format.
    """
    folder = Path(folder)
    tensor_file, json_file = folder / STATE_TENSORS, folder / STATE_JSON
    if not tensor_file.is_file() or not json_file.is_file():
        raise ValueError(
            f"resume: {str(folder)!r} is not a training checkpoint (needs {STATE_TENSORS} and "
            f"{STATE_JSON})"
        )
    document = json.loads(json_file.read_text())
    if document.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"resume: {json_file} has format_version {document.get('format_version')!r}, "
            f"expected {_FORMAT_VERSION}"
        )
    tensors = load_file(str(tensor_file))
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            per_param.setdefault(int(index), {})[key] = value
    for index, entries in document["optimizer"]["scalars"].items():
        per_param.setdefault(int(index), {}).update(entries)
    return TrainingState(
        step=int(document["step"]),
        optimizer={
            "state": dict(sorted(per_param.items())),
            "param_groups": document["optimizer"]["param_groups"],
        },
        rng_torch=tensors["rng.torch"],
        rng_batches=tensors["rng.batches"],
        rng_cuda=[tensors[f"rng.cuda.{d}"] for d in range(int(document["cuda_devices"]))],
        extra=document["extra"],
    )


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"save_training_state: {what} is not JSON-serialisable ({error})"
        ) from error
