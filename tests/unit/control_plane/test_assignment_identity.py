"""The lease message tells the agent which try of which unit an attempt is (its number, its map
element), which the task reads through `fleetflow.current_context()`, and where that unit, and
it only, keeps its checkpoint."""

from __future__ import annotations

import pytest

from control_plane.agent_api.mapping import UnleasableAttemptError, assignment_from_attempt
from control_plane.db.models import TaskAttempt
from fleetflow.ir import WorkflowSpec
from fleetflow.states import NO_MAP_INDEX


def _attempt(map_index: int, attempt_number: int, outputs_uri: str = "") -> TaskAttempt:
    return TaskAttempt(
        id="at-1",
        execution_id="ex-1",
        node_id="n1-fit",
        map_index=map_index,
        task_name="examples.train.fit",
        attempt_number=attempt_number,
        status="LEASED",
        fencing_token=1,
        inputs_uri="file:///blobs/in.json",
        outputs_uri=outputs_uri or "file:///blobs/out.json",
    )


def test_an_ordinary_nodes_attempt_has_no_map_index(workflow_spec: WorkflowSpec) -> None:
    message = assignment_from_attempt(
        _attempt(NO_MAP_INDEX, 2), workflow_spec, tenant="t", bundle_uri="b", report_secret="s"
    )
    assert message.attempt_number == 2
    assert not message.HasField("map_index")


def test_a_map_elements_attempt_carries_its_index(workflow_spec: WorkflowSpec) -> None:
    message = assignment_from_attempt(
        _attempt(0, 1), workflow_spec, tenant="t", bundle_uri="b", report_secret="s"
    )
    assert message.HasField("map_index") and message.map_index == 0
    assert message.attempt_number == 1


def test_an_attempt_number_out_of_the_wire_range_is_unleasable(
    workflow_spec: WorkflowSpec,
) -> None:
    with pytest.raises(UnleasableAttemptError, match="attempt_number"):
        assignment_from_attempt(
            _attempt(NO_MAP_INDEX, 2**31), workflow_spec, tenant="t", bundle_uri="b",
            report_secret="s",
        )  # fmt: skip


EXECUTION = "s3://bucket/tenants/acme/executions/ex-1"


@pytest.mark.parametrize(
    ("map_index", "attempt_number", "outputs_uri", "checkpoint_uri"),
    [
        (
            NO_MAP_INDEX,
            3,
            f"{EXECUTION}/n1-fit/3/outputs.json",
            f"{EXECUTION}/n1-fit/checkpoint",
        ),
        (4, 1, f"{EXECUTION}/n1-fit/4/1/outputs.json", f"{EXECUTION}/n1-fit/4/checkpoint"),
        # Not the attempt layout (or not this attempt's number): no checkpoint, nothing guessed.
        (NO_MAP_INDEX, 2, f"{EXECUTION}/n1-fit/3/outputs.json", ""),
        (NO_MAP_INDEX, 1, "file:///blobs/out.json", ""),
    ],
)
def test_the_checkpoint_location_is_the_units_own(
    workflow_spec: WorkflowSpec,
    map_index: int,
    attempt_number: int,
    outputs_uri: str,
    checkpoint_uri: str,
) -> None:
    message = assignment_from_attempt(
        _attempt(map_index, attempt_number, outputs_uri),
        workflow_spec,
        tenant="acme",
        bundle_uri="b",
        report_secret="s",
    )
    assert message.checkpoint_uri == checkpoint_uri
