"""The attempt's identity (execution, node, attempt, map element) from the lease message to the
task runtime's command line, where the task's `fleetflow.current_context()` reads it."""

from __future__ import annotations

from data_plane_agent.attempts import TaskAssignment
from data_plane_agent.executors import kubernetes_pods as pods
from data_plane_agent.executors.base import runtime_command
from data_plane_agent.protocol import assignment_from_proto
from data_plane_agent.settings import KubernetesSettings
from fleetflow.agent.v1 import agent_pb2
from fleetflow.runtime import argument_parser


def _message(**fields: object) -> agent_pb2.Assignment:
    return agent_pb2.Assignment(
        attempt_id="at-1",
        fencing_token=2,
        execution_id="ex-1",
        node_id="n3-train",
        tenant="vision",
        task_module="flows",
        task_function="train",
        bundle_uri="s3://b/bundle.tar.gz",
        inputs_uri="s3://b/inputs.json",
        outputs_uri="s3://b/outputs.json",
        **fields,  # type: ignore[arg-type]
    )


def test_a_map_elements_identity_reaches_the_runtimes_arguments() -> None:
    checkpoint = "s3://b/tenants/vision/executions/ex-1/n3-train/0/checkpoint"
    assignment = assignment_from_proto(
        _message(attempt_number=2, map_index=0, checkpoint_uri=checkpoint)
    )
    assert (assignment.attempt_number, assignment.map_index) == (2, 0)  # element 0 is not "none"
    assert assignment.checkpoint_uri == checkpoint

    command = runtime_command("python", assignment, result_file="r.json", workdir="code")
    args = argument_parser().parse_args(command[3:])
    assert (args.execution_id, args.node_id, args.attempt_id) == ("ex-1", "n3-train", "at-1")
    assert (args.attempt_number, args.map_index) == (2, 0)


def test_an_ordinary_node_has_no_map_index() -> None:
    assignment = assignment_from_proto(_message(attempt_number=1))
    assert (assignment.attempt_number, assignment.map_index) == (1, None)
    command = runtime_command("python", assignment, result_file="r.json", workdir="code")
    assert "--map-index" not in command
    args = argument_parser().parse_args(command[3:])
    assert (args.attempt_number, args.map_index) == (1, None)


def test_a_control_plane_that_predates_the_fields_gives_no_attempt_number() -> None:
    assignment = assignment_from_proto(_message())
    assert (assignment.attempt_number, assignment.map_index) == (0, None)


def test_a_pod_keeps_the_identity_for_the_agent_that_adopts_it() -> None:
    assignment = TaskAssignment(
        "at-1", 2, "ex-1", "n3-train", "vision", "flows", "train", "b", "i", "o",
        attempt_number=3, map_index=7, checkpoint_uri="s3://b/tenants/t/executions/e/n/7/checkpoint",
    )  # fmt: skip
    pod = pods.pod_manifest(assignment, KubernetesSettings(default_image="registry/rt:1"))
    assert pods.assignment_from_pod(pod) == assignment
    command = pod["spec"]["containers"][0]["command"]
    assert command[command.index("--attempt-number") + 1] == "3"
    assert command[command.index("--map-index") + 1] == "7"
