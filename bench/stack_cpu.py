"""CPU used by a tree of processes, per kind of process: `bench/dispatch.py`'s line of where a
fan-out's CPU goes in the dev stack (control plane, agent, task processes, Temporal)."""

from __future__ import annotations

import os

# What each process of the dev stack is, by its command line (the first match names it).
STACK_PROCESSES = (
    ("agent", "data_plane_agent"),
    ("task processes", "fleetflow.forkserver"),
    ("control plane", " dev up "),  # before Temporal: its arguments name --temporal-port
    ("Temporal", "temporal"),
)


def stack_cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the dev stack, per kind of process: every
    process under `root_pid`, each with the reaped children it waited for (the fork server's
    task processes count under it). Linux `/proc` only; empty elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, str, float]] = {}  # pid: (parent, command line, seconds)
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        seconds = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
        table[int(name)] = (int(fields[1]), command, seconds)
    stack, grew = {root_pid}, True
    while grew:
        below = {pid for pid, (parent, _, _) in table.items() if parent in stack} - stack
        stack |= below
        grew = bool(below)
    totals: dict[str, float] = {}
    for pid in stack & table.keys():
        _, command, seconds = table[pid]
        kind = next((k for k, needle in STACK_PROCESSES if needle in command), "other")
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals
