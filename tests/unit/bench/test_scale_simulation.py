"""The mechanisms of `bench/scale_simulation.py`, the model behind bench/README.md's figures for
100,000 elements on 50 clusters: chunked histories stay under Temporal's limit, a flat one is
flagged over it, a killed cluster's attempts come back LOST and run again, a node's
concurrency bounds what is pending, and throughput is capped by the scarcer of the control
plane's CPU and the clusters' slots. Simulated time only: nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.tiers import load_script

scale = load_script("bench/scale_simulation.py")


def simulate(**change: Any) -> dict[str, Any]:
    return scale.simulate(dataclasses.replace(scale.Model(), **change))


def test_chunked_histories_stay_under_the_limit_for_100k_elements() -> None:
    results = simulate()

    history = results["history"]
    assert results["chunks"]["count"] == history["children"] == 100
    assert not history["over_limit"] and not history["over_signal_limit"]
    assert not results["chunks"]["over_pending_child_limit"]
    assert history["root"]["events"] < scale.HISTORY_WARNING
    assert history["largest_child"]["events"] < scale.HISTORY_WARNING
    assert history["largest_child"]["signals"] == 1000  # one per finished attempt
    assert results["largest_workflow_state_units"] == 1000  # a chunk; the parent holds 100
    assert results["attempts"] == 100_000 and results["failed_units"] == 0


def test_no_chunking_flags_the_flat_workflow_over_the_limit() -> None:
    # 60,000 rather than 100,000 elements, to keep this fast: the signals alone are over.
    results = simulate(elements=60_000, chunking=False)

    flat = results["history"]["root"]
    assert results["history"]["over_limit"] and flat["over_limit"]
    assert results["history"]["children"] == 0
    assert flat["signals"] == 60_000 > scale.HISTORY_LIMIT
    assert flat["over_signal_limit"] and results["history"]["over_signal_limit"]
    assert flat["first_signal_refused_at_s"] < flat["limit_crossed_at_s"]
    assert flat["markers"] >= 60_000 // scale.START_BATCH
    assert flat["limit_crossed_at_s"] < results["wall_s"]  # Temporal would terminate it there
    assert results["largest_workflow_state_units"] == 60_000


def test_a_killed_cluster_loses_its_attempts_and_they_run_again_elsewhere() -> None:
    results = simulate(elements=5000, clusters=5, slots=8, replicas=4, kill_cluster_at=5.0)

    assert results["lost"] > 0
    assert results["system_retries"] == results["lost"]
    assert results["attempts"] == 5000 + results["lost"]
    assert results["failed_units"] == 0
    chunk = results["history"]["child_with_most_lost"]
    lost_units = results["history"]["child_with_most_lost_units"]
    assert chunk["signals"] == 1000 + lost_units  # one LOST signal more per lost unit
    assert chunk["events"] < scale.HISTORY_WARNING


def test_a_concurrency_bounds_the_chunks_at_once_and_what_is_pending() -> None:
    results = simulate(elements=10_000, clusters=10, replicas=8, concurrency=2500)

    assert results["chunks"]["at_once"] == 3
    assert results["chunks"]["concurrency_per_chunk"] == 833
    assert results["peaks"]["pending"] <= 2500
    assert results["peaks"]["running"] <= 2500


def test_throughput_is_capped_by_the_control_plane_until_it_outgrows_the_clusters() -> None:
    # 10 clusters x 32 slots of 1 s tasks: about 314 attempts/s; one core at 15 ms: 67/s.
    starved = simulate(elements=10_000, clusters=10, replicas=1, cores=1)
    cp_capacity = starved["capacity_tasks_per_s"]["control_plane"]
    assert starved["bottleneck"] == "control_plane"
    assert 0.9 * cp_capacity <= starved["throughput_tasks_per_s"] <= cp_capacity
    assert starved["control_plane"]["utilisation"] > 0.95

    # Replicas that wake each other's long polls at once (no recheck delay): the slots bind.
    scaled = simulate(elements=10_000, clusters=10, replicas=10, cores=1, recheck_ms=0.0)
    cluster_capacity = scaled["capacity_tasks_per_s"]["clusters"]
    assert scaled["bottleneck"] == "clusters"
    assert 3 * cp_capacity < scaled["throughput_tasks_per_s"] <= cluster_capacity
    assert scaled["peaks"]["slots_held"] == 10 * 32


def test_attempts_placed_by_another_replica_wait_for_the_long_polls_recheck() -> None:
    def run(**change: Any) -> dict[str, Any]:
        return simulate(elements=10_000, clusters=10, replicas=8, **change)

    woken, rechecked = run(recheck_ms=0.0), run(recheck_ms=1000.0)

    assert woken["control_plane"]["cross_replica_leases"] == 0
    assert rechecked["control_plane"]["cross_replica_leases"] > 0
    assert rechecked["bottleneck"] == "clusters"
    assert rechecked["throughput_tasks_per_s"] < 0.85 * woken["throughput_tasks_per_s"]
    assert rechecked["throughput_tasks_per_s"] <= rechecked["capacity_tasks_per_s"]["clusters"]
    alone = simulate(elements=2000, clusters=4, replicas=1)
    assert alone["control_plane"]["cross_replica_leases"] == 0


def test_the_same_seed_gives_the_same_figures() -> None:
    def run() -> dict[str, Any]:
        results = simulate(elements=3000, clusters=4, kill_cluster_at=3.0, seed=7)
        results.pop("simulated_in_s")
        return results

    assert run() == run()


def test_the_command_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scale.json"

    assert scale.main(["--elements", "2000", "--clusters", "4", "--json", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "Temporal history" in printed and "bottleneck" in printed
    results = json.loads(out.read_text())
    assert results["model"]["elements"] == 2000 and results["wall_s"] > 0

    args = ["--elements", "2000", "--clusters", "4", "--variations", "--json", str(out)]
    assert scale.main(args) == 0

    printed = capsys.readouterr().out
    assert "| --no-chunking |" in printed
    assert set(json.loads(out.read_text())["variations"]) == {v for v, _ in scale.VARIATIONS}
