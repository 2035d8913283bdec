"""`fleetflow.heap.freeze_startup_heap`: what is alive at the call is out of the collector's
passes (a full collection no longer walks it), and what is made later is collected as before."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from fleetflow.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process goes on: its heap back in the collector's reach


def test_the_startup_heap_is_frozen_and_later_garbage_still_collected(unfrozen: None) -> None:
    before = Node()
    freeze_startup_heap()
    assert gc.get_freeze_count() > 0
    after = Node()
    before_ref, after_ref = weakref.ref(before), weakref.ref(after)
    del before, after
    gc.collect()
    assert after_ref() is None  # made after the freeze: collected
    assert before_ref() is not None  # frozen: never walked, so its cycle stays
