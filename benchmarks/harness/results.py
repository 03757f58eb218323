"""Results writer: ``docs/results/<package>/<name>.{json,md,png}`` with config, environment and
provenance (argv, git revision, dirty flag), compact JSON and a 1 MB limit per file."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("adaptnn-core", "aion-torch", "auon", "aiether", "inl-llm", "athena")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=REPO_ROOT
        )
    except OSError:
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> tuple[str, bool | None]:
    """The short revision of ``HEAD`` and whether tracked files differ from it (None if unknown).

    Result files under ``docs/results`` are ignored for the dirty flag: a run that rewrites its own
    result files is still a run of the committed code.
    """
    rev = (_git("rev-parse", "--short", "HEAD") or "").strip() or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results")
    return rev, (None if status is None else bool(status.strip()))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where and how a result was measured: versions, device, threads, git revision and dirty flag,
    the command line (``sys.argv``) and the time."""
    device = torch.device(device)
    rev, dirty = git_state()
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
        "git_revision": rev,
        "git_dirty": dirty,
        "argv": list(sys.argv),
        "packages": versions,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return env


MAX_RESULT_BYTES = 1_000_000
"""No file under ``docs/results`` may be larger than this (DESIGN.md, benchmark provenance)."""


def downsample(values: Sequence[float], max_points: int = 200) -> list[float]:
    """At most ``max_points`` evenly spaced entries of a curve, always keeping the last one."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    n = len(values)
    if n <= max_points:
        return [float(v) for v in values]
    idx = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
    return [float(values[i]) for i in idx]


def _compact(value: Any, indent: int = 0) -> str:
    """JSON with one key per line for objects and every list of scalars on a single line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [
            f"{inner}{json.dumps(str(k))}: {_compact(v, indent + 1)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return "[" + ",".join(_compact(v) for v in value) + "]"
        items = [inner + _compact(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, default=str)


def _check_figure(name: str, fig: Any) -> None:
    """Every saved figure has a title and every data axes labelled axes (the result rules)."""
    has_title = bool(fig._suptitle.get_text()) if getattr(fig, "_suptitle", None) else False
    for ax in fig.get_axes():
        if ax.get_label() == "<colorbar>":
            if not ax.get_ylabel() and not ax.get_xlabel():
                raise ValueError(f"figure {name!r}: colour bar without a label")
            continue
        if not (ax.lines or ax.collections or ax.images or ax.patches or ax.containers):
            continue
        has_title = has_title or bool(ax.get_title())
        if not ax.get_xlabel() or not ax.get_ylabel():
            raise ValueError(f"figure {name!r}: every plot needs x and y labels")
    if not has_title:
        raise ValueError(f"figure {name!r} has no title")


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

    The JSON is compact (lists of numbers on one line) and records the environment, including
    argv, git revision and dirty flag. Figures are checked for a title and axis labels, linked
    from the markdown, and no file may exceed :data:`MAX_RESULT_BYTES` (``ValueError`` before
    anything is written for the JSON and markdown; a too-large PNG is removed and reported).

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
    env = environment(device)
    payload = {"benchmark": name, "config": dict(config), "environment": env, "records": records}
    text = _compact(payload) + "\n"
    figure_names = {
        key: (f"{name}.png" if not key else f"{name}_{key}.png") for key in (figures or {})
    }
    for key, fig in (figures or {}).items():
        _check_figure(figure_names[key], fig)
    dirty = {True: ", uncommitted changes", False: "", None: ", tree state unknown"}
    header = (
        f"# {package}: {name}\n\n"
        f"Written by `benchmarks` on {env['date']} (git {env['git_revision']}"
        f"{dirty[env['git_dirty']]}); "
        f"device: {env['device']} ({env['device_name']}), {env['threads']} threads, "
        f"torch {env['torch']}.\n\n"
    )
    body = markdown.rstrip() + "\n"
    if figure_names:
        body += "\n## Figures\n\n" + "".join(
            f"![{fname}]({fname})\n\n" for fname in figure_names.values()
        )
    md = header + body.rstrip() + "\n"
    for label, content in ((f"{name}.json", text), (f"{name}.md", md)):
        size = len(content.encode())
        if size > MAX_RESULT_BYTES:
            raise ValueError(
                f"{label} would be {size} bytes (limit {MAX_RESULT_BYTES}): "
                "downsample curves or keep fewer traces"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(text)
    (folder / f"{name}.md").write_text(md)
    for key, fig in (figures or {}).items():
        path = folder / figure_names[key]
        fig.savefig(path, dpi=110, bbox_inches="tight")
        if path.stat().st_size > MAX_RESULT_BYTES:
            path.unlink()
            raise ValueError(f"{path.name} is over {MAX_RESULT_BYTES} bytes; use a smaller figure")
    return folder


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
