"""Structs holding File and Directory values, and unions, through the full stack: a remote
run gives the contents and values a local run gives (issue 16)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fleetflow import Directory, File
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "struct_files.py"


def workflow(name: str) -> Any:
    wf, _ = load_workflow(WORKFLOWS, name)
    return wf


def test_a_struct_with_files_edited_downstream_gives_the_local_contents_remotely(
    stack: Stack, tmp_path: Path
) -> None:
    wf = workflow("struct_files")
    seed_type = wf.input_types["seed"]
    module = sys.modules[wf.spec.module]

    def seed(where: Path) -> Any:
        where.mkdir()
        (where / "seed.txt").write_text("seeded")
        return seed_type(note=File(where / "seed.txt"), copies=2)

    local = wf(seed=seed(tmp_path / "local"))
    with stack.client() as client:
        result = client.run(wf, timeout=120, seed=seed(tmp_path / "remote"))
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        remote = result.outputs
        # The struct input's File was uploaded, as a top-level File input is.
        sent = result.execution.inputs["seed"]["note"]
        assert sent["uri"].startswith(f"{stack.blob_root}/tenants/default/uploads/files/")
        # Downloaded through the outputs API, every blob of the model lands on this machine.
        downloaded = client.outputs(result.id, wf, download_to=tmp_path / "downloads")

    expected = {
        "notes": "notes v1 + edited",
        "label": "edited",
        "data/a.txt": "a v1",
        "data/added.txt": "added",
        "data/sub/b.txt": "b v2",
        "extras[0]": "extra-0.txt: seeded #0",
        "extras[1]": "extra-1.txt: seeded #1",
        "either/inside.txt": "either v2",
        "seed_note": "seeded",
    }
    assert local.contents == expected
    assert remote.contents == expected
    # The model output itself holds the edited files, remotely as locally.
    assert module.contents_of(local.manifest) == expected
    assert module.contents_of(remote.manifest) == expected
    assert module.contents_of(downloaded.manifest) == expected
    bundle = remote.manifest.bundle
    assert isinstance(bundle.data, Directory) and isinstance(bundle.either, Directory)
    assert all(path.is_relative_to(tmp_path / "downloads") for path in _paths(downloaded))
    # Unchanged files kept the URI they were uploaded under by the task that made them;
    # edited ones were uploaded anew by the task that edited them.
    made, edited = (_attempt_prefix(result, name) for name in ("make_bundle", "edit_bundle"))
    literal = result.execution.outputs["manifest"]["bundle"]
    assert made in literal["extras"][0]["uri"] and made in literal["extras"][1]["uri"]
    assert edited in literal["notes"]["uri"] and edited in literal["data"]["uri"]
    assert literal["either"]["variant"] == "Directory"
    assert edited in literal["either"]["value"]["uri"]


def _attempt_prefix(result: Any, task: str) -> str:
    (attempt,) = [a for a in result.execution.attempts if a.task_name.endswith(f".{task}")]
    return f"/{attempt.node_id}/"


def _paths(result: Any) -> list[Path]:
    bundle = result.manifest.bundle
    return [bundle.notes.path, bundle.data.path, bundle.either.path] + [
        extra.path for extra in bundle.extras
    ]


def test_union_values_run_remotely_as_locally(stack: Stack, tmp_path: Path) -> None:
    wf = workflow("unions")
    attached = tmp_path / "attached.txt"
    attached.write_text("attached")
    inputs = {"n": 3, "label": "three", "text": "a doc", "attachment": File(attached)}
    local = wf(**inputs)
    with stack.client() as client:
        result = client.run(wf, timeout=120, **inputs)
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        number = client.run(wf, timeout=120, n=2, label=7, text="")
        assert number.status == "SUCCEEDED", f"{number.error}\n{stack.logs()}"
    assert (
        result.outputs
        == local
        == [
            "int:3",
            "float:3.0",
            "Cat:Cat(name='tom')",
            "Dog:Dog(name='rex')",
            "int:3",
            "str:'three'",
            "File:a doc",
            "File:attached",
        ]
    )
    assert (
        number.outputs
        == wf(n=2, label=7, text="")
        == [
            "int:2",
            "float:2.0",
            "Cat:Cat(name='tom')",
            "Dog:Dog(name='rex')",
            "int:2",
            "int:7",
            "int:0",
            "str:none",
        ]
    )
    # The execution's inputs record their variant; a File variant was uploaded.
    assert result.execution.inputs["label"] == {"variant": "str", "value": "three"}
    sent = result.execution.inputs["attachment"]
    assert sent["variant"] == "File"
    assert sent["value"]["uri"].startswith(f"{stack.blob_root}/tenants/default/uploads/files/")
