"""A `map_task` over 10,000 elements through the full path, on `fleetflow dev up`.

Issue 15's scale figure: one execution whose map node has `--elements` (10,000) no-op elements
(`add_one`, asking for 0.1 CPU), run by the dev stack as a user starts it (the control plane with
its worker, one local-process agent, SQLite). While it runs, every `--sample-seconds` (5) the
script records how many elements have succeeded and the resident memory of each process of the
stack (the control plane, the agent, its task fork server, Temporal). At the end it reads the
Temporal histories of the execution's workflow and of every chunk workflow
(`<execution>/<node>/chunk-<k>`) and reports:

- wall time and the fan-out rate (elements/s), overall and per tenth of the run, to show the
  rate is held from the first elements to the last;
- the control plane's memory: first sample, peak and last, to show it stays flat;
- the events of the largest history against Temporal's 51,200-event limit.

    python bench/large_map.py [--elements 10000] [--sample-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dispatch import RESULTS, DevStack, start_dev_stack, wait_for_agent

HISTORY_LIMIT = 51_200


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_mib(pid: int) -> tuple[str, float] | None:
    """(what the process is, its resident memory in MiB), or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    rss = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")]
    if not rss:  # a zombie: exited, not yet reaped
        return None
    if "dev up" in command:
        kind = "control plane"
    elif "agent" in command:
        kind = "agent"
    elif "temporal" in command:
        kind = "temporal"
    else:
        kind = "tasks"
    return kind, rss[0] / 1024


def memory(stack: DevStack) -> dict[str, float]:
    """MiB per kind of process of the stack; task processes summed under their name."""
    totals: dict[str, float] = {}
    for pid in [stack.process.pid, *_children(stack.process.pid)]:
        found = _rss_mib(pid)
        if found is not None:
            kind, mib = found
            totals[kind] = round(totals.get(kind, 0.0) + mib, 1)
    return totals


def progress(database: Path, execution_id: str) -> tuple[str, int]:
    """The execution's state and how many elements have succeeded, from the database: the API
    would send all 10,000 attempts at every sample, which the control plane would pay for."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        (status,) = db.execute(
            "SELECT status FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        (count,) = db.execute(
            "SELECT COUNT(*) FROM task_attempts WHERE execution_id = ? AND map_index >= 0 "
            "AND status = 'SUCCEEDED'",
            (execution_id,),
        ).fetchone()
    return str(status), int(count)


async def history_sizes(address: str, execution_id: str, node_id: str) -> dict[str, int]:
    """Events in the execution's workflow history and in each of its chunks'."""
    from temporalio.client import Client
    from temporalio.service import RPCError

    client = await Client.connect(address)
    history = await client.get_workflow_handle(execution_id).fetch_history()
    sizes = {execution_id: len(history.events)}
    chunk = 0
    while True:
        workflow_id = f"{execution_id}/{node_id}/chunk-{chunk}"
        try:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        except RPCError:  # not found: that was the last chunk
            return sizes
        sizes[workflow_id] = len(history.events)
        chunk += 1


def run(stack: DevStack, args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent / "dispatch_workloads"))
    import fleetflow_noop

    from fleetflow import Client

    os.environ["FLEETFLOW_CONFIG"] = str(stack.config)
    database = stack.home / "fleetflow.db"
    with Client(url=stack.api_url, timeout=120) as client:
        wait_for_agent(client, stack)
        registered = client.register(fleetflow_noop.wide_map)
        submitted = time.time()
        created = client.launch(
            fleetflow_noop.wide_map,
            {"n": args.elements},
            version=registered.version,
            name=registered.name,
        )
        samples: list[dict[str, Any]] = []
        while True:
            status, done = progress(database, str(created.id))
            samples.append(
                {
                    "t": round(time.time() - submitted, 1),
                    "succeeded": done,
                    "rss_mib": memory(stack),
                }
            )
            print(
                f"{samples[-1]['t']:7.1f} s  {done:6d} / {args.elements}  {samples[-1]['rss_mib']}"
            )
            if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            if time.time() - submitted > args.run_timeout:
                raise TimeoutError(f"the map did not finish in {args.run_timeout} s")
            time.sleep(args.sample_seconds)
        final = client.executions.get(created.id)
        if final.status != "SUCCEEDED":
            raise RuntimeError(f"execution {created.id} ended {final.status}: {final.error}")
        outputs = client.wait_for_execution(created.id, timeout=60).outputs
        assert outputs == {"o0": [x + 1 for x in range(args.elements)]}, "wrong outputs"
        assert final.finished_at is not None
        wall = final.finished_at.timestamp() - submitted
        node_id = next(a.node_id for a in final.attempts if a.map_index is not None)
    sizes = asyncio.run(history_sizes(stack.temporal_address, str(created.id), node_id))
    return {"wall_s": wall, "samples": samples, "histories": sizes, "execution": str(created.id)}


def summarise(raw: dict[str, Any], elements: int) -> dict[str, Any]:
    samples = raw["samples"]
    # The rate per tenth of the elements: when the first 10 % had succeeded, the next 10 % …
    times = [0.0]
    for tenth in range(1, 11):
        target = elements * tenth // 10
        times.append(next((s["t"] for s in samples if s["succeeded"] >= target), raw["wall_s"]))
    rates = [
        round((elements / 10) / (b - a), 1) if b > a else None for a, b in itertools.pairwise(times)
    ]
    cp = [s["rss_mib"].get("control plane", 0.0) for s in samples]
    agent = [s["rss_mib"].get("agent", 0.0) for s in samples]
    histories = raw["histories"]
    return {
        "elements": elements,
        "wall_s": round(raw["wall_s"], 1),
        "elements_per_s": round(elements / raw["wall_s"], 1),
        "elements_per_s_by_tenth": rates,
        "control_plane_rss_mib": {"first": cp[0], "peak": max(cp), "last": cp[-1]},
        "agent_rss_mib": {"first": agent[0], "peak": max(agent), "last": agent[-1]},
        "chunk_workflows": len(histories) - 1,
        "largest_history_events": max(histories.values()),
        "execution_history_events": histories[raw["execution"]],
        "history_limit": HISTORY_LIMIT,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=10_000)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--run-timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/…)")
    args = parser.parse_args(argv)
    if args.elements < 1 or args.sample_seconds <= 0:
        parser.error("--elements must be >= 1 and --sample-seconds > 0")
    args.heartbeat_seconds = None  # the product's, for start_dev_stack
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="fleetflow-bench-large-map-") as tmp:
        stack = start_dev_stack(Path(tmp) / "fleetflow", args)
        try:
            raw = run(stack, args)
        except Exception:
            print(stack.logs(), file=sys.stderr)
            raise
        finally:
            stack.stop()
    summary = summarise(raw, args.elements)
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = args.json or RESULTS / f"large-map-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out.write_text(json.dumps({"summary": summary, "raw": raw, "meta": meta}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
