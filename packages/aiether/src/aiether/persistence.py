"""``growth_state.json``: the controller, trigger, scheduler and events of a run, for resume.

``save_growth_state(folder, controller, scheduler)`` writes ``growth_state.json`` (and, when
the controller has a tracker, its snapshots as ``growth_tracker.safetensors``) atomically;
``load_growth_state`` restores them onto a controller whose model already holds the checkpoint's
weights (the active set is part of the model's ``state_dict``) and fails loudly when the active
sets differ. Model and optimiser are saved the usual way (``torch.save(optimizer.state_dict())``
/ safetensors / ``save_pretrained``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from aiether._io import write_atomic, write_json_atomic
from aiether.controller import GrowthController

STATE_FILE = "growth_state.json"
TRACKER_FILE = "growth_tracker.safetensors"
FORMAT_VERSION = 1


def growth_state(controller: GrowthController, scheduler: Any = None) -> dict[str, Any]:
    """The JSON document :func:`save_growth_state` writes."""
    state = controller.state_dict()
    return {
        "format": FORMAT_VERSION,
        "controller": {k: v for k, v in state.items() if k != "events"},
        "trigger": controller.trigger.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "tracker_count": None
        if controller.tracker is None
        else controller.tracker.state_dict()["count"],
        "events": state["events"],
    }


def save_growth_state(
    folder: str | os.PathLike[str], controller: GrowthController, scheduler: Any = None
) -> Path:
    """Write ``growth_state.json`` (and the tracker's snapshots) into ``folder``; returns the
    JSON path."""
    root = Path(folder)
    doc = growth_state(controller, scheduler)
    if controller.tracker is not None:
        buffers = controller.tracker.state_dict()["buffers"]
        tensors = {k: v.detach().cpu().contiguous() for k, v in buffers.items()}
        write_atomic(root / TRACKER_FILE, lambda tmp: save_file(tensors, tmp))
    write_json_atomic(root / STATE_FILE, doc)
    return root / STATE_FILE


def read_growth_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``growth_state.json`` of ``folder``.

    Raises:
        FileNotFoundError: no state file; ValueError: an unknown format version.
    """
    path = Path(folder) / STATE_FILE
    with open(path, encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown growth state format {doc.get('format')!r}")
    return doc


def load_growth_state(
    folder: str | os.PathLike[str], controller: GrowthController, scheduler: Any = None
) -> dict[str, Any]:
    """Restore controller, trigger, tracker and scheduler state from ``folder``; returns the
    document.

    Raises:
        ValueError: the model's active set differs from the saved one, or the trigger's mode or
            schedule differs.
    """
    doc = read_growth_state(folder)
    controller.load_state_dict({**doc["controller"], "events": doc["events"]})
    controller.trigger.load_state_dict(doc["trigger"])
    tracker_path = Path(folder) / TRACKER_FILE
    if (
        controller.tracker is not None
        and doc.get("tracker_count") is not None
        and tracker_path.exists()
    ):
        buffers = load_file(str(tracker_path))
        controller.tracker.load_state_dict({"count": doc["tracker_count"], "buffers": buffers})
    if scheduler is not None and doc.get("scheduler") is not None:
        scheduler.load_state_dict(doc["scheduler"])
    return doc
