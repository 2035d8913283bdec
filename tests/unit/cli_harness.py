"""Running the `fleetflow` CLI in-process, as a user with nothing configured would."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetflow.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def outputs(self) -> dict[str, object]:
        """The JSON document on the last line of stdout."""
        parsed = json.loads(self.out.strip().splitlines()[-1])
        assert isinstance(parsed, dict)
        return parsed


Invoke = Callable[..., Result]


def user_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No control plane configured, a wide terminal, the working directory in `tmp_path`, and
    the workflow files a test imported (by their file name) forgotten afterwards."""
    monkeypatch.setenv("FLEETFLOW_CONFIG", str(tmp_path / "cli-config.json"))
    for name in ("FLEETFLOW_API_URL", "FLEETFLOW_DEBUG", "FLEETFLOW_TOKEN", "FLEETFLOW_TENANT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    yield
    # Only the workflow files: forgetting a library's lazily imported submodules would leave
    # it half re-imported (httpx catching another copy of httpcore's exceptions).
    for name in set(sys.modules) - modules:
        if _is_below(getattr(sys.modules[name], "__file__", None), tmp_path):
            del sys.modules[name]


def _is_below(filename: str | None, directory: Path) -> bool:
    return filename is not None and Path(filename).resolve().is_relative_to(directory.resolve())


def cli_invoker(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    """`invoke("run", …)` runs `fleetflow run …` through `main()` and returns what it printed."""

    def invoke(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["fleetflow", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke
