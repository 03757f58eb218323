"""Smoke-install each built wheel alone into a fresh venv and use it: `python scripts/smoke.py dist`.

For every library wheel in the folder, a new virtual environment gets that wheel plus the
adaptnn-core wheel (and their PyPI dependencies, torch included), nothing from the workspace.
Then `packages/<name>/smoke.py` runs with that venv's Python from an empty working directory,
so only the installed wheel can be imported. The smoke script imports the package and runs a tiny
forward pass or optimiser step; a non-zero exit fails the smoke test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _workspace import ROOT, members


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=cwd)


def smoke(dist: Path) -> int:
    wheels = {w.name.split("-")[0]: w for w in sorted(dist.glob("*.whl"))}
    core = wheels.get("adaptnn_core")
    if core is None:
        print(f"smoke: no adaptnn_core wheel in {dist}", file=sys.stderr)
        return 1
    failures = []
    for m in members():
        dist_name = m.name.replace("-", "_")
        wheel = wheels.get(dist_name)
        if wheel is None:
            continue
        script = m.folder / "smoke.py"
        if not script.exists():
            failures.append(f"{m.name}: missing {script.relative_to(ROOT)}")
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"smoke-{m.name}-") as tmp:
            venv = Path(tmp) / "venv"
            python = venv / "bin" / "python"
            try:
                _run([*_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)])
                to_install = [str(wheel)] if wheel == core else [str(wheel), str(core)]
                _run([*_uv(), "pip", "install", "--quiet", "--python", str(python), *to_install])
                _run([str(python), str(script)], cwd=Path(tmp))
            except subprocess.CalledProcessError as exc:
                failures.append(f"{m.name}: {exc}")
                continue
        print(f"smoke: {m.name} ok ({time.perf_counter() - start:.0f} s)", flush=True)
    for f in failures:
        print(f"smoke: FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(smoke(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
