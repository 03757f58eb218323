"""Smoke-install each built wheel alone into a fresh venv and use it: `python scripts/smoke.py dist`.

For every library wheel in the folder, a new virtual environment gets that wheel, plus the
adaptnn-core wheel when the library depends on it, and their PyPI dependencies (torch included),
nothing from the workspace. Two checks follow:

- **Nothing undeclared**: every distribution installed in the venv must be reachable from the
  library through required dependencies (``Requires-Dist`` without an ``extra`` marker, read from
  the installed metadata). A sibling library, or a package that only an optional extra names,
  fails the check.
- **It works**: ``packages/<name>/smoke.py`` runs with that venv's Python from an empty working
  directory, so only the installed wheel can be imported. The smoke script imports the package and
  runs a tiny forward pass or optimiser step; a non-zero exit fails the smoke test.

An optional extra ``X`` with a script ``packages/<name>/smoke_X.py`` gets a venv of its own with
``wheel[X]`` installed, the same two checks (the extra's requirements count as declared there),
and that script.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _workspace import ROOT, members
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Installer tooling that may sit in a venv without being anyone's dependency.
TOOLING = frozenset({"pip", "setuptools", "wheel"})


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=cwd)


def _requirements(requires_dist: list[str], extras: frozenset[str]) -> list[Requirement]:
    """The requirements that apply with ``extras`` requested (none: the required ones only),
    markers evaluated for this interpreter."""
    out = []
    for line in requires_dist:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
            out.append(req)
    return out


def _wheel_requires(wheel: Path) -> list[str]:
    """Canonical names of the wheel's required dependencies."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8"))
    reqs = _requirements(msg.get_all("Requires-Dist") or [], frozenset())
    return [canonicalize_name(r.name) for r in reqs]


def _installed(venv: Path) -> dict[str, list[str]]:
    """Every distribution in ``venv``: canonical name -> its ``Requires-Dist`` lines."""
    found: dict[str, list[str]] = {}
    for meta in venv.glob("lib/python*/site-packages/*.dist-info/METADATA"):
        msg = email.parser.Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
        found[canonicalize_name(msg["Name"])] = list(msg.get_all("Requires-Dist") or [])
    return found


def undeclared(
    root: str, installed: dict[str, list[str]], extras: frozenset[str] = frozenset()
) -> list[str]:
    """Installed distributions that no chain of requirements from ``root`` (with ``extras``)
    reaches; a dependency's extras are followed where a requirement asks for them."""
    reached: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(root), extras)]
    while todo:
        item = todo.pop()
        if item in reached:
            continue
        reached.add(item)
        name, wanted = item
        for req in _requirements(installed.get(name, []), wanted):
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return sorted(set(installed) - {name for name, _ in reached} - TOOLING)


def _try(name: str, wheels: list[Path], script: Path, extra: str | None) -> str | None:
    """One fresh venv: install, check the installed set, run ``script``; the failure, or None."""
    label = f"{name}[{extra}]" if extra else name
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"smoke-{name}-") as tmp:
        venv = Path(tmp) / "venv"
        python = venv / "bin" / "python"
        to_install = [str(w) for w in wheels]
        if extra:
            to_install[0] += f"[{extra}]"
        try:
            _run([*_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)])
            _run([*_uv(), "pip", "install", "--quiet", "--python", str(python), *to_install])
            wanted = frozenset({extra}) if extra else frozenset[str]()
            extra_dists = undeclared(name, _installed(venv), wanted)
            if extra_dists:
                return f"{label}: installs undeclared distributions {extra_dists}"
            _run([str(python), str(script)], cwd=Path(tmp))
        except subprocess.CalledProcessError as exc:
            return f"{label}: {exc}"
    print(f"smoke: {label} ok ({time.perf_counter() - start:.0f} s)", flush=True)
    return None


def smoke(dist: Path) -> int:
    wheels = {w.name.split("-")[0]: w for w in sorted(dist.glob("*.whl"))}
    core = wheels.get("adaptnn_core")
    if core is None:
        print(f"smoke: no adaptnn_core wheel in {dist}", file=sys.stderr)
        return 1
    siblings = {canonicalize_name(m.name) for m in members()}
    failures = []
    for m in members():
        wheel = wheels.get(m.name.replace("-", "_"))
        if wheel is None:
            continue
        script = m.folder / "smoke.py"
        if not script.exists():
            failures.append(f"{m.name}: missing {script.relative_to(ROOT)}")
            continue
        requires = _wheel_requires(wheel)
        pulled = sorted((set(requires) & siblings) - {"adaptnn-core"})
        if pulled:
            failures.append(f"{m.name}: depends on sibling libraries {pulled}")
            continue
        to_install = [wheel]
        if wheel != core and "adaptnn-core" in requires:
            to_install.append(core)
        runs: list[tuple[Path, str | None]] = [(script, None)]
        for extra in m.pyproject["project"].get("optional-dependencies", {}):
            extra_script = m.folder / f"smoke_{extra}.py"
            if extra_script.exists():
                runs.append((extra_script, extra))
        for path, extra in runs:
            failure = _try(m.name, to_install, path, extra)
            if failure is not None:
                failures.append(failure)
    for f in failures:
        print(f"smoke: FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(smoke(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
