"""How long the `fleetflow` command takes to answer `--help`, next to `import typer`.

A new user's first commands are `fleetflow --help` and `fleetflow run FILE WORKFLOW --help`;
both should answer about as fast as a Python program that merely imports its CLI library.
The peer is `python -c "import typer"`, run with the same interpreter in the same run of this
script: the least any typer CLI pays. The goal is each command within 1.5x of it.

Each command runs `--runs` times (default 15) as a fresh process, after `--warmup` untimed runs
(default 2, at least 1) that fill the OS's file cache and a bytecode cache of this run's own
(PYTHONPYCACHEPREFIX, a temporary directory, so no `__pycache__` lands in the tree); the
commands take turns, one run each per round, so a burst of machine load hits all of them
alike. The figure is the median wall time of the runs,
from process start to exit; the ratio is that median over the peer's.

`python -c "pass"` (the interpreter alone) and `python -c "import fleetflow"` are measured too,
for context: the first is what no Python CLI can go below, the second what the SDK's own
`import` costs. `--explain` then runs each judged command once more under `-X importtime` and
prints where its imports go: the packages with the most import time, and how many modules.

    python bench/cli_startup.py [--runs 15] [--warmup 2] [--explain] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 1.5
PEER = "import typer"


def _fleetflow() -> list[str]:
    """The console script next to this interpreter, as a user runs it; else its entry point."""
    script = Path(sys.executable).with_name("fleetflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from fleetflow.cli.main import main; main()"]


def commands() -> dict[str, list[str]]:
    """Label -> argv, the peer first."""
    fleetflow = _fleetflow()
    return {
        PEER: [sys.executable, "-c", "import typer"],
        "python (interpreter alone)": [sys.executable, "-c", "pass"],
        "import fleetflow": [sys.executable, "-c", "import fleetflow"],
        "fleetflow --help": [*fleetflow, "--help"],
        "fleetflow run examples/hello.py hello_pipeline --help": [
            *fleetflow,
            "run",
            "examples/hello.py",
            "hello_pipeline",
            "--help",
        ],
    }


# The commands the goal is about; the others are context.
JUDGED = ("fleetflow --help", "fleetflow run examples/hello.py hello_pipeline --help")


def run_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return elapsed


def environment(pycache: str) -> dict[str, str]:
    """The commands' environment: bytecode cached as on a user's machine, even where
    PYTHONDONTWRITEBYTECODE is set (as in some containers), in `pycache` (outside the source
    tree) for all the commands alike; the warm-up runs fill it."""
    env = {**os.environ, "COLUMNS": "100", "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def measure(runs: int, warmup: int, env: dict[str, str]) -> dict[str, list[float]]:
    argvs = commands()
    for _ in range(max(warmup, 1)):
        for argv in argvs.values():
            run_once(argv, env)
    samples: dict[str, list[float]] = {label: [] for label in argvs}
    for _ in range(runs):
        for label, argv in argvs.items():
            samples[label].append(run_once(argv, env))
    return samples


def explain(label: str, env: dict[str, str], top: int = 8) -> str:
    """The packages `label` spends the most import time in (self time, summed per top-level
    package), from one run under `-X importtime`."""
    argv = commands()[label]
    if Path(argv[0]).name == "fleetflow":  # the console script is a Python file
        argv = [sys.executable, *argv]
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    per_package: dict[str, int] = {}
    modules = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        if not self_us.strip().isdigit():
            continue  # the header line
        modules += 1
        package = name.strip().split(".", 1)[0]
        per_package[package] = per_package.get(package, 0) + int(self_us)
    ranked = sorted(per_package.items(), key=lambda item: -item[1])[:top]
    shares = ", ".join(f"{package} {us / 1000:.0f}ms" for package, us in ranked)
    return f"{label}: {modules} modules; most import time in {shares}"


def report(samples: dict[str, list[float]]) -> dict[str, Any]:
    peer = statistics.median(samples[PEER])
    rows = []
    for label, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "command": label,
                "median_ms": round(median * 1000, 1),
                "min_ms": round(min(values) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1),
                "ratio_to_peer": round(median / peer, 2),
                "judged": label in JUDGED,
            }
        )
    met = all(row["ratio_to_peer"] <= GOAL_RATIO for row in rows if row["judged"])
    return {
        "peer": PEER,
        "goal_ratio": GOAL_RATIO,
        "goal_met": met,
        "runs": len(samples[PEER]),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()} {platform.system()}",
        "rows": rows,
    }


def print_report(result: dict[str, Any]) -> None:
    width = max(len(row["command"]) for row in result["rows"])
    print(
        f"{result['runs']} runs each, Python {result['python']}, {result['machine']}\n"
        f"{'command':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}  {'x peer':>7}"
    )
    for row in result["rows"]:
        mark = "  <- judged" if row["judged"] else ""
        print(
            f"{row['command']:<{width}}  {row['median_ms']:>7.1f}ms  {row['min_ms']:>7.1f}ms  "
            f"{row['max_ms']:>7.1f}ms  {row['ratio_to_peer']:>6.2f}x{mark}"
        )
    verdict = "met" if result["goal_met"] else "NOT met"
    print(
        f"goal: each judged command within {result['goal_ratio']}x of "
        f'`python -c "{result["peer"]}"`: {verdict}'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per command first")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--explain", action="store_true", help="then show where each judged command's imports go"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetflow-bench-pycache-") as pycache:
        env = environment(pycache)
        result = report(measure(args.runs, args.warmup, env))
        print_report(result)
        if args.explain:
            for label in JUDGED:
                print(explain(label, env))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
