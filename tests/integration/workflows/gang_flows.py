"""Multi-node tasks (gangs) for the gang tests: workers that rendezvous over plain TCP with
the environment the agent gives them, and all-reduce (sum) their ranks."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from fleetflow import Resources, current_context, task, workflow

_CONNECT_SECONDS = 60.0


def _all_reduce_sum(rank: int, world: int, value: int) -> int:
    """Rank 0 listens on MASTER_ADDR:MASTER_PORT, the others connect and send their value; rank
    0 sends the sum back to every one."""
    address = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    if rank == 0:
        with socket.create_server(address) as server:
            peers = []
            total = value
            for _ in range(world - 1):
                peer, _ = server.accept()
                total += int(peer.makefile().readline())
                peers.append(peer)
            for peer in peers:
                with peer:
                    peer.sendall(f"{total}\n".encode())
            return total
    deadline = time.monotonic() + _CONNECT_SECONDS
    while True:
        try:
            peer = socket.create_connection(address, timeout=_CONNECT_SECONDS)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # pacing: rank 0 is not listening yet
    with peer:
        peer.sendall(f"{value}\n".encode())
        return int(peer.makefile().readline())


@task(resources=Resources(cpu=0.1, gpu=4, gpu_type="H100"), replicas=4, retries=1)
def all_reduce(marker_dir: str, fail_rank: int, hold: float) -> int:
    """Writes `<attempt>-<rank>.pid`; the worker of `fail_rank` fails in the first attempt
    only; with `hold`, every worker sleeps that long before the rendezvous."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    number = current_context().attempt_number
    markers = Path(marker_dir)
    (markers / f"{number}-{rank}.pid").write_text(str(os.getpid()))
    print(f"worker {rank} of {world}, local rank {os.environ['LOCAL_RANK']}", flush=True)
    if rank == fail_rank and number == 1:
        raise RuntimeError(f"worker {rank} fails on purpose")
    time.sleep(hold)
    total = _all_reduce_sum(rank, world, rank)
    (markers / f"{number}-{rank}.sum").write_text(str(total))
    return total if rank == 0 else -1  # rank 0's is the task's


@workflow
def gang_sum(marker_dir: str, fail_rank: int = -1, hold: float = 0.0) -> int:
    return all_reduce(marker_dir=marker_dir, fail_rank=fail_rank, hold=hold)


@task(resources=Resources(cpu=0.1, gpu=8, gpu_type="H100"), replicas=4)
def too_big() -> int:
    return 0


@workflow
def too_big_gang() -> int:
    return too_big()


@task(resources=Resources(cpu=0.1, gpu=2, gpu_type="H100"))
def small_gpu(seconds: float) -> int:
    time.sleep(seconds)
    return 2


@workflow
def small_gpu_job(seconds: float) -> int:
    return small_gpu(seconds=seconds)
