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
