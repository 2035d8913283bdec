"""The process logging setup: text and JSON formats, contextual ids, redaction of secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fleetflow.logs import (
    LogConfigError,
    LogFormat,
    configure_logging,
    current_log_context,
    log_context,
    log_format_from_env,
    make_handler,
    redact_secrets,
)

TOKEN = "ffa_Zm9vYmFyYmF6cXV4LXRoaXMtaXMtYS10ZXN0LXRva2Vu"


class Captured:
    def __init__(self, log_format: LogFormat) -> None:
        self.stream = io.StringIO()
        self.handler = make_handler(log_format, self.stream)
        self.logger = logging.getLogger(f"fleetflow.test.{log_format.value}")

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


def _capture(log_format: LogFormat) -> Iterator[Captured]:
    captured = Captured(log_format)
    captured.logger.addHandler(captured.handler)
    captured.logger.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        captured.logger.removeHandler(captured.handler)


@pytest.fixture
def json_log() -> Iterator[Captured]:
    yield from _capture(LogFormat.JSON)


@pytest.fixture
def text_log() -> Iterator[Captured]:
    yield from _capture(LogFormat.TEXT)


def test_json_lines_carry_the_context_fields_only_when_set(json_log: Captured) -> None:
    json_log.logger.info("outside")
    with log_context(execution_id="ex_1", node_id="prepare"):
        with log_context(attempt_id="at_2", cluster="gpu-east", node_id=None):
            json_log.logger.warning("leased %s", "at_2")
        json_log.logger.info("back out")

    outside, leased, back = json_log.records()
    assert set(outside) == {"time", "level", "logger", "message"}
    assert outside["message"] == "outside" and outside["level"] == "INFO"
    assert outside["time"].endswith("+00:00")
    assert leased == {
        "time": leased["time"],
        "level": "WARNING",
        "logger": "fleetflow.test.json",
        "message": "leased at_2",
        "execution_id": "ex_1",
        "attempt_id": "at_2",
        "node_id": "prepare",
        "cluster": "gpu-east",
    }
    assert back["execution_id"] == "ex_1" and "attempt_id" not in back
    assert current_log_context() == {}


def test_text_lines_append_the_context_for_people(text_log: Captured) -> None:
    with log_context(cluster="local", execution_id="ex_1", attempt_id="at_2"):
        text_log.logger.info("attempt %s: delivered", "at_2")
    text_log.logger.info("plain")

    first, second = text_log.text.splitlines()
    assert first.endswith(
        "INFO    fleetflow.test.text: attempt at_2: delivered "
        "[execution_id=ex_1 attempt_id=at_2 cluster=local]"
    )
    assert second.endswith("INFO    fleetflow.test.text: plain")


def test_json_exceptions_are_one_field(json_log: Captured) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        json_log.logger.exception("it failed")
    (record,) = json_log.records()
    assert record["message"] == "it failed"
    assert record["exception"].startswith("Traceback (most recent call last)")
    assert record["exception"].endswith("ValueError: boom")


async def test_the_context_follows_tasks_and_threads_but_not_into_siblings(
    json_log: Captured,
) -> None:
    async def log_in_task(name: str) -> None:
        with log_context(attempt_id=name):
            await asyncio.sleep(0)  # interleave the two tasks
            json_log.logger.info("task %s", name)
            await asyncio.to_thread(json_log.logger.info, "thread %s", name)

    with log_context(execution_id="ex_9"):
        await asyncio.gather(log_in_task("a"), log_in_task("b"))

    seen = {(r["message"], r["attempt_id"], r["execution_id"]) for r in json_log.records()}
    assert seen == {
        ("task a", "a", "ex_9"),
        ("thread a", "a", "ex_9"),
        ("task b", "b", "ex_9"),
        ("thread b", "b", "ex_9"),
    }


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f"authorization: Bearer {TOKEN}", "authorization: Bearer [REDACTED]"),
        ("Authorization: bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "Authorization: bearer [REDACTED]"),
        (f"token={TOKEN}, again {TOKEN}.", "token=ffa_[REDACTED], again ffa_[REDACTED]."),
        ("report_secret: 'ffl_q-8Zx_Yt3'", "report_secret: 'ffl_[REDACTED]'"),
        ("missing bearer token", "missing bearer token"),
        ("invalid agent token", "invalid agent token"),
    ],
)
def test_redact_secrets(text: str, redacted: str) -> None:
    assert redact_secrets(text) == redacted


@pytest.mark.parametrize("log_format", list(LogFormat))
def test_secrets_never_reach_the_output(log_format: LogFormat) -> None:
    for captured in _capture(log_format):
        captured.logger.info("metadata %s", (("authorization", f"Bearer {TOKEN}"),))
        captured.logger.warning(f"token {TOKEN} refused")
        try:
            raise PermissionError(f"rejected {TOKEN}")
        except PermissionError:
            captured.logger.exception("call failed")
        captured.logger.info("with stack", stack_info=True, extra={"note": TOKEN})

        assert TOKEN not in captured.text
        assert TOKEN.removeprefix("ffa_") not in captured.text
        assert captured.text.count("[REDACTED]") >= 3
        assert "PermissionError: rejected ffa_[REDACTED]" in captured.text


def test_log_format_from_the_environment() -> None:
    assert log_format_from_env({}) is LogFormat.TEXT
    assert log_format_from_env({"FLEETFLOW_LOG_FORMAT": "JSON"}) is LogFormat.JSON
    assert log_format_from_env({"FLEETFLOW_LOG_FORMAT": "text"}) is LogFormat.TEXT
    with pytest.raises(LogConfigError, match="FLEETFLOW_LOG_FORMAT='xml' is not a log format"):
        log_format_from_env({"FLEETFLOW_LOG_FORMAT": "xml"})


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    # Others' handlers (pytest's), not one an earlier configure_logging in this process left.
    foreign = [h for h in before_handlers if not getattr(h, "_fleetflow", False)]
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("DEBUG", LogFormat.TEXT, first)
        configure_logging("INFO", LogFormat.JSON, second)
        logging.getLogger("fleetflow.test.root").info("hello")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "hello"
        assert root.level == logging.INFO
        assert [h for h in root.handlers if h not in foreign] == [root.handlers[-1]]
        assert all(h in root.handlers for h in foreign)
    finally:
        for handler in [h for h in root.handlers if h not in before_handlers]:
            root.removeHandler(handler)
        for handler in before_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(before_level)


def test_a_malformed_log_call_does_not_raise_at_the_caller(
    json_log: Captured, capsys: pytest.CaptureFixture[str]
) -> None:
    json_log.logger.propagate = False  # pytest's own capture handler raises on logging errors
    try:
        json_log.logger.info("two %s %s", "but one")  # reported by logging, as without a filter
    finally:
        json_log.logger.propagate = True
    assert "--- Logging error ---" in capsys.readouterr().err
