"""Reading the workspace members: their pyproject tables and the `__version__` in their sources."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


@dataclass(frozen=True)
class Member:
    """One workspace package."""

    folder: Path
    pyproject: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.pyproject["project"]["name"])

    @property
    def version(self) -> str:
        return str(self.pyproject["project"]["version"])

    @property
    def dependencies(self) -> list[str]:
        return [str(d) for d in self.pyproject["project"].get("dependencies", [])]

    @property
    def init_file(self) -> Path:
        return self.folder / "src" / self.name.replace("-", "_") / "__init__.py"


def members() -> list[Member]:
    """All packages under packages/, sorted by folder name."""
    found = []
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        with pyproject.open("rb") as fh:
            found.append(Member(pyproject.parent, tomllib.load(fh)))
    return found
