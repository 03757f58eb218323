"""Results writer: ``docs/results/<package>/<name>.{json,md,png}`` with config and environment."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("adaptnn-core", "aion-torch", "auon", "aiether", "inl-llm", "athena")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a result was measured: versions, device, threads, git revision, time."""
    device = torch.device(device)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_revision": _git_revision(),
        "packages": versions,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return env


def write_results(
    package: str,
    name: str,
    *,
    config: Mapping[str, Any],
    records: list[dict[str, Any]],
    markdown: str,
    figures: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "docs/results",
    device: torch.device | str = "cpu",
) -> Path:
    """Write the JSON record, the markdown table and the figures of one benchmark run.

    Args:
        package: folder under ``out_dir`` (``"adaptnn-core"``, ``"aion-torch"``, ``"demo"``, …).
        name: base file name of the benchmark.
        config: the full configuration of the run.
        records: one dict per measurement (raw, per seed).
        markdown: the human-readable table(s); a header with the environment is prepended.
        figures: matplotlib figures, saved as ``<name>.png`` for key ``""`` or ``<name>_<key>.png``.
        out_dir: root results folder (relative paths are taken from the repository root).
        device: the device the numbers were measured on.

    Returns:
        The folder the files were written to.
    """
    root = Path(out_dir)
    if not root.is_absolute():
        root = REPO_ROOT / root
    folder = root / package
    folder.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    payload = {"benchmark": name, "config": dict(config), "environment": env, "records": records}
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = (
        f"# {package}: {name}\n\n"
        f"Written by `benchmarks` on {env['date']} (git {env['git_revision']}); "
        f"device: {env['device']} ({env['device_name']}), {env['threads']} threads, "
        f"torch {env['torch']}.\n\n"
    )
    (folder / f"{name}.md").write_text(header + markdown.rstrip() + "\n")
    for key, fig in (figures or {}).items():
        fig_name = f"{name}.png" if not key else f"{name}_{key}.png"
        fig.savefig(folder / fig_name, dpi=110, bbox_inches="tight")
    return folder


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
