"""How the CLI describes task attempts, including why one is still waiting."""

from __future__ import annotations

from typing import Any

from fleetflow.cli.remote import describe_attempt


def attempt(**fields: Any) -> dict[str, Any]:
    return {
        "node_id": "n1-train",
        "map_index": None,
        "attempt_number": 1,
        "cluster": None,
        "cache_hit": False,
        "pending_reason": None,
        **fields,
    }


def test_a_waiting_attempt_says_what_it_waits_for() -> None:
    line = describe_attempt(
        attempt(status="PENDING", pending_reason="quota: needs 1 GPU, 2/2 in use")
    )
    assert line == "n1-train (attempt 1) PENDING - waiting: quota: needs 1 GPU, 2/2 in use"


def test_a_finished_attempt_forgets_why_it_waited() -> None:
    line = describe_attempt(
        attempt(status="SUCCEEDED", cluster="east", pending_reason="stale", map_index=3)
    )
    assert line == "n1-train[3] (attempt 1) SUCCEEDED on east"


def test_a_borrowing_attempt_says_how_many_gpus_it_borrows() -> None:
    line = describe_attempt(
        attempt(status="RUNNING", cluster="east", gpu_type="H100", borrowed_gpus=2)
    )
    assert line == "n1-train (attempt 1) RUNNING on east (borrowed 2 H100 of its cohort)"
    assert "borrowed" not in describe_attempt(attempt(status="RUNNING", borrowed_gpus=0))


def test_a_preempted_attempt_says_why() -> None:
    why = "preempted: its borrowed GPUs were taken back for a tenant of cohort lab"
    line = describe_attempt(
        attempt(
            status="PREEMPTED",
            cluster="east",
            gpu_type="H100",
            borrowed_gpus=1,
            error_message=why,
        )
    )
    assert line == f"n1-train (attempt 1) PREEMPTED on east (borrowed 1 H100 of its cohort) - {why}"
