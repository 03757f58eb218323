"""Set one version on every workspace package: `python scripts/bump_version.py X.Y.Z`.

Rewrites `project.version`, the `__version__` line and the internal `adaptnn-core` pins
(`>=X.Y,<X.(Y+1)`). Run `uv lock` afterwards (`make bump` does).
"""

from __future__ import annotations

import re
import sys

from _workspace import VERSION_LINE, members

SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def bump(version: str) -> None:
    if not SEMVER.match(version):
        raise SystemExit(f"bump_version: VERSION must look like 1.2.3, got {version!r}")
    major, minor = (int(x) for x in version.split(".")[:2])
    pin = f'"adaptnn-core>={major}.{minor},<{major}.{minor + 1}"'
    for m in members():
        path = m.folder / "pyproject.toml"
        text = path.read_text()
        text = re.sub(r'(?m)^version = "[^"]+"$', f'version = "{version}"', text, count=1)
        text = re.sub(r'"adaptnn-core\s*>=[^"]*"', pin, text)
        path.write_text(text)
        init = m.init_file.read_text()
        m.init_file.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', init, count=1))
        print(f"bump_version: {m.name} -> {version}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: bump_version.py X.Y.Z")
    bump(sys.argv[1])
