"""Running the `fleetflow` CLI in-process, as a user with nothing configured would."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

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


# A fake control plane ------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request the fake control plane received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any  # the JSON body, None without one


@dataclass
class FakeControlPlane:
    """A fake control plane for CLI tests that need one before the real server has the route:
    a real HTTP server on a loopback port that answers canned JSON per (method, path) and
    records every request. Requests must carry `Authorization: Bearer <one of tokens>`, or
    get the 401 the real API answers.
    """

    tokens: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    _answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        """Answer `method path` (path decoded, without the query) with `body` as JSON."""
        self._answers[(method, path)] = (status, body)

    def only(self, method: str, path: str) -> Recorded:
        """The one request made to `method path`."""
        matching = [r for r in self.requests if (r.method, r.path) == (method, path)]
        assert len(matching) == 1, f"{method} {path}: {len(matching)} requests in {self.requests}"
        return matching[0]

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    method=self.command,
                    path=unquote(split.path),
                    query=parse_qs(split.query),
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                fake.requests.append(recorded)
                authorization = recorded.headers.get("authorization", "")
                if authorization.removeprefix("Bearer ") not in fake.tokens:
                    status, body = 401, {"detail": "invalid or expired token"}
                else:
                    status, body = fake._answers.get(
                        (recorded.method, recorded.path), (404, {"detail": "not found"})
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # pytest shows what the test asserts, not an access log

        # Bound and listening before the thread starts: the first request simply queues.
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        # A short poll interval: `stop()` returns once the loop notices it.
        serve = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        serve.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def fake_control_plane(tokens: set[str]) -> Iterator[FakeControlPlane]:
    """A started `FakeControlPlane` accepting `tokens`, stopped afterwards (a fixture body)."""
    fake = FakeControlPlane(tokens=set(tokens))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
