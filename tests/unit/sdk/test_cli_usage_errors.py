"""Mistakes on the `fleetflow` command line: the closest correct word suggested, and the exit
code a script can act on: 0 success, 1 failure, 2 a usage error, 130 interrupted (Ctrl-C).

Each test goes through `fleetflow.cli.main.main`, the console script's entry point, as
`test_cli_errors.py` does; the Ctrl-C test runs the real console script in a subprocess and
interrupts it with SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.unit.cli_harness import Invoke, Result, cli_invoker, user_environment

ROOT = Path(__file__).resolve().parents[3]
HELLO = str(ROOT / "examples" / "hello.py")

SWITCHES = """
from fleetflow import task, workflow


@task
def describe(n: int, verbose: bool, dry: bool | None) -> str:
    return f"n={n} verbose={verbose} dry={dry}"


@workflow
def flags(n: int = 1, verbose: bool = False, dry: bool | None = None) -> str:
    return describe(n=n, verbose=verbose, dry=dry)
"""

INTERRUPTED = """
import time
from pathlib import Path

from fleetflow import task, workflow


@task
def wait_for_ctrl_c(marker: str) -> int:
    Path(marker).write_text("started")
    time.sleep(300)
    return 0


@workflow
def interrupted(marker: str) -> int:
    return wait_for_ctrl_c(marker=marker)
"""

RAISES_KEYBOARD_INTERRUPT = """
from fleetflow import task, workflow


@task
def stop() -> int:
    raise KeyboardInterrupt


@workflow
def stopped() -> int:
    return stop()
"""


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


def assert_usage_error(result: Result, *expected: str) -> None:
    """Exit 2, `expected` on stderr, nothing run and nothing of Python's internals shown."""
    assert result.code == 2, result
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert "running" not in result.out
    for text in expected:
        assert text in result.err, result.err


# Did you mean …? ------------------------------------------------------------------------------


def test_a_mistyped_command(fleetflow: Invoke) -> None:
    assert_usage_error(
        fleetflow("exections", "list"), "No such command 'exections'. Did you mean 'executions'?"
    )


def test_a_mistyped_command_of_an_installed_layer(fleetflow: Invoke) -> None:
    # `dev` comes from an entry point, not imported to suggest it.
    assert_usage_error(fleetflow("deev", "up"), "No such command 'deev'. Did you mean 'dev'?")


def test_a_command_nothing_resembles(fleetflow: Invoke) -> None:
    result = fleetflow("zzzzzz")
    assert_usage_error(result, "No such command 'zzzzzz'.")
    assert "Did you mean" not in result.err


def test_a_mistyped_workflow_input(fleetflow: Invoke) -> None:
    assert_usage_error(
        fleetflow("run", HELLO, "hello_pipeline", "--epoch", "3"),
        "error: workflow 'hello.hello_pipeline' has no input 'epoch'; its inputs are: n, "
        "epochs, seed; did you mean --epochs?",
    )


def test_a_mistyped_workflow_input_without_a_value(fleetflow: Invoke) -> None:
    # The unknown name is the mistake to report, not the missing value.
    assert_usage_error(fleetflow("run", HELLO, "hello_pipeline", "--seeds"), "did you mean --seed?")


def test_a_mistyped_option_of_run(fleetflow: Invoke) -> None:
    before = fleetflow("run", "--remot", HELLO, "hello_pipeline")
    assert_usage_error(before, "No such option: --remot. Did you mean --remote?")
    # After WORKFLOW it could have been an input: both kinds are offered.
    after = fleetflow("run", HELLO, "hello_pipeline", "--remot")
    assert_usage_error(after, "has no input 'remot'", "did you mean --remote?")


def test_a_mistyped_option_of_a_subcommand(fleetflow: Invoke) -> None:
    assert_usage_error(
        fleetflow("executions", "list", "--limt", "3"),
        "No such option: --limt. Did you mean --limit?",
    )


def test_a_mistyped_root_option(fleetflow: Invoke) -> None:
    assert_usage_error(
        fleetflow("--tenat", "acme", "whoami"), "No such option: --tenat. Did you mean --tenant?"
    )


def test_a_mistyped_workflow_name(fleetflow: Invoke) -> None:
    assert_usage_error(
        fleetflow("run", HELLO, "hello_pipelin"),
        "has no @workflow named 'hello_pipelin'; workflows in",
        "did you mean 'hello_pipeline'?",
    )


