"""The one way a test waits for something: poll a condition until it holds or a deadline passes.

Tests never sleep as synchronisation (STYLE.md): they wait on a condition with a deadline. This
module is that loop, once, in a plain and an asyncio form, so every wait fails the same way: an
AssertionError naming what was awaited, the timeout, the last value seen and, when given, what
explains it (a stack's logs).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def wait_until(
    observe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "the condition",
    until: Callable[[T], Any] = bool,
    details: Callable[[], str] | None = None,
) -> T:
    """Call `observe` every `interval` seconds until `until` holds for what it returns.

    Args:
        observe: reads the state awaited; an exception it raises ends the wait (a server
            that exited fails at once instead of at the deadline).
        timeout: seconds before the wait fails.
        interval: seconds between two observations.
        message: what is awaited, for the failure message.
        until: when the observed value is the one awaited (default: when it is truthy).
        details: what to add to the failure message (read only on failure).

    Returns:
        The first observed value for which `until` holds.

    Raises:
        AssertionError: `until` did not hold within `timeout` seconds.
    """
    wait = _Wait(observe, timeout, message, until, details)
    while not wait.over():
        time.sleep(interval)
    return wait.value


async def wait_until_async(
    observe: Callable[[], T | Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.02,
    message: str = "the condition",
) -> T:
    """`wait_until` for a test on the event loop (it sleeps with `asyncio.sleep`), until what
    `observe` returns is truthy; `observe` may be a coroutine function (one that asks a
    server)."""
    wait = _Wait(observe, timeout, message, bool, None)
    while True:
        value = observe()
        if inspect.isawaitable(value):
            value = await value
        if wait.judge(value):
            return wait.value
        await asyncio.sleep(interval)


class _Wait(Generic[T]):
    """One wait's deadline and last observation."""

    def __init__(
        self,
        observe: Callable[[], T],
        timeout: float,
        message: str,
        until: Callable[[T], Any],
        details: Callable[[], str] | None,
    ) -> None:
        self._observe, self._until, self._details = observe, until, details
        self._timeout, self._message = timeout, message
        self._deadline = time.monotonic() + timeout

    def over(self) -> bool:
        """Observe once: True when the value is the one awaited; fails past the deadline."""
        return self.judge(self._observe())

    def judge(self, value: T) -> bool:
        """`over` for a value observed by the caller."""
        self.value = value
        if self._until(self.value):
            return True
        if time.monotonic() >= self._deadline:
            text = (
                f"timed out after {self._timeout:g}s waiting for {self._message}; "
                f"last value seen: {self.value!r}"
            )
            raise AssertionError(text if self._details is None else f"{text}\n{self._details()}")
        return False
