"""What a lease lists for the agent to stage: exactly the File and Directory inputs, each one
its tenant's to read (issue 13, finding 3). An upstream task's output is the task's word: a
value naming another tenant's blob, or shaped to climb out of the sandbox, fails the attempt
instead of being copied in by the agent with its rights."""

from __future__ import annotations

import pytest

from control_plane.agent_api.mapping import UnleasableAttemptError, input_blobs, takes_blobs
from fleetflow.ir import LiteralType, TaskSpec, TypedInterface, TypeKind, Variable

FILE = LiteralType(kind=TypeKind.FILE)
DIRECTORY = LiteralType(kind=TypeKind.DIRECTORY)
OWN = "file:///blobs/tenants/acme/"


def task(**inputs: LiteralType) -> TaskSpec:
    return TaskSpec(
        name="m.f",
        module="m",
        function="f",
        interface=TypedInterface(inputs=[Variable(name=n, type=t) for n, t in inputs.items()]),
    )


def own_only(uri: str) -> str | None:
    return None if uri.startswith(OWN) else "is not its tenant's to read"


def test_lists_files_and_directories_at_any_depth_and_nothing_else() -> None:
    spec = task(
        model=FILE,
        shards=LiteralType(kind=TypeKind.LIST, item=FILE),
        data=DIRECTORY,
        n=LiteralType(kind=TypeKind.INTEGER),
        lookalike=LiteralType(kind=TypeKind.DICT, item=LiteralType(kind=TypeKind.STRING)),
    )
    inputs = {
        "model": {"uri": OWN + "uploads/files/a/model.bin", "name": "model.bin"},
        "shards": [{"uri": OWN + "executions/e/n/1/files/b/s0", "name": "s0"}],
        "data": {"uri": OWN + "uploads/dirs/d"},
        "n": 3,
        # A string-valued dict shaped like a file: not a File, never staged.
        "lookalike": {"uri": "file:///etc/shadow", "name": "shadow"},
    }

    listed = input_blobs(inputs, spec, own_only)

    assert [(b.uri, b.file_name, b.directory) for b in listed] == [
        (OWN + "uploads/files/a/model.bin", "model.bin", False),
        (OWN + "executions/e/n/1/files/b/s0", "s0", False),
        (OWN + "uploads/dirs/d", "", True),
    ]
    assert takes_blobs(spec)
    assert not takes_blobs(task(n=LiteralType(kind=TypeKind.INTEGER)))


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ({"uri": "file:///blobs/tenants/beta/uploads/files/x/y", "name": "y"}, "tenant's"),
        ({"uri": "file:///etc/shadow", "name": "shadow"}, "tenant's"),
        ({"uri": OWN + "uploads/files/x/y", "name": "../../escape"}, "file name"),
        ({"uri": OWN + "uploads/files/x/y", "name": ".."}, "file name"),
        ({"uri": OWN + "uploads/files/x/y"}, "file name"),
        ({"name": "y"}, "not a file value"),
        ("file:///etc/shadow", "not a file value"),
    ],
)
def test_a_hostile_value_fails_the_attempt_naming_the_input(value: object, complaint: str) -> None:
    with pytest.raises(UnleasableAttemptError) as info:
        input_blobs({"model": value}, task(model=FILE), own_only)
    assert "inputs.model" in str(info.value)
    assert complaint in str(info.value)
