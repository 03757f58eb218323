"""``LayerStateManager``: per-layer tensors and metadata saved at each growth.

Layout under ``output_dir``: ``layers/layer_{id:03d}/{tag}.safetensors`` (the tensors) and
``{tag}.json`` (strategy, strategy parameters, step, metrics), each written atomically. The
controller saves ``"source"`` (the source block before the growth) and ``"init"`` (the new block
as inserted) for every growth, so any insertion can be inspected or replayed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aiether._io import write_atomic, write_json_atomic

_TAG = re.compile(r"^[A-Za-z0-9_.-]+$")


class LayerStateManager:
    """Saves and loads per-layer states (see the module docstring)."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.root = Path(output_dir) / "layers"

    def _folder(self, layer_id: int) -> Path:
        if isinstance(layer_id, bool) or not isinstance(layer_id, int) or layer_id < 0:
            raise ValueError(f"layer_id must be a non-negative integer, got {layer_id!r}")
        return self.root / f"layer_{layer_id:03d}"

    @staticmethod
    def _check_tag(tag: str) -> str:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise ValueError(
                f"tag must be a non-empty name of letters, digits, '_', '.', '-', got {tag!r}"
            )
        return tag

    def save_state(
        self,
        layer_id: int,
        tag: str,
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any],
    ) -> None:
        """Write ``tensors`` (contiguous CPU copies) and ``metadata`` (JSON) for one layer.

        Raises:
            ValueError: a bad id or tag, no tensors, or metadata without ``"strategy"``.
        """
        folder = self._folder(layer_id)
        self._check_tag(tag)
        if not tensors:
            raise ValueError("tensors: nothing to save")
        if "strategy" not in metadata:
            raise ValueError("metadata must name the 'strategy' that produced the tensors")
        data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        write_atomic(folder / f"{tag}.safetensors", lambda tmp: save_file(data, tmp))
        meta = {"strategy_parameters": {}, **dict(metadata), "layer_id": layer_id, "tag": tag}
        write_json_atomic(folder / f"{tag}.json", meta)

    def load_state(self, layer_id: int, tag: str) -> dict[str, torch.Tensor]:
        """The tensors saved for ``(layer_id, tag)``.

        Raises:
            FileNotFoundError: nothing saved under that id and tag.
        """
        path = self._folder(layer_id) / f"{self._check_tag(tag)}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"no layer state {tag!r} for layer {layer_id} in {self.root}")
        return load_file(str(path))

    def load_metadata(self, layer_id: int, tag: str) -> dict[str, Any]:
        """The metadata saved for ``(layer_id, tag)``."""
        path = self._folder(layer_id) / f"{self._check_tag(tag)}.json"
        with open(path, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
        return data

    def list_states(self) -> list[tuple[int, str]]:
        """Every saved ``(layer_id, tag)``, sorted."""
        if not self.root.exists():
            return []
        out: list[tuple[int, str]] = []
        for folder in self.root.glob("layer_*"):
            layer = int(folder.name.removeprefix("layer_"))
            out.extend((layer, f.stem) for f in folder.glob("*.safetensors"))
        return sorted(out)
