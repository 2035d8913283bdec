"""docs/architecture.md's module map matches the tree: every module of the three packages has
its line, and every path the map names exists. A module added, moved or deleted without its
line fails here, so the map a newcomer reads stays the code's."""

from __future__ import annotations

import re

from tests.tiers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "architecture.md"
PACKAGES = ("sdk/fleetflow", "control_plane", "data_plane_agent")
# Generated gRPC stubs: one line for their folder.
GENERATED = "sdk/fleetflow/agent/v1/"


def _map_section() -> str:
    text = DOC.read_text()
    start = text.index("## Module map")
    return text[start : text.index("\n## ", start + 1)]


def _mapped() -> list[str]:
    return re.findall(r"^- `([^`]+)` — \S", _map_section(), flags=re.MULTILINE)


def _tree() -> set[str]:
    paths = set()
    for package in PACKAGES:
        for file in (REPO_ROOT / package).rglob("*.py"):
            path = file.relative_to(REPO_ROOT).as_posix()
            if path.startswith(GENERATED):
                continue
            if file.name == "__init__.py":
                if file.parent != REPO_ROOT / package:
                    paths.add(f"{file.parent.relative_to(REPO_ROOT).as_posix()}/")
            else:
                paths.add(path)
    return paths | {GENERATED}


def test_every_module_has_one_line_in_the_map() -> None:
    mapped = _mapped()
    missing = sorted(_tree() - set(mapped))
    assert not missing, f"modules without a line in docs/architecture.md's module map: {missing}"
    repeated = sorted({path for path in mapped if mapped.count(path) > 1})
    assert not repeated, f"modules listed more than once: {repeated}"


def test_every_path_in_the_map_exists() -> None:
    gone = sorted(path for path in _mapped() if not (REPO_ROOT / path).exists())
    assert not gone, f"the module map names paths that do not exist: {gone}"
