"""Fail when workspace packages disagree on their version or an internal pin does not admit it.

Checks, for every package under packages/:
* `project.version` is the same static string everywhere (no dynamic version);
* `__version__` in the package's `__init__.py` equals it;
* every dependency on `adaptnn-core` is pinned `adaptnn-core>=X.Y,<X.(Y+1)` with X.Y the workspace
  major.minor, so the released packages admit exactly the core released with them.
"""

from __future__ import annotations

import re
import sys

from _workspace import VERSION_LINE, members

PIN = re.compile(r"^adaptnn-core\s*>=\s*(\d+)\.(\d+)\s*,\s*<\s*(\d+)\.(\d+)$")


def check() -> list[str]:
    errors: list[str] = []
    pkgs = members()
    if not pkgs:
        return ["no packages found under packages/"]
    versions = {m.name: m.version for m in pkgs}
    for m in pkgs:
        if "version" in m.pyproject["project"].get("dynamic", []):
            errors.append(f"{m.name}: version must be static, not dynamic")
    if len(set(versions.values())) != 1:
        errors.append(f"packages disagree on the version: {versions}")
    version = pkgs[0].version
    major, minor = (int(x) for x in version.split(".")[:2])
    for m in pkgs:
        text = m.init_file.read_text() if m.init_file.exists() else ""
        found = VERSION_LINE.search(text)
        if not found:
            errors.append(f'{m.name}: no `__version__ = "..."` line in {m.init_file}')
        elif found.group(1) != m.version:
            errors.append(f"{m.name}: __version__ {found.group(1)} != project.version {m.version}")
        for dep in m.dependencies:
            if not dep.replace(" ", "").startswith("adaptnn-core"):
                continue
            pin = PIN.match(dep.strip())
            want = f"adaptnn-core>={major}.{minor},<{major}.{minor + 1}"
            if not pin or tuple(int(x) for x in pin.groups()) != (major, minor, major, minor + 1):
                errors.append(f"{m.name}: dependency {dep!r} should be {want!r}")
    return errors


def main() -> int:
    errors = check()
    for e in errors:
        print(f"check_versions: {e}", file=sys.stderr)
    if not errors:
        names = ", ".join(m.name for m in members())
        print(f"check_versions: {len(members())} packages at {members()[0].version} ({names})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
