"""The Python examples of docs/sdk.md run as written.

Each ```python block is a complete module: it is written to a file and imported, as an
engineer's pipeline module would be (a workflow compiles when its module is imported). A block
right after an `<!-- not run: ... -->` comment is skipped (it needs a control plane).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[3] / "docs" / "sdk.md"
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)


def runnable_blocks() -> list[tuple[int, str]]:
    """(line, source) of every Python block meant to run, in document order."""
    text = DOCS.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        if match["before"].startswith("<!-- not run"):
            continue
        line = text.count("\n", 0, match.start("code")) + 1
        blocks.append((line, match["code"]))
    return blocks


BLOCKS = runnable_blocks()


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_example_runs(line: int, code: str, tmp_path: Path) -> None:
    name = f"sdk_docs_example_{line}"
    path = tmp_path / f"{name}.py"
    path.write_text(code + "\n")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
