"""How the agent's loops wait: exponential backoff between tries, and sleeps cut short by
shutdown.

The session (reconnecting) and the reporter (resending a report) back off the same way; the
session and the log shipper sleep without holding up a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling to a cap."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        multiplier: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._rng = rng
        self._failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._maximum, self._initial * self._multiplier**self._failures)
        self._failures += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self._failures = 0


async def sleep_unless_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `event` is set meanwhile (e.g. the agent stopping)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
