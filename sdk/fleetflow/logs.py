"""Logging: the control plane's and the agent's process logs, and the SDK's lines in a task's.

Process logs (control plane, agent): one setup, two formats, no secrets.

`configure_logging` installs one stderr handler on the root logger. Its format is `text` (one
line for humans, the default) or `json` (one object per line, for log pipelines), chosen by
`FLEETFLOW_LOG_FORMAT`. Both carry the *context* of the work at hand, set with `log_context`:

    with log_context(execution_id=attempt.execution_id, attempt_id=attempt.id):
        log.info("leased")   # ... leased [execution_id=ex_1 attempt_id=at_2]

The context lives in a `contextvars.ContextVar`, so it follows asyncio tasks created inside the
block and `asyncio.to_thread` calls, and never leaks between concurrent requests.

Every record passes `RedactSecrets` first: bearer credentials (`Bearer …`), agent tokens
(`ffa_…`) and lease report secrets (`ffl_…`) are replaced in the message, its arguments and any
traceback, whoever logged them.

Task logs (the task runtime on a cluster, `fleetflow run` locally): what the task prints is its
author's and passes through untouched; the SDK's own lines (the `fleetflow` logger and below)
go to stderr, each prefixed `[fleetflow]`, through `sdk_lines_to`:

    [fleetflow] 2026-05-01 12:00:00,123 INFO running pipeline.train
    epoch 1 loss 0.52                        <- the task's print
    [fleetflow] 2026-05-01 12:00:03,456 INFO pipeline.train returned after 3.333s
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import IO, Any

from fleetflow.errors import FleetflowError

LOG_FORMAT_ENV = "FLEETFLOW_LOG_FORMAT"
CONTEXT_FIELDS = ("execution_id", "attempt_id", "node_id", "cluster")
"""The contextual fields, in the order the text format prints them."""

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "[REDACTED]"
SDK_LOG_PREFIX = "[fleetflow]"
"""What starts every line the SDK itself writes into a task's log or a local run's stderr."""
SDK_LOGGER = "fleetflow"

_context: ContextVar[Mapping[str, str]] = ContextVar(
    "fleetflow_log_context", default=MappingProxyType({})
)

# `Bearer <credential>` (the scheme in any case; a credential of 8 or more token68 characters,
# so prose such as "missing bearer token" stays readable), and agent tokens and lease report
# secrets anywhere.
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]{8,}")
_AGENT_SECRET = re.compile(r"\b(ffa|ffl)_[A-Za-z0-9_\-]+")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogConfigError(FleetflowError):
    """The logging settings are invalid."""


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` (e.g. `execution_id`, `attempt_id`, `node_id`, `cluster`) to every record
    logged inside the block, including by tasks and threads started from it. None values are
    left out; an inner block's fields win over an outer one's."""
    added = {key: str(value) for key, value in fields.items() if value is not None}
    token = _context.set({**_context.get(), **added})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, str]:
    """The fields `log_context` has set here (a copy)."""
    return dict(_context.get())


def redact_secrets(text: str) -> str:
    """`text` with bearer credentials, agent tokens and report secrets replaced by
    `[REDACTED]`."""
    text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    return _AGENT_SECRET.sub(lambda match: f"{match.group(1)}_{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Redacts secrets from a record's message and traceback before any formatter sees it."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler reports it as a logging error
            return True
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        return True


class AddLogContext(logging.Filter):
    """Copies the current `log_context` onto the record (`record.fleetflow_context`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "fleetflow_context"):
            record.fleetflow_context = dict(_context.get())
        return True


def _fields(record: logging.LogRecord) -> dict[str, str]:
    context: dict[str, str] = getattr(record, "fleetflow_context", {})
    ordered = {key: context[key] for key in CONTEXT_FIELDS if key in context}
    ordered.update({k: v for k, v in sorted(context.items()) if k not in ordered})
    return ordered


class TextFormatter(logging.Formatter):
    """`time level logger: message [execution_id=… attempt_id=…]`, for people."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API)
        line = super().formatMessage(record)
        fields = _fields(record)
        if fields:
            line += " [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, the
    context fields when set, and `exception` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def log_format_from_env(environ: Mapping[str, str] | None = None) -> LogFormat:
    """The format `FLEETFLOW_LOG_FORMAT` asks for (`text` when unset).

    Raises:
        LogConfigError: the variable holds something else than `text` or `json`.
    """
    value = (environ if environ is not None else os.environ).get(LOG_FORMAT_ENV, "").strip()
    if not value:
        return LogFormat.TEXT
    try:
        return LogFormat(value.lower())
    except ValueError:
        raise LogConfigError(
            f"{LOG_FORMAT_ENV}={value!r} is not a log format: use 'text' or 'json'"
        ) from None


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) that adds the context, redacts secrets and
    formats as asked."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(AddLogContext())
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else TextFormatter())
    return handler


def configure_logging(
    level: str = "INFO", log_format: LogFormat | None = None, stream: IO[str] | None = None
) -> None:
    """Send the process's logs to stderr (or `stream`) at `level`, formatted as `log_format`
    (default: `FLEETFLOW_LOG_FORMAT`, else text). Calling it again replaces the handler it
    installed before; handlers others installed are left alone.

    Raises:
        LogConfigError: `FLEETFLOW_LOG_FORMAT` is invalid.
    """
    chosen = log_format if log_format is not None else log_format_from_env()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_fleetflow", False)]:
        root.removeHandler(old)
    handler = make_handler(chosen, stream)
    handler._fleetflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Temporal's SDK is chatty at INFO about worker internals.
    logging.getLogger("temporalio").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------ task logs


class SdkLineFormatter(logging.Formatter):
    """`[fleetflow] <message>`, a warning or worse `[fleetflow] WARNING: <message>`; with
    `timestamps`, `[fleetflow] <time> <LEVEL> <message>` (task logs on a cluster, read later)."""

    def __init__(self, *, timestamps: bool) -> None:
        super().__init__(f"{SDK_LOG_PREFIX} %(asctime)s %(levelname)s %(message)s")
        self._timestamps = timestamps

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API)
        if self._timestamps:
            return super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            return f"{SDK_LOG_PREFIX} {record.levelname}: {record.getMessage()}"
        return f"{SDK_LOG_PREFIX} {record.getMessage()}"


@contextmanager
def sdk_lines_to(
    stream: IO[str], *, timestamps: bool = False, level: int = logging.INFO
) -> Iterator[None]:
    """Inside the block, write the SDK's log records at `level` and above (the `fleetflow`
    logger and its children) to `stream` as `[fleetflow] …` lines, and only there: the root
    logger's handlers, which the task's own logging may use, do not see them as well."""
    sdk = logging.getLogger(SDK_LOGGER)
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(SdkLineFormatter(timestamps=timestamps))
    saved_level, saved_propagate = sdk.level, sdk.propagate
    sdk.addHandler(handler)
    sdk.setLevel(level)
    sdk.propagate = False
    try:
        yield
    finally:
        sdk.removeHandler(handler)
        sdk.setLevel(saved_level)
        sdk.propagate = saved_propagate
