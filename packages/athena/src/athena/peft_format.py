"""PEFT's adapter file layout, written and read without importing peft.

A saved adapter is a folder with

* `adapter_config.json`: sorted keys, indent 2, `peft_type`, `inference_mode: true`. A LoRA-only
  config is written with `LoraConfig`'s keys and `peft_type: "LORA"`, an IA³-only one with
  `IA3Config`'s keys and `"IA3"`: both load with `peft.PeftModel.from_pretrained`. Anything else
  is `"ATHENA_POLY"` with every field of `PolyAdapterConfig` and `athena_version`.
* `adapter_model.safetensors` (metadata `{"format": "pt"}`): the adapter's tensors under their
  model paths with the adapter name dropped: `base_model.model.<module>.lora_A.weight`,
  `….ia3_l`, `….moe_A`, `….router.weight`, and `base_model.model.<head>.weight` for
  `modules_to_save` copies.

The default adapter lives at the folder's root, any other in a subfolder named after it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .config import ATHENA_VERSION, PolyAdapterConfig

__all__ = [
    "WEIGHTS_NAME",
    "adapter_key_to_file",
    "config_from_json_dict",
    "config_to_json_dict",
    "file_key_to_adapter",
    "load_adapter_file",
    "save_adapter_file",
]

WEIGHTS_NAME = "adapter_model.safetensors"
_ADAPTER_PARTS = ("lora_A", "lora_B", "ia3_l", "moe_A", "moe_B", "router")

_LORA_KEYS = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "use_rslora",
    "init_lora_weights",
    "modules_to_save",
    "bias",
    "fan_in_fan_out",
    "task_type",
    "base_model_name_or_path",
    "revision",
)
_IA3_KEYS = (
    "target_modules",
    "exclude_modules",
    "feedforward_modules",
    "modules_to_save",
    "fan_in_fan_out",
    "task_type",
    "base_model_name_or_path",
    "revision",
)
# metadata PEFT writes that says nothing about the numerics
_IGNORED = {"peft_type", "peft_version", "auto_mapping", "inference_mode", "athena_version"}
# PEFT LoRA options that change the numerics and that athena does not implement: refuse to load
# a checkpoint that sets them rather than silently compute something else
_UNSUPPORTED = {
    "use_dora": False,
    "lora_bias": False,
    "layer_replication": None,
    "use_qalora": False,
    "alora_invocation_tokens": None,
    "target_parameters": None,
    "trainable_token_indices": None,
    "use_bdlora": None,
}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def config_to_json_dict(config: PolyAdapterConfig) -> dict[str, Any]:
    """The `adapter_config.json` content for `config` (PEFT's keys for LORA and IA3)."""
    kind = config.peft_type
    if kind == "LORA":
        out = {k: _jsonable(getattr(config, k)) for k in _LORA_KEYS}
        out["use_dora"] = False
    elif kind == "IA3":
        out = {k: _jsonable(getattr(config, k)) for k in _IA3_KEYS}
        out["init_ia3_weights"] = config.init_lora_weights
    else:
        out = {k: _jsonable(v) for k, v in config.to_dict().items()}
        out["athena_version"] = ATHENA_VERSION
    out["peft_type"] = kind
    out["inference_mode"] = True
    if isinstance(out.get("target_modules"), list):
        out["target_modules"] = sorted(out["target_modules"])
    return out


def _trivial(value: Any) -> bool:
    return value is None or value is False or value == {} or value == [] or value == ""


def config_from_json_dict(data: Mapping[str, Any]) -> PolyAdapterConfig:
    """Read a saved config: athena's own, or PEFT's `LORA` / `IA3`.

    Keys athena does not use are dropped (with a warning when they carry a value); PEFT options
    that would change the numerics and are not implemented (DoRA, LoRA biases, ...) raise.

    Raises:
        ValueError: an unknown `peft_type`, or an unsupported option set.
    """
    kind = data.get("peft_type", "ATHENA_POLY")
    if kind not in ("LORA", "IA3", "ATHENA_POLY"):
        raise ValueError(f"peft_type {kind!r} is not supported (LORA, IA3 or ATHENA_POLY)")
    for key, default in _UNSUPPORTED.items():
        if key in data and data[key] != default and not (default is None and _trivial(data[key])):
            raise ValueError(
                f"adapter config sets {key}={data[key]!r}, which athena does not support"
            )
    fields = set(PolyAdapterConfig.__dataclass_fields__)
    kwargs: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        if key in _IGNORED:
            continue
        if kind == "IA3" and key == "init_ia3_weights":
            kwargs["init_lora_weights"] = bool(value)
        elif key == "init_lora_weights" and isinstance(value, str):
            if value != "gaussian":
                raise ValueError(
                    f"init_lora_weights={value!r} changes the base weights; not supported"
                )
            kwargs[key] = True  # the init scheme is irrelevant once trained weights are loaded
        elif key in fields:
            kwargs[key] = value
        elif key not in _UNSUPPORTED and not _trivial(value):
            dropped.append(key)
    if dropped:
        warnings.warn(
            f"adapter config keys not used by athena were dropped: {sorted(dropped)}",
            UserWarning,
            stacklevel=3,
        )
    if kind == "LORA":
        kwargs.update(use_lora=True, use_ia3=False, use_moe=False)
    elif kind == "IA3":
        kwargs.update(use_lora=False, use_ia3=True, use_moe=False)
    if kwargs.get("modules_to_save") is not None:
        kwargs["modules_to_save"] = tuple(kwargs["modules_to_save"])
    return PolyAdapterConfig(**kwargs)


def adapter_key_to_file(key: str, adapter_name: str) -> str | None:
    """In-memory parameter name → file key, or None when it is not part of `adapter_name`.

    `….query.lora_A.default.weight` → `….query.lora_A.weight`;
    `….classifier.modules_to_save.default.weight` → `….classifier.weight`.
    """
    key = key.replace("_orig_mod.", "")
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in _ADAPTER_PARTS:
            if parts[i + 1] != adapter_name:
                return None
            return ".".join(parts[: i + 1] + parts[i + 2 :])
        if part == "modules_to_save":
            if parts[i + 1] != adapter_name:
                return None
            return ".".join(parts[:i] + parts[i + 2 :])
    return None


def file_key_to_adapter(key: str, adapter_name: str, saved_modules: set[str]) -> str:
    """File key → in-memory parameter name for `adapter_name` (the inverse of the above).

    Args:
        key: a key of the file.
        adapter_name: the adapter to load into.
        saved_modules: in-memory names of the model's `ModulesToSaveWrapper`s.
    """
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in _ADAPTER_PARTS:
            return ".".join([*parts[: i + 1], adapter_name, *parts[i + 1 :]])
    if parts[-1] in _ADAPTER_PARTS:  # ia3_l / moe_A / moe_B are parameters, not modules
        return ".".join([*parts, adapter_name])
    for module in sorted(saved_modules, key=len, reverse=True):
        if key.startswith(module + "."):
            return f"{module}.modules_to_save.{adapter_name}.{key[len(module) + 1 :]}"
    raise ValueError(f"file key {key!r} belongs to no adapter part nor saved module")


def save_adapter_file(tensors: Mapping[str, Tensor], path: str) -> None:
    """Write `tensors` as safetensors with `{"format": "pt"}` (contiguous CPU copies).

    Raises:
        ValueError: a tensor has no elements (a ZeRO-3 / FSDP shard that was not gathered).
    """
    from safetensors.torch import save_file

    empty = [k for k, t in tensors.items() if t.numel() == 0]
    if empty:
        raise ValueError(
            f"{len(empty)} adapter tensors have no elements (e.g. {empty[0]!r}): they look like "
            "unsharded ZeRO-3/FSDP placeholders; gather parameters before saving"
        )
    cpu = {k: t.detach().to("cpu").contiguous().clone() for k, t in tensors.items()}
    save_file(cpu, path, metadata={"format": "pt"})


def load_adapter_file(path: str) -> dict[str, Tensor]:
    """Read an adapter's safetensors file (CPU tensors; nothing is unpickled)."""
    from safetensors.torch import load_file

    return load_file(path, device="cpu")
