"""`bench/stack_cpu.py`, behind `bench/dispatch.py`'s CPU line: the dev stack's CPU per kind
of process, read from `/proc`, counts every process below the stack's root by its command
line, and a process's reaped children with it (the fork server reaps the task processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.tiers import load_script

stack_cpu = load_script("bench/stack_cpu.py")

# /proc counts whole clock ticks (10 ms): a process that burnt 0.1 s may show 0.09.
TICKS = 0.02

# Burns CPU time (not wall time) until the process has used `seconds` of it.
BURN = "import time\ndef burn(seconds):\n    while time.process_time() < seconds:\n        pass\n"

ROOT = BURN + textwrap.dedent(
    """
    import os, subprocess, sys
    pid = os.fork()
    if pid == 0:  # reaped below: its CPU counts under this process
        burn(0.3)
        os._exit(0)
    os.waitpid(pid, 0)
    live = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], "fleetflow.forkserver"], stdin=subprocess.PIPE
    )
    burn(0.2)
    print("ready", live.pid, flush=True)
    sys.stdin.read()
    live.stdin.close()
    live.wait()
    """
)
LIVE_CHILD = BURN + "import sys\nburn(0.1)\nsys.stdin.read()\n"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc: Linux only")
def test_cpu_is_counted_per_kind_with_reaped_children() -> None:
    root = subprocess.Popen(
        [sys.executable, "-c", ROOT, LIVE_CHILD, "data_plane_agent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert root.stdout is not None
        word, _live_pid = root.stdout.readline().split()
        assert word == "ready"
        # The live child has burnt its share once its own CPU time reached it: wait for that
        # through /proc rather than a clock.
        totals: dict[str, float] = {}
        for _ in range(10_000):
            totals = stack_cpu.stack_cpu_seconds(root.pid)
            if totals.get("task processes", 0.0) >= 0.1 - TICKS:
                break
        assert totals["task processes"] >= 0.1 - TICKS
        assert totals["agent"] >= 0.5 - 2 * TICKS  # its own 0.2 and its reaped child's 0.3
        assert set(totals) == {"agent", "task processes"}  # nothing outside the tree
    finally:
        assert root.stdin is not None
        root.stdin.close()
        root.wait(timeout=30)
