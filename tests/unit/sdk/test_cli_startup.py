"""What `fleetflow` imports to start: no server code for `--help` and `run`, and the groups of
the installed layers (`dev`, `control-plane`, `agent`) imported only when one of them runs.

The import checks run the CLI in a fresh interpreter with `-X importtime`, which lists every
module imported, so they see exactly what a user's `fleetflow --help` loads. How long that
takes is measured, against `import typer`, by `bench/cli_startup.py`.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow.cli import main as cli_main
from tests.unit.cli_harness import Invoke, cli_invoker, user_environment

ROOT = Path(__file__).resolve().parents[3]
HELLO = str(ROOT / "examples" / "hello.py")

# The upper layers and what only they use: none of it is needed to print help or run locally.
SERVER_PACKAGES = {"control_plane", "data_plane_agent", "sqlalchemy", "temporalio", "grpc"}
# What only the commands that talk to the control plane need.
CLIENT_PACKAGES = {"httpx"}


def fleetflow_imports(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `fleetflow ARGS` in a fresh interpreter; what it printed and every module it
    imported (from `-X importtime`, which lists each one on stderr)."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "from fleetflow.cli.main import main; main()",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert modules, f"no -X importtime output:\n{done.stderr}"
    return done, modules


def packages(modules: set[str]) -> set[str]:
    return {module.split(".", 1)[0] for module in modules}


def test_help_imports_no_server_code() -> None:
    done, modules = fleetflow_imports("--help")
    assert done.returncode == 0, done.stderr
    assert "fleetflow.cli.main" in modules  # the listing below is really this process's
    # Nor the type system (pydantic): the SDK's groups are listed without importing them.
    unwanted = SERVER_PACKAGES | CLIENT_PACKAGES | {"pydantic"}
    assert packages(modules).isdisjoint(unwanted), sorted(packages(modules) & unwanted)
    assert "fleetflow.cli.admin" not in modules and "fleetflow.cli.executions" not in modules
    # The groups are listed all the same, with their descriptions.
    for description in cli_main.PLUGIN_HELP.values():
        assert description in done.stdout  # COLUMNS=200: one line each


def test_workflow_help_imports_no_server_code() -> None:
    done, modules = fleetflow_imports("run", HELLO, "hello_pipeline", "--help")
    assert done.returncode == 0, done.stderr
    assert "Inputs of workflow hello.hello_pipeline:" in done.stdout
    assert "fleetflow.workflow" in modules
    unwanted = SERVER_PACKAGES | CLIENT_PACKAGES
    assert packages(modules).isdisjoint(unwanted), sorted(packages(modules) & unwanted)


def test_a_local_run_imports_no_server_code() -> None:
    done, modules = fleetflow_imports("run", HELLO, "hello_pipeline", "--n", "3", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert '"n_points": 3' in done.stdout
    unwanted = SERVER_PACKAGES | CLIENT_PACKAGES
    assert packages(modules).isdisjoint(unwanted), sorted(packages(modules) & unwanted)


def test_import_fleetflow_defers_the_sdk_until_a_name_is_used() -> None:
    code = (
        "import sys, fleetflow\n"
        "assert 'pydantic' not in sys.modules, 'import fleetflow loaded pydantic'\n"
        "assert 'fleetflow.workflow' not in sys.modules\n"
        "from fleetflow import workflow\n"
        "assert 'fleetflow.workflow' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_decorators_are_not_shadowed_by_their_modules() -> None:
    # `fleetflow.task` and `fleetflow.workflow` are modules and decorators: importing the
    # modules first (as the CLI's loader does) must leave the package's names the decorators.
    code = (
        "import fleetflow.workflow, fleetflow.task, fleetflow.fanout\n"
        "import fleetflow\n"
        "from fleetflow import Client, Directory, File, Resources, map_task, task, workflow\n"
        "assert task is fleetflow.task and task.__module__ == 'fleetflow.task', task\n"
        "assert workflow.__module__ == 'fleetflow.workflow', workflow\n"
        "assert callable(map_task) and Client.__name__ == 'Client'\n"
        "assert set(fleetflow.__all__) <= set(dir(fleetflow))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_submodule_is_bound_on_the_package_whatever_the_import_order() -> None:
    # `fleetflow.types` shares its name with the standard library's `types`: importing it
    # first once made every later submodule import fail to bind on the package, silently
    # (the import system swallows the AttributeError), so `fleetflow.bundle` was missing.
    code = (
        "import pkgutil, fleetflow, fleetflow.types\n"
        "names = [m.name for m in pkgutil.iter_modules(fleetflow.__path__)]\n"
        "modules = [n for n in names if n not in ('task', 'workflow')]\n"
        "for name in modules:\n"
        "    __import__('fleetflow.' + name)\n"
        "missing = [n for n in modules if not hasattr(fleetflow, n)]\n"
        "assert not missing, missing\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# The groups of the installed layers ---------------------------------------------------------


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("dev", ["up", "Run the embedded Fleetflow stack"]),
        ("agent", ["run", "Run the Fleetflow data-plane agent"]),
        ("control-plane", ["serve", "migrate"]),
    ],
)
def test_a_groups_help_imports_it(fleetflow: Invoke, group: str, expected: list[str]) -> None:
    result = fleetflow(group, "--help")
    assert result.code == 0, result
    assert f"Usage: fleetflow {group}" in result.out
    for text in expected:
        assert text in result.out, result.out


def test_the_listed_descriptions_are_the_groups_own() -> None:
    plugins = cli_main._plugin_groups()
    assert list(plugins) == list(cli_main.PLUGIN_HELP)  # the embedded stack first
    for group in [*cli_main.SDK_GROUPS.values(), *plugins.values()]:
        command = cli_main._load_group(group)
        own = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert group.help == own, group.name
        assert command.rich_help_panel == group.panel  # listed in the same panel once loaded


def test_the_help_is_the_same_before_and_after_a_group_is_loaded(fleetflow: Invoke) -> None:
    before = fleetflow("--help")
    assert fleetflow("admin", "--help").code == 0  # imports admin in this process
    after = fleetflow("--help")
    assert before.code == after.code == 0
    assert before.out == after.out


def test_the_cache_variable_named_in_runs_help_is_the_caches() -> None:
    from fleetflow import cache

    assert cli_main.CACHE_DIR_ENV == cache.CACHE_DIR_ENV


@pytest.fixture
def broken_plugin(tmp_path: Path) -> dict[str, str]:
    """An installed distribution whose `fleetflow.cli` entry point cannot be imported: its
    metadata on PYTHONPATH, the module it names nowhere."""
    info = tmp_path / "plugins" / "fleetflow_broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fleetflow-broken-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[fleetflow.cli]\nbroken = no_such_module_xyz:app\n")
    path = os.pathsep.join(filter(None, [str(info.parent), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_a_plugin_that_cannot_be_imported_says_what_is_missing(
    broken_plugin: dict[str, str],
) -> None:
    listed, _ = fleetflow_imports("--help", env=broken_plugin)
    assert listed.returncode == 0, listed.stderr
    assert "broken" in listed.stdout and "fleetflow-broken-plugin" in listed.stdout
    for args in (("broken",), ("broken", "--help"), ("broken", "run", "--fast")):
        done, _ = fleetflow_imports(*args, env=broken_plugin)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert (
            "error: `fleetflow broken` needs no_such_module_xyz: "
            "pip install 'fleetflow[server,agent]'"
        ) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
