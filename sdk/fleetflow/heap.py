"""Keep a long-running process's start-up heap out of the garbage collector's full passes.

What a server imports and builds as it starts (modules, classes, ORM mappers, the app) lives as
long as the process, yet every full collection walks it again: 90-160 ms pauses in the control
plane, landing on whichever request, lease or placement pass runs then (the slowest of 20
dispatches in `bench/dispatch.py`). Frozen, it is never traversed; what is made later is
collected as before, and frozen objects are still freed when their last reference goes.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now to the permanent generation. Call it in
    the process's own entry point once it has started, never in a library or a test harness
    that starts servers again and again (cycles made before it would never be collected)."""
    gc.collect()
    gc.freeze()
