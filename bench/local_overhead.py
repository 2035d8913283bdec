"""Local execution overhead per task: Fleetflow's in-process runner next to flytekit's.

Both frameworks run the same workflow, `TASKS` calls of a trivial `add_one(x: int) -> int`,
either chained (each call consumes the previous output) or fanned out (every call takes the
workflow input), in the same run of this script. The overhead per task is

    (median wall time of one workflow run - the same calls of the plain function) / TASKS

so it is what the framework adds around a task: binding resolution, literal conversion on the
way in and out, bookkeeping. The ratio is Fleetflow / flytekit (below 1: Fleetflow is lighter).

flytekit is installed from PyPI into its own virtual environment, `bench/.venv-flytekit`, never
into the project's (its dependencies may conflict); its half runs there as a subprocess that
prints JSON. The Fleetflow half runs as a subprocess of this interpreter, the project's venv, so
both halves start equally cold. The two alternate for `--rounds` rounds to spread machine noise.
Nothing here touches the network except that one `pip install`.

    python bench/local_overhead.py [--tasks 100] [--repeat 10] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peer_venv import ensure_peer_venv

HERE = Path(__file__).resolve().parent
FLYTEKIT_VENV = HERE / ".venv-flytekit"
SHAPES = ("chain", "fan")
WORKER_TIMEOUT_S = 600


# --------------------------------------------------------------------------------- workers
# Each worker runs in a fresh interpreter, builds the workflows, times them and prints one JSON
# object on its last stdout line.


def add_one(x: int) -> int:
    """The task both frameworks wrap (flytekit wants task functions at module level)."""
    return x + 1


def _time_plain(tasks: int) -> float:
    """Seconds for `tasks` calls of the bare function: the work, without any framework."""
    best = float("inf")
    for _ in range(20):
        x = 0
        start = time.perf_counter()
        for _ in range(tasks):
            x = add_one(x)
        best = min(best, time.perf_counter() - start)
    return best


def _measure(
    build: Callable[[str], Any], run: Callable[[Any], int], *, tasks: int, repeat: int, warmup: int
) -> dict[str, Any]:
    """Time `build(shape)` (the workflow, compiled) and `run(workflow)` for each shape."""
    shapes: dict[str, Any] = {}
    for shape in SHAPES:
        start = time.perf_counter()
        wf = build(shape)
        compile_s = time.perf_counter() - start
        expected = tasks if shape == "chain" else 1
        for _ in range(warmup):
            assert run(wf) == expected
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            result = run(wf)
            samples.append(time.perf_counter() - start)
            assert result == expected, (shape, result)
        shapes[shape] = {"compile_s": compile_s, "samples_s": samples}
    return {"tasks": tasks, "plain_s": _time_plain(tasks), "shapes": shapes}


def fleetflow_worker(tasks: int, repeat: int, warmup: int) -> dict[str, Any]:
    import fleetflow
    from fleetflow import task, workflow

    add_one_task = task(add_one)

    def build(shape: str) -> Any:
        if shape == "chain":

            @workflow
            def chain(x: int = 0) -> int:
                for _ in range(tasks):
                    x = add_one_task(x=x)
                return x

            return chain

        @workflow
        def fan(x: int = 0) -> int:
            last = x
            for _ in range(tasks):
                last = add_one_task(x=x)
            return last

        return fan

    measured = _measure(build, lambda wf: wf(x=0), tasks=tasks, repeat=repeat, warmup=warmup)
    version = getattr(fleetflow, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("fleetflow")
    return {"framework": "fleetflow", "version": version, **measured}


def flytekit_worker(tasks: int, repeat: int, warmup: int) -> dict[str, Any]:
    import flytekit
    from flytekit import task, workflow

    add_one_task = task(add_one)

    def build(shape: str) -> Any:
        if shape == "chain":

            @workflow
            def chain(x: int = 0) -> int:
                for _ in range(tasks):
                    x = add_one_task(x=x)
                return x

            chain.compile()  # flytekit compiles on first use; Fleetflow at decoration
            return chain

        @workflow
        def fan(x: int = 0) -> int:
            last = x
            for _ in range(tasks):
                last = add_one_task(x=x)
            return last

        fan.compile()
        return fan

    measured = _measure(build, lambda wf: wf(x=0), tasks=tasks, repeat=repeat, warmup=warmup)
    return {"framework": "flytekit", "version": flytekit.__version__, **measured}


WORKERS = {"fleetflow": fleetflow_worker, "flytekit": flytekit_worker}


# ---------------------------------------------------------------------------------- driver


def run_worker(python: Path, framework: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        str(python),
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--tasks",
        str(args.tasks),
        "--repeat",
        str(args.repeat),
        "--warmup",
        str(args.warmup),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env, cwd=HERE
    )
    if done.returncode != 0:
        raise SystemExit(f"{framework} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"{framework} worker printed nothing:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One framework's rounds -> medians per shape (samples of all rounds together)."""
    first = rounds[0]
    tasks = first["tasks"]
    plain_s = statistics.median(r["plain_s"] for r in rounds)
    shapes = {}
    for shape in SHAPES:
        samples = [s for r in rounds for s in r["shapes"][shape]["samples_s"]]
        median_s = statistics.median(samples)
        shapes[shape] = {
            "samples": len(samples),
            "median_run_s": median_s,
            "min_run_s": min(samples),
            "max_run_s": max(samples),
            "compile_s": statistics.median(r["shapes"][shape]["compile_s"] for r in rounds),
            "overhead_per_task_s": (median_s - plain_s) / tasks,
        }
    return {"version": first["version"], "tasks": tasks, "plain_s": plain_s, "shapes": shapes}


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    ff, fk = results["fleetflow"], results["flytekit"]
    summary: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "tasks": args.tasks,
        "repeat": args.repeat,
        "rounds": args.rounds,
        "fleetflow": ff,
        "flytekit": fk,
        "ratio": {},
    }
    print(
        f"{args.tasks}-task workflows, {args.rounds} rounds x {args.repeat} runs each "
        f"(after {args.warmup} warm-up runs); Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; fleetflow {ff['version']}, flytekit {fk['version']}"
    )
    header = f"{'shape':<6} {'framework':<10} {'median run':>12} {'per task':>10} {'compile':>10}"
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        for name, result in (("fleetflow", ff), ("flytekit", fk)):
            s = result["shapes"][shape]
            print(
                f"{shape:<6} {name:<10} {s['median_run_s'] * 1e3:>9.2f} ms "
                f"{_us(s['overhead_per_task_s']):>10} {s['compile_s'] * 1e3:>7.1f} ms"
            )
        ratio = (
            ff["shapes"][shape]["overhead_per_task_s"] / fk["shapes"][shape]["overhead_per_task_s"]
        )
        summary["ratio"][shape] = ratio
        print(f"{shape:<6} ratio fleetflow / flytekit per-task overhead: {ratio:.3f}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="task calls per workflow")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per round first")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per framework")
    parser.add_argument("--flytekit", default="flytekit", help="pip requirement for flytekit")
    parser.add_argument("--venv", type=Path, default=FLYTEKIT_VENV, help="flytekit's venv")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.tasks, args.repeat, args.rounds) < 1 or args.warmup < 0:
        parser.error("--tasks, --repeat and --rounds must be >= 1, --warmup >= 0")

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.tasks, args.repeat, args.warmup)))
        return

    pythons = {
        "fleetflow": Path(sys.executable),
        "flytekit": ensure_peer_venv(args.venv, args.flytekit, "flytekit"),
    }
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in pythons}
    for number in range(args.rounds):
        order = list(pythons) if number % 2 == 0 else list(reversed(pythons))
        for name in order:
            rounds[name].append(run_worker(pythons[name], name, args))
    summary = report({name: _merge(r) for name, r in rounds.items()}, args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
