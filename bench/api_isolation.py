"""Tenant isolation under load: one tenant's read latency while another bursts far over its rate.

The hardening test (`tests/hardening/test_api_limits.py`) asserts only the mechanism: the
bursting tenant gets 429s, the other none. How much the other tenant's reads slow down depends
on the machine (the two share this process's CPU and the GIL), so it is measured here instead:
tenant beta's read p50/p99 idle, then while tenant alpha sends from `--threads` threads with a
rate limit of `--rate`/s, in one run, reported as the ratio loaded / idle (the peer is the same
system idle).

    python bench/api_isolation.py                 # make bench-api
    python bench/api_isolation.py --reads 200 --threads 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the hardening tests' in-process API world

from control_plane.db.migrate import upgrade_database  # noqa: E402
from control_plane.db.session import make_engine, make_session_factory  # noqa: E402
from tests.hardening.world import build_world, unlimited  # noqa: E402


def _reads(client: object, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        answer = client.get("/api/v1/workflows")  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise SystemExit(f"beta's read answered {answer.status_code}: {answer.text}")
    return samples


def _ms(samples: list[float], percentile: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[percentile - 1] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=100, help="beta's reads per phase")
    parser.add_argument("--threads", type=int, default=4, help="alpha's sending threads")
    parser.add_argument("--rate", type=float, default=20.0, help="per-tenant requests/s")
    args = parser.parse_args()

    from examples.hello import hello_pipeline

    with tempfile.TemporaryDirectory(prefix="fleetflow-bench-api-") as tmp:
        url = f"sqlite:///{tmp}/fleetflow.db"
        upgrade_database(url)
        engine = make_engine(url)
        settings = unlimited().model_copy(
            update={"rate_limit_per_second": args.rate, "rate_limit_burst": args.reads * 3}
        )
        world = build_world(make_session_factory(engine), Path(tmp), hello_pipeline.spec, settings)
        with world.client(world.beta_dev) as beta:
            beta.get("/api/v1/workflows")
            idle = _reads(beta, args.reads)
            stop = threading.Event()
            statuses: list[int] = []

            def burst() -> None:
                with world.client(world.alpha_dev) as alpha:
                    while not stop.is_set():
                        statuses.append(alpha.get("/api/v1/workflows").status_code)

            threads = [threading.Thread(target=burst) for _ in range(args.threads)]
            for thread in threads:
                thread.start()
            try:
                while statuses.count(429) < 50:
                    time.sleep(0.01)
                loaded = _reads(beta, args.reads)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
        engine.dispose()

    idle_p50, loaded_p50 = _ms(idle, 50), _ms(loaded, 50)
    print(f"beta reads, idle:             p50 {idle_p50:7.1f} ms  p99 {_ms(idle, 99):7.1f} ms")
    print(f"beta reads, alpha bursting:   p50 {loaded_p50:7.1f} ms  p99 {_ms(loaded, 99):7.1f} ms")
    print(f"alpha sent {len(statuses)} requests, {statuses.count(429)} answered 429")
    print(f"ratio loaded / idle (p50): {loaded_p50 / idle_p50:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
