"""The layering of DESIGN.md, enforced: every import of every module, read with `ast`, against
the contracts below.

Imports only go downward: the control plane and the agent sit on the SDK and never import each
other; inside the control plane the database layer stays below what uses it, the transition
policy is a leaf, and the agent service and the background services do not reach into the REST
API. Module-level and function-level imports count alike (a function-level import is an
import all the same), `import x` and `from x import y`, absolute and relative.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tiers import REPO_ROOT

PACKAGES = {
    "control_plane": REPO_ROOT / "control_plane",
    "data_plane_agent": REPO_ROOT / "data_plane_agent",
    "fleetflow": REPO_ROOT / "sdk" / "fleetflow",
}


@dataclass(frozen=True)
class Contract:
    """What the modules of `importer` (the package and everything under it) may import."""

    importer: str
    forbidden: tuple[str, ...] = ()  # packages none of them may import
    only: tuple[str, ...] | None = None  # when set: all they may import, besides the stdlib


# What uses the database layer, which it must therefore not import.
ABOVE_THE_DB = ("orchestration", "auth", "api", "services", "placement", "quota", "agent_api")

CONTRACTS = (
    Contract("control_plane", forbidden=("data_plane_agent",)),
    Contract("data_plane_agent", forbidden=("control_plane",)),
    Contract("fleetflow", forbidden=("control_plane", "data_plane_agent")),
    Contract("control_plane.db", forbidden=tuple(f"control_plane.{p}" for p in ABOVE_THE_DB)),
    Contract("control_plane.lifecycle", only=("fleetflow", "control_plane.lifecycle")),
    # The placement rules are pure: `control_plane.scheduling` reads their inputs and runs them.
    Contract("control_plane.placement", only=("fleetflow", "control_plane.placement")),
    Contract("control_plane.agent_api", forbidden=("control_plane.api",)),
    Contract("control_plane.services", forbidden=("control_plane.api",)),
)


@dataclass(frozen=True)
class Import:
    """One `import module` or `from module import names` (relative ones made absolute)."""

    importer: str
    module: str
    names: tuple[str, ...]  # what `from module import` takes: a submodule or a name of it
    file: Path
    line: int


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _module_name(package: str, directory: Path, file: Path) -> str:
    parts = [package, *file.relative_to(directory).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(packages: Mapping[str, Path]) -> Iterator[Import]:
    """Every import statement in every module of `packages` (name -> its directory), wherever it
    stands in the module."""
    for package, directory in packages.items():
        for file in sorted(directory.rglob("*.py")):
            importer = _module_name(package, directory, file)
            is_package = file.name == "__init__.py"
            for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield Import(importer, alias.name, (), file, node.lineno)
                elif isinstance(node, ast.ImportFrom):
                    names = tuple(a.name for a in node.names if a.name != "*")
                    module = _absolute(node, importer, is_package)
                    yield Import(importer, module, names, file, node.lineno)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a `from … import` reads from, relative imports resolved against `importer`."""
    if node.level == 0:
        return node.module or ""
    parts = importer.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def _breaks(contracts: list[Contract], imported: str) -> bool:
    """Whether importing `imported` breaks one of `contracts`."""
    for contract in contracts:
        if any(_within(imported, forbidden) for forbidden in contract.forbidden):
            return True
        if contract.only is not None and imported.split(".")[0] not in sys.stdlib_module_names:
            if not any(_within(imported, allowed) for allowed in contract.only):
                return True
    return False


def violations(
    packages: Mapping[str, Path], contracts: tuple[Contract, ...], root: Path
) -> list[str]:
    """Each import that breaks a contract as `importer -> imported (file:line)`, the file
    relative to `root`: the module of a `from` import when it breaks one, else each name taken
    from it that does (`from a import b`: `a.b`, a submodule)."""
    found = []
    for statement in imports_of(packages):
        binding = [c for c in contracts if _within(statement.importer, c.importer)]
        qualified = [f"{statement.module}.{name}" for name in statement.names]
        imported = [statement.module] if _breaks(binding, statement.module) else qualified
        where = f"{statement.file.relative_to(root)}:{statement.line}"
        found += [
            (statement.file, statement.line, f"{statement.importer} -> {name} ({where})")
            for name in imported
            if _breaks(binding, name)
        ]
    return [line for *_, line in sorted(found)]


def test_imports_only_go_down_the_layers() -> None:
    found = violations(PACKAGES, CONTRACTS, REPO_ROOT)
    if found:
        pytest.fail("imports that break the layering:\n" + "\n".join(found), pytrace=False)


def part_dependencies(packages: Mapping[str, Path], top: str) -> dict[str, set[str]]:
    """Which parts of `top` (its direct subpackages and modules) import which others."""

    def part(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if parts[0] == top and len(parts) > 1 else None

    uses: dict[str, set[str]] = {}
    for statement in imports_of(packages):
        importer = part(statement.importer)
        for module in (statement.module, *(f"{statement.module}.{n}" for n in statement.names)):
            imported = part(module)
            if importer and imported and imported != importer:
                uses.setdefault(importer, set()).add(imported)
    return uses


def test_no_two_parts_of_the_control_plane_import_each_other() -> None:
    """Folders depend one way: a part that imports another is never imported by it, so each
    concept has one home and a reader can follow the layers downward."""
    uses = part_dependencies(PACKAGES, "control_plane")
    both_ways = sorted(
        f"control_plane.{a} <-> control_plane.{b}"
        for a, imported in uses.items()
        for b in imported
        if a < b and a in uses.get(b, set())
    )
    assert not both_ways, "parts that import each other:\n" + "\n".join(both_ways)


def test_the_checker_finds_every_kind_of_import(tmp_path: Path) -> None:
    """On a tiny package: module- and function-level, `import x` and `from x import y`, relative
    and absolute imports that break a contract are each reported; allowed ones are not."""
    top = tmp_path / "top"
    (top / "db").mkdir(parents=True)
    (top / "api").mkdir()
    (top / "leaf").mkdir()
    for package in (top, top / "db", top / "api", top / "leaf"):
        (package / "__init__.py").write_text("")
    (top / "api" / "routes.py").write_text("X = 1\n")
    (top / "settings.py").write_text("import top.db\n")
    (top / "db" / "models.py").write_text(
        "import json\n"
        "import top.api.routes\n"
        "from top import settings\n"
        "\n"
        "def late():\n"
        "    from ..api import routes\n"
        "    from top.api.routes import X\n"
    )
    (top / "db" / "__init__.py").write_text("from .models import late\nfrom ..api import *\n")
    (top / "leaf" / "rules.py").write_text(
        "from __future__ import annotations\nimport os\nfrom . import other\nimport httpx\n"
    )
    contracts = (
        Contract("top.db", forbidden=("top.api",)),
        Contract("top.leaf", only=("top.leaf",)),
    )

    found = violations({"top": top}, contracts, tmp_path)

    assert found == [
        "top.db -> top.api (top/db/__init__.py:2)",
        "top.db.models -> top.api.routes (top/db/models.py:2)",
        "top.db.models -> top.api (top/db/models.py:6)",
        "top.db.models -> top.api.routes (top/db/models.py:7)",
        "top.leaf.rules -> httpx (top/leaf/rules.py:4)",
    ]
    # top.settings imports top.db, which imports top.settings back: a two-way pair of parts.
    uses = part_dependencies({"top": top}, "top")
    assert uses["db"] == {"api", "settings"} and uses["settings"] == {"db"}
