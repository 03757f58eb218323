"""Every ```python block of the READMEs and guides runs as written (one fresh namespace per file).

Blocks of one file share a namespace, in order, as a reader pasting them into one session would.
A block that needs something this machine lacks must say so with a ``# doctest: skip`` line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", *ROOT.glob("packages/*/README.md"), *ROOT.glob("docs/*.md")],
)
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks(path: Path) -> list[str]:
    return [b for b in _BLOCK.findall(path.read_text()) if "# doctest: skip" not in b]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks(path)
    if not blocks:
        pytest.skip("no python example")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{path.name}[python block {i}]", "exec"), namespace)


def test_every_package_readme_has_an_example() -> None:
    for readme in ROOT.glob("packages/*/README.md"):
        assert _blocks(readme), f"{readme.relative_to(ROOT)} has no runnable python example"
