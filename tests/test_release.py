"""Release checks that need no build: every member is covered, READMEs work on PyPI."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _workspace import members  # noqa: E402

LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_workspace_has_the_six_packages() -> None:
    assert sorted(m.name for m in members()) == [
        "adaptnn-core",
        "aiether",
        "aion-torch",
        "athena",
        "auon",
        "inl-llm",
    ]


def test_release_workflow_offers_every_package() -> None:
    text = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    options = re.search(r"options: \[([^\]]*)\]", text)
    assert options is not None
    offered = {o.strip() for o in options.group(1).split(",")}
    assert offered == {"all"} | {m.name for m in members()}


def test_package_readmes_link_absolutely() -> None:
    # PyPI shows the README without the repository around it: a relative link is a broken link.
    for m in members():
        readme = m.folder / "README.md"
        for target in LINK.findall(readme.read_text()):
            assert target.startswith(("https://", "http://", "#")), f"{readme}: {target}"


def test_the_smoke_check_finds_what_no_requirement_explains() -> None:
    from smoke import undeclared

    installed = {
        "athena": ["torch>=2.11", 'transformers>=5.23; extra == "hf"'],
        "torch": ['cuda-toolkit[cublas]==13.0; platform_system == "Linux"', "filelock"],
        "cuda-toolkit": ['nvidia-cublas; extra == "cublas"', 'nvidia-cufft; extra == "cufft"'],
        "nvidia-cublas": [],
        "filelock": [],
        "transformers": [],  # only the hf extra names it
        "aion-torch": [],  # a sibling nobody asked for
        "nvidia-cufft": [],  # an extra of a dependency that nobody requested
        "pip": [],
    }
    got = undeclared("athena", installed)
    linux = sys.platform.startswith("linux")
    want = ["aion-torch", "nvidia-cufft", "transformers"]
    assert got == (want if linux else sorted([*want, "cuda-toolkit", "nvidia-cublas"]))
