"""Every ```python block of the README and the user guide pages runs: each page's blocks in order, sharing one
namespace."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [
    "../README.md",
    "wrapping.md",
    "masking.md",
    "methods/motion_aware.md",
    "methods/motion_guided.md",
    "methods/hog_targets.md",
    "methods/teacher_targets.md",
    "howto/own_videos.md",
    "howto/checkpoints.md",
    "howto/custom_masker.md",
]
PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", PAGES)
def test_page_examples_run(name):
    page = DOCS / name
    blocks = python_blocks(page)
    assert blocks, f"{page} has no ```python block"
    namespace: dict = {"__name__": f"docs.{name}"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{page}:python-block-{i}", "exec")
        exec(code, namespace)


def test_block_extraction():
    text = "intro\n```python\na = 1\n```\n```\nnot python\n```\n```python title='x'\nb = a + 1\n```\n"
    assert PYTHON_BLOCK.findall(text) == ["a = 1\n", "b = a + 1\n"]
