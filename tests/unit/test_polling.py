"""The one wait loop of the tests (tests/polling.py): what it returns, and how it fails."""

from __future__ import annotations

import itertools

import pytest

from tests.polling import wait_until, wait_until_async


def test_returns_the_first_value_that_holds() -> None:
    counter = itertools.count()
    assert wait_until(lambda: next(counter), timeout=5, interval=0, until=lambda n: n >= 3) == 3


def test_fails_naming_what_was_awaited_and_the_last_value_seen() -> None:
    with pytest.raises(AssertionError) as failure:
        wait_until(
            lambda: ["at-1"],
            timeout=0.05,
            interval=0.01,
            message="X",
            until=lambda left: not left,
            details=lambda: "logs",
        )
    assert str(failure.value) == (
        "timed out after 0.05s waiting for X; last value seen: ['at-1']\nlogs"
    )


async def test_the_async_form_fails_the_same_way() -> None:
    assert await wait_until_async(lambda: "done", timeout=1) == "done"
    with pytest.raises(AssertionError, match=r"waiting for Y; last value seen: 0$"):
        await wait_until_async(lambda: 0, timeout=0.05, message="Y")
