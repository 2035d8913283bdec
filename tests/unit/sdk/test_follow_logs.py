"""`Client.follow_logs` against a scripted fake control plane: lines as they are added, across
map elements and retries, unfinished lines held back, and the stored window moving on.

The fake is a real HTTP server on a loopback port; each `GET /executions/ex-1` moves it to the
next scripted state, and `GET /executions/ex-1/logs` answers the logs of the current state, so
the follower sees the execution change exactly as scripted, with no timing involved.

Why scripted, not the real control plane (tests/api_server.py): what is tested is how the
follower reacts to the execution changing between two of its polls (a line written half, a map
element retried, the stored window moving on). A real server reaches those states only by the
timing of a running agent. Following a real execution on a whole stack is in
tests/integration/test_cli_executions.py; the route polled, in test_execution_logs_api.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleetflow.client import GAP_TEXT, Client, LogLine

CREATED_AT = "2026-11-01T10:00:00Z"


def attempt(
    index: int | None, number: int, status: str, *, node: str = "n1-chatter"
) -> dict[str, Any]:
    return {
        "id": f"at-{node}-{index}-{number}",
        "node_id": node,
        "map_index": index,
        "attempt_number": number,
        "task_name": "chatter.chatter",
        "status": status,
        "cache_hit": False,
        "cluster": None,
        "error_message": None,
        "error_traceback": None,
        "created_at": CREATED_AT,
        "started_at": None,
        "finished_at": None,
    }


class ScriptedControlPlane:
    """Serves `states` in turn: (execution status, [(attempt, its stored log or None)])."""

    def __init__(self, states: list[tuple[str, list[tuple[dict[str, Any], str | None]]]]):
        self.states = states
        self.current = -1
        self.asked_for: list[list[str]] = []  # attempt ids of each logs request
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split = urlsplit(self.path)
                if split.path == "/api/v1/executions/ex-1":
                    fake.current = min(fake.current + 1, len(fake.states) - 1)
                    status, attempts = fake.states[fake.current]
                    body: Any = {
                        "id": "ex-1",
                        "workflow": "chatter.chatty",
                        "version": "v1",
                        "status": status,
                        "inputs": {},
                        "outputs": None,
                        "error": None,
                        "created_at": CREATED_AT,
                        "started_at": None,
                        "finished_at": None,
                        "attempts": [a for a, _ in attempts],
                    }
                elif split.path == "/api/v1/executions/ex-1/logs":
                    wanted = parse_qs(split.query).get("attempt_id", [])
                    fake.asked_for.append(wanted)
                    _, attempts = fake.states[fake.current]
                    body = {
                        "execution_id": "ex-1",
                        "attempts": [
                            {"attempt_id": a["id"], **a, "log": log}
                            for a, log in attempts
                            if a["id"] in wanted
                        ],
                    }
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedControlPlane]]:
    started: list[ScriptedControlPlane] = []
    yield started
    for fake in started:
        fake.stop()


def follow(started: list[ScriptedControlPlane], states: Any, **options: Any) -> list[LogLine]:
    fake = ScriptedControlPlane(states)
    started.append(fake)
    with Client(fake.url, token="t") as client:
        return list(client.follow_logs("ex-1", poll_interval=0, final_log_grace=0, **options))


def texts(lines: list[LogLine]) -> list[tuple[str, int | None, int, str]]:
    return [(line.node_id, line.map_index, line.attempt_number, line.text) for line in lines]


def test_lines_arrive_as_added_across_elements_and_retries(
    scripted: list[ScriptedControlPlane],
) -> None:
    first, second, retry = attempt(0, 1, "RUNNING"), attempt(1, 1, "PENDING"), attempt(1, 2, "")
    long_line = "a" * 5000
    states = [
        ("RUNNING", [(first, "e0 l0\ne0 l1"), (second, None)]),
        ("RUNNING", [(first, "e0 l0\ne0 l1\n"), ({**second, "status": "RUNNING"}, "e1 l0\n")]),
        (
            "RUNNING",
            [
                ({**first, "status": "SUCCEEDED"}, "e0 l0\ne0 l1\ne0 end"),
                ({**second, "status": "FAILED"}, "e1 l0\nboom\n"),
                ({**retry, "status": "PENDING"}, None),
            ],
        ),
        ("RUNNING", [({**retry, "status": "RUNNING"}, f"{long_line}\nr1\n")]),
        # The stored window dropped its first 500 characters while r2 was added.
        ("RUNNING", [({**retry, "status": "RUNNING"}, f"{long_line}\nr1\n"[500:] + "r2\n")]),
        # Everything read before is gone: the lost output is marked.
        ("SUCCEEDED", [({**retry, "status": "SUCCEEDED"}, "z1\nz2\n")]),
    ]
    lines = follow(scripted, states)
    assert texts(lines) == [
        ("n1-chatter", 0, 1, "e0 l0"),
        ("n1-chatter", 0, 1, "e0 l1"),
        ("n1-chatter", 1, 1, "e1 l0"),
        ("n1-chatter", 0, 1, "e0 end"),  # an unfinished last line, once its attempt ended
        ("n1-chatter", 1, 1, "boom"),
        ("n1-chatter", 1, 2, long_line),
        ("n1-chatter", 1, 2, "r1"),
        ("n1-chatter", 1, 2, "r2"),
        ("n1-chatter", 1, 2, GAP_TEXT),
        ("n1-chatter", 1, 2, "z1"),
        ("n1-chatter", 1, 2, "z2"),
    ]
    assert [line.gap for line in lines].count(True) == 1 and lines[8].gap
    # Ended attempts are not read again, nor attempts that have not started.
    fake = scripted[0]
    assert fake.asked_for[0] == [first["id"]]
    assert all(first["id"] not in ids for ids in fake.asked_for[3:])


def test_filters_and_an_execution_that_ended_long_ago(
    scripted: list[ScriptedControlPlane],
) -> None:
    train = {**attempt(None, 1, "SUCCEEDED", node="n0-train")}
    evaluate = {**attempt(None, 1, "SUCCEEDED", node="n1-evaluate")}
    states = [("FAILED", [(train, "fit\n"), (evaluate, "score\nlast words")])]
    assert texts(follow(scripted, states, node="n1-evaluate")) == [
        ("n1-evaluate", None, 1, "score"),
        ("n1-evaluate", None, 1, "last words"),
    ]
    assert texts(follow(scripted, states, attempt=2)) == []
    assert [line.text for line in follow(scripted, states)] == ["fit", "score", "last words"]
