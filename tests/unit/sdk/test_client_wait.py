"""`client.executions.wait` polls an execution's progress (its state and its attempts counted
by state) and reads the whole execution, attempts included, only when `on_change` wants a
changed snapshot and once at the end; against a control plane without the progress route it
polls the execution itself. Without `on_change` each read is a long poll, and one the server
did not hold is followed by `poll_interval`'s sleep."""

from __future__ import annotations

from typing import Any

import pytest

from fleetflow.client import executions as executions_module
from fleetflow.client.errors import ApiError
from fleetflow.client.executions import LONG_POLL_SECONDS, Executions

ID = "ex-1"
GET = f"/api/v1/executions/{ID}"
PROGRESS = f"{GET}/progress"


def attempt(number: int, status: str) -> dict[str, Any]:
    return {
        "id": f"at-{number}",
        "node_id": f"n{number}",
        "map_index": None,
        "task_name": "m.t",
        "attempt_number": 1,
        "status": status,
        "cache_hit": False,
        "cluster": None,
        "error_message": None,
        "error_traceback": None,
        "created_at": "2026-12-06T10:00:00Z",
        "started_at": None,
        "finished_at": None,
    }


def execution(status: str, *attempt_states: str) -> dict[str, Any]:
    return {
        "id": ID,
        "workflow": "m.wf",
        "version": "v1",
        "status": status,
        "inputs": {},
        "outputs": None,
        "error": None,
        "created_at": "2026-12-06T10:00:00Z",
        "started_at": None,
        "finished_at": None,
        "attempts": [attempt(i, s) for i, s in enumerate(attempt_states)],
    }


def progress(status: str, *attempt_states: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for state in attempt_states:
        counts[state] = counts.get(state, 0) + 1
    return {"id": ID, "status": status, "finished_at": None, "attempts": counts}


# The execution as it goes, one step per poll of the progress.
STEPS = [
    ("RUNNING", "PENDING", "PENDING"),
    ("RUNNING", "PENDING", "PENDING"),
    ("RUNNING", "RUNNING", "PENDING"),
    ("SUCCEEDED", "SUCCEEDED", "SUCCEEDED"),
]


class ScriptedTransport:
    """Answers each route from the execution's current step; a progress poll moves it on."""

    def __init__(self, *, has_progress: bool = True, exists: bool = True) -> None:
        self.calls: list[str] = []
        self.waits: list[float] = []  # each progress read's wait_seconds (0: none asked)
        self.step = -1
        self.has_progress = has_progress
        self.exists = exists

    def timeout_beyond(self, seconds: float) -> float:
        return 5 + seconds

    def call(self, method: str, path: str, model: Any, **kwargs: Any) -> Any:
        assert method == "GET"
        self.calls.append(path)
        if path == PROGRESS:
            wait = kwargs.get("params", {}).get("wait_seconds", 0)
            assert kwargs.get("timeout", 5) == 5 + wait  # read time beyond the server's wait
            self.waits.append(wait)
        if not self.exists or (path == PROGRESS and not self.has_progress):
            raise ApiError(404, f"execution {ID} not found" if not self.exists else "Not Found")
        if path == PROGRESS or not self.has_progress:
            self.step = min(self.step + 1, len(STEPS) - 1)
        maker = progress if path == PROGRESS else execution
        return model.model_validate(maker(*STEPS[self.step]))


def test_a_plain_wait_reads_the_whole_execution_once_at_the_end() -> None:
    transport = ScriptedTransport()
    final = Executions(transport).wait(ID, poll_interval=0)  # type: ignore[arg-type]
    assert final.status == "SUCCEEDED"
    assert [a.status for a in final.attempts] == ["SUCCEEDED", "SUCCEEDED"]
    assert transport.calls == [PROGRESS] * 4 + [GET]
    assert transport.waits == [LONG_POLL_SECONDS] * 4  # each a long poll


class Clock:
    """`time` for `executions`: monotonic moves only when the transport says the server held
    a read, or when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("server_waits", [True, False])
def test_a_long_poll_that_waited_is_followed_at_once_one_that_did_not_after_the_interval(
    monkeypatch: pytest.MonkeyPatch, server_waits: bool
) -> None:
    clock = Clock()
    monkeypatch.setattr(executions_module, "time", clock)
    transport = ScriptedTransport()
    answer = transport.call

    def call(method: str, path: str, model: Any, **kwargs: Any) -> Any:
        if server_waits and path == PROGRESS and STEPS[transport.step + 1][0] != "SUCCEEDED":
            clock.now += kwargs["params"]["wait_seconds"]  # held all its time: nothing ended
        return answer(method, path, model, **kwargs)

    monkeypatch.setattr(transport, "call", call)
    final = Executions(transport).wait(ID, poll_interval=0.5, timeout=50)  # type: ignore[arg-type]
    assert final.status == "SUCCEEDED"
    if server_waits:
        assert clock.sleeps == []
        # Never asked to wait past the timeout: 50 s = 20 + 20 + the 10 left, then a read.
        assert transport.waits == [20, 20, 10, 0]
    else:  # an older control plane, or this tenant's waits all taken: polled as before
        assert clock.sleeps == [0.5, 0.5, 0.5]


def test_on_change_sees_each_changed_snapshot_whole() -> None:
    transport = ScriptedTransport()
    seen: list[tuple[str, ...]] = []
    Executions(transport).wait(  # type: ignore[arg-type]
        ID,
        poll_interval=0,
        on_change=lambda e: seen.append((e.status, *(a.status for a in e.attempts))),
    )
    assert seen == [STEPS[0], STEPS[2], STEPS[3]]  # the unchanged second poll reads no more
    assert transport.calls == [PROGRESS, GET, PROGRESS, PROGRESS, GET, PROGRESS, GET]


def test_without_the_progress_route_it_polls_the_execution() -> None:
    transport = ScriptedTransport(has_progress=False)
    final = Executions(transport).wait(ID, poll_interval=0)  # type: ignore[arg-type]
    assert final.status == "SUCCEEDED"
    assert transport.calls == [PROGRESS] + [GET] * 4


def test_an_execution_that_does_not_exist_is_a_404() -> None:
    transport = ScriptedTransport(exists=False)
    with pytest.raises(ApiError) as raised:
        Executions(transport).wait(ID, poll_interval=0)  # type: ignore[arg-type]
    assert raised.value.status_code == 404
    assert transport.calls == [PROGRESS, GET]