# A flag without a value --------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--n"],
        ["--n", "--epochs", "3"],
        ["--epochs", "3", "--n"],
    ],
)
def test_a_value_flag_without_its_value_is_a_usage_error(
    fleetflow: Invoke, flags: list[str]
) -> None:
    result = fleetflow("run", HELLO, "hello_pipeline", *flags)
    assert_usage_error(result, "error: --n needs a value (int): --n VALUE")
    assert "'true'" not in result.err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--verbose"], "n=1 verbose=True dry=None"),
        (["--verbose", "--n", "3"], "n=3 verbose=True dry=None"),
        (["--verbose", "false", "--dry"], "n=1 verbose=False dry=True"),
        (["--verbose=no", "--dry", "null"], "n=1 verbose=False dry=None"),
    ],
)
def test_bool_inputs_are_switches(
    fleetflow: Invoke, tmp_path: Path, flags: list[str], expected: str
) -> None:
    (tmp_path / "switches.py").write_text(SWITCHES)
    result = fleetflow("run", "switches.py", "flags", *flags)
    assert result.code == 0, result
    assert result.outputs() == {"o0": expected}


# Exit codes ---------------------------------------------------------------------------------


def test_success_is_0(fleetflow: Invoke) -> None:
    result = fleetflow("run", HELLO, "hello_pipeline", "--n", "3", "--epochs", "1")
    assert result.code == 0, result


def test_a_failed_run_is_1(fleetflow: Invoke, tmp_path: Path) -> None:
    (tmp_path / "broken_import.py").write_text("raise RuntimeError('at import')\n")
    result = fleetflow("run", "broken_import.py", "wf")
    assert result.code == 1, result
    assert "error: cannot import broken_import.py: RuntimeError: at import" in result.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--n", "abc"], "input 'n': expected int, got 'abc'"),
        (["--n", "1", "5"], "unexpected argument '5'"),
        (["--n", "1", "--n", "2"], "input --n given twice"),
        (["--dry-run"], "--dry-run previews a remote run: add --remote"),
        (["--priority", "5"], "--priority orders remote runs: add --remote"),
        (["--remote", "--cache-dir", "c"], "--cache-dir is for local runs"),
    ],
)
def test_bad_input_values_and_option_combinations_are_2(
    fleetflow: Invoke, args: list[str], expected: str
) -> None:
    # run's own options may follow WORKFLOW too.
    assert_usage_error(fleetflow("run", HELLO, "hello_pipeline", *args), expected)


def test_a_missing_required_input_is_2(fleetflow: Invoke, tmp_path: Path) -> None:
    (tmp_path / "needs.py").write_text(INTERRUPTED)
    assert_usage_error(fleetflow("run", "needs.py", "interrupted"), "needs --marker (str)")


def test_a_missing_file_is_2(fleetflow: Invoke) -> None:
    assert_usage_error(fleetflow("run", "nope.py", "wf"), "error: nope.py: no such file")


def test_parser_usage_errors_are_2(fleetflow: Invoke) -> None:
    assert_usage_error(fleetflow("run", HELLO), "Missing argument 'WORKFLOW'")
    assert_usage_error(fleetflow("executions", "list", "--status", "DONE"), "--status")


def test_the_exit_code_a_subcommand_chooses_is_kept(
    fleetflow: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent exits 2 (with typer.Exit) when it has no token; typer hands that code back
    # instead of exiting, and main() used to drop it.
    monkeypatch.delenv("FLEETFLOW_AGENT_TOKEN", raising=False)
    result = fleetflow("agent", "run")
    assert result.code == 2, result
    assert "no cluster token" in result.err


def test_a_keyboard_interrupt_is_130(fleetflow: Invoke, tmp_path: Path) -> None:
    (tmp_path / "stopped.py").write_text(RAISES_KEYBOARD_INTERRUPT)
    result = fleetflow("run", "stopped.py", "stopped")
    assert result.code == 130, result
    assert "Traceback" not in result.err


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_130(tmp_path: Path) -> None:
    (tmp_path / "interrupted.py").write_text(INTERRUPTED)
    marker = tmp_path / "started"
    script = Path(sys.executable).with_name("fleetflow")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from fleetflow.cli.main import main; main()"]
    )
    proc = subprocess.Popen(
        [*command, "run", "interrupted.py", "interrupted", "--marker", str(marker)],
        cwd=tmp_path,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal starts it: a test run launched in the background of a shell without
        # job control inherits SIGINT ignored, and Python then never turns it into Ctrl-C.
        preexec_fn=_interruptible,
    )
    try:

        def task_started() -> bool:
            assert proc.poll() is None, proc.communicate()
            return marker.exists()

        wait_until(task_started, timeout=120, interval=0.05, message="the task to start")
        proc.send_signal(signal.SIGINT)  # the task is running: interrupt it
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
