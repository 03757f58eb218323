"""Every code block of the READMEs and the documentation site runs as written, or says why not.

``python`` blocks run (one fresh namespace per file): blocks of one file share a namespace, in
order, as a reader pasting them into one session would. A python block that cannot run here says
so with a ``# doctest: skip (reason)`` line. Every other block (shell commands, configuration,
output) must follow a ``<!-- not run: reason -->`` line. The result pages under ``docs/results/``
are written by the benchmark scripts; their ``text`` blocks are program output, not code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOCS = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("packages/*/README.md"),
        *(p for p in ROOT.glob("docs/**/*.md") if RESULTS not in p.parents),
    ],
)
_FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
_NOT_RUN = re.compile(r"<!-- not run: \S.*-->\s*$")
_SKIP = re.compile(r"# doctest: skip \(\S[^)]*\)")


def _blocks(path: Path) -> list[str]:
    return [
        body
        for lang, body in _FENCE.findall(path.read_text())
        if lang == "python" and "# doctest: skip" not in body
    ]


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


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_runs_or_says_why_not(path: Path) -> None:
    text = path.read_text()
    problems = []
    for match in _FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if lang == "python":
            if "# doctest: skip" in body and not _SKIP.search(body):
                problems.append(f"line {line}: say why: # doctest: skip (reason)")
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not _NOT_RUN.search(before):
            problems.append(
                f"line {line}: a ```{lang or '(no language)'} block must follow a "
                "'<!-- not run: reason -->' line"
            )
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)
