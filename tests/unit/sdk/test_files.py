"""`File` and `Directory`: local runs pass paths, the task runtime uploads and downloads blobs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleetflow import Directory, File, LiteralValidationError, task, workflow
from fleetflow.bundle import build_bundle
from fleetflow.errors import FleetflowError
from fleetflow.files import active_blob_context, blob_context
from fleetflow.ir import LiteralType, TypeKind
from fleetflow.storage import (
    BlobNotFoundError,
    LocalBlobStore,
    parent_uri,
    read_uri,
    relative_key,
    store_for_uri,
)
from fleetflow.types import literal_type_of, to_literal, to_python, validate_literal

TYPED_BUNDLE = Path(__file__).parent / "fixtures" / "typed_bundle"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ the values


def test_file_and_directory_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n")
    file = File("data.csv")
    assert file.path == tmp_path / "data.csv" and file.path.is_absolute()
    assert file.name == "data.csv"
    assert os.fspath(file) == str(tmp_path / "data.csv")
    with file.open() as f:
        assert f.read() == "a,b\n"
    with open(file) as f:  # a File is path-like
        assert f.read() == "a,b\n"
    assert file == File(tmp_path / "data.csv") and file != File("other.csv")
    assert len({file, File(tmp_path / "data.csv")}) == 1

    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "b.txt").write_text("b")
    (tmp_path / "tree" / "sub" / "a.txt").write_text("a")
    tree = Directory(Path("tree"))
    assert tree.path == tmp_path / "tree"
    assert tree.files() == [tmp_path / "tree" / "b.txt", tmp_path / "tree" / "sub" / "a.txt"]
    assert literal_type_of(File) == LiteralType(kind=TypeKind.FILE)
    assert literal_type_of(Directory) == LiteralType(kind=TypeKind.DIRECTORY)


def test_local_literals_are_file_uris_of_existing_paths(tmp_path: Path) -> None:
    (tmp_path / "my data.txt").write_text("x")
    literal = to_literal(File(tmp_path / "my data.txt"), File)
    assert literal == {"uri": (tmp_path / "my data.txt").as_uri(), "name": "my data.txt"}
    assert "%20" in literal["uri"]
    assert to_python(json.loads(json.dumps(literal)), File) == File(tmp_path / "my data.txt")
    # A plain path is accepted where a File is expected.
    assert to_literal(str(tmp_path / "my data.txt"), File) == literal

    assert to_literal(Directory(tmp_path), Directory) == {"uri": tmp_path.as_uri()}
    assert to_python({"uri": tmp_path.as_uri()}, Directory) == Directory(tmp_path)

    with pytest.raises(LiteralValidationError, match=r"^out\.o0: file .*missing\.txt does not"):
        to_literal(File(tmp_path / "missing.txt"), File, "out.o0")
    with pytest.raises(LiteralValidationError, match="does not exist"):
        to_literal(File(tmp_path), File)  # a directory is not a file
    with pytest.raises(LiteralValidationError, match=r"^d: directory .* does not exist"):
        to_literal(Directory(tmp_path / "nope"), Directory, "d")
    with pytest.raises(LiteralValidationError, match="expected File, got int 3"):
        to_literal(3, File)
    with pytest.raises(LiteralValidationError, match="expected Directory, got File"):
        to_literal(File(tmp_path / "my data.txt"), Directory)
    with pytest.raises(LiteralValidationError, match="only file:// URIs can be read"):
        to_python({"uri": "s3://bucket/key", "name": "key"}, File)


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ("file:///a", "f", "expected File, got str"),
        ({"uri": "file:///a"}, "f", "missing field(s) name for File"),
        ({"uri": "file:///a", "name": "a", "size": 1}, "f", "unknown field(s) size"),
        ({"uri": "/no/scheme", "name": "a"}, "f.uri", "expected a blob URI"),
        ({"uri": 7, "name": "a"}, "f.uri", "expected a blob URI"),
        ({"uri": "file:///a", "name": "../a"}, "f.name", "a file name without directories"),
        ({"uri": "file:///a", "name": ""}, "f.name", "a file name without directories"),
        ({"uri": "file:///a", "name": None}, "f.name", "got null"),
    ],
)
def test_file_literals_are_checked_strictly(value: Any, path: str, message: str) -> None:
    with pytest.raises(LiteralValidationError) as info:
        validate_literal(value, LiteralType(kind=TypeKind.FILE), "f")
    assert info.value.path == path
    assert message in info.value.reason


def test_directory_literals_are_checked_strictly() -> None:
    directory = LiteralType(kind=TypeKind.DIRECTORY)
    assert validate_literal({"uri": "s3://b/p"}, directory) == {"uri": "s3://b/p"}
    with pytest.raises(LiteralValidationError, match="unknown field"):
        validate_literal({"uri": "s3://b/p", "name": "p"}, directory, "d")
    with pytest.raises(LiteralValidationError, match="expected a blob URI"):
        validate_literal({"uri": ""}, directory, "d")


# --------------------------------------------------------------------------- local runs


@task
def write_text(directory: str, name: str, text: str) -> File:
    path = Path(directory) / name
    path.write_text(text)
    return File(path)


@task
def read_text(doc: File) -> str:
    return doc.path.read_text()


@task
def write_tree(directory: str, files: dict[str, str]) -> Directory:
    for name, text in files.items():
        path = Path(directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Directory(directory)


@task
def read_tree(tree: Directory) -> dict[str, str]:
    return {p.relative_to(tree.path).as_posix(): p.read_text() for p in tree.files()}


@workflow
def file_chain(directory: str, text: str) -> str:
    return read_text(doc=write_text(directory=directory, name="note.txt", text=text))


@workflow
def produce_file(directory: str) -> File:
    return write_text(directory=directory, name="out.txt", text="made")


@workflow
def tree_chain(directory: str, files: dict[str, str]) -> dict[str, str]:
    return read_tree(tree=write_tree(directory=directory, files=files))


@workflow
def read_input(doc: File) -> str:
    return read_text(doc=doc)


def test_a_task_writes_a_file_and_the_next_reads_it_locally(tmp_path: Path) -> None:
    assert file_chain(directory=str(tmp_path), text="hello") == "hello"

    produced = produce_file(directory=str(tmp_path))
    assert produced == File(tmp_path / "out.txt")
    assert produced.path.read_text() == "made"

    files = {"a.txt": "A", "nested/deeper/b.txt": "B"}
    assert tree_chain(directory=str(tmp_path / "tree"), files=files) == files


def test_file_workflow_inputs_locally_and_from_the_cli(tmp_path: Path) -> None:
    doc = tmp_path / "input.txt"
    doc.write_text("from the engineer")

    assert read_input(doc=File(doc)) == "from the engineer"
    assert read_input.inputs_to_literals({"doc": File(doc)}) == {
        "doc": {"uri": doc.as_uri(), "name": "input.txt"}
    }
    parsed = read_input.parse_cli_inputs({"doc": str(doc)})
    assert parsed == {"doc": File(doc)}
    assert read_input(**parsed) == "from the engineer"

    with pytest.raises(LiteralValidationError, match=r"^inputs\.doc: file .* does not exist"):
        read_input.inputs_to_literals({"doc": File(tmp_path / "absent.txt")})


# ------------------------------------------------------------------------ blob context


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_inside_a_blob_context_files_are_uploaded_and_downloaded(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01 weights")
    prefix = "executions/e1/n0/1"

    assert active_blob_context() is None
    with blob_context(store, prefix, tmp_path / "downloads") as context:
        assert active_blob_context() is context
        literal = to_literal(File(source), File)
        again = to_literal(File(source), File)  # content-addressed: same object
    assert active_blob_context() is None

    digest = sha256(b"\x00\x01 weights")
    assert literal == {
        "uri": store.uri(f"{prefix}/files/{digest}/weights.bin"),
        "name": "weights.bin",
    }
    assert again == literal
    assert read_uri(literal["uri"]) == b"\x00\x01 weights"

    with blob_context(store, "executions/e1/n1/1", tmp_path / "downloads") as context:
        received = to_python(literal, File)
        assert received.path.is_relative_to(tmp_path / "downloads")
        assert received.name == "weights.bin"
        assert received.path.read_bytes() == b"\x00\x01 weights"
        # Passed on unchanged: the same URI, nothing uploaded under the new prefix.
        assert to_literal(received, File) == literal
        assert context.downloaded == {received.path: (literal["uri"], digest)}
    assert not (store.root / "executions/e1/n1").exists()


def test_a_received_file_or_directory_changed_in_place_is_returned_as_it_is_now(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    """Locally a task that edits its input in place returns the edits; remotely it must too,
    not the URI of the unedited upload (issue 16: a silent wrong result)."""
    source = tmp_path / "notes.txt"
    source.write_text("draft")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("one")
    with blob_context(store, "executions/e1/n0/1", tmp_path / "downloads"):
        file_literal = to_literal(File(source), File)
        dir_literal = to_literal(Directory(tree), Directory)

    with blob_context(store, "executions/e1/n1/1", tmp_path / "downloads"):
        received_file = to_python(file_literal, File)
        received_dir = to_python(dir_literal, Directory)
        received_file.path.write_text("final")
        (received_dir.path / "sub" / "a.txt").write_text("two")
        (received_dir.path / "b.txt").write_text("new")
        file_out = to_literal(received_file, File)
        dir_out = to_literal(received_dir, Directory)

    assert file_out["uri"] != file_literal["uri"]
    assert read_uri(file_out["uri"]) == b"final"
    assert read_uri(file_literal["uri"]) == b"draft"  # the input is left as it was
    assert dir_out["uri"] != dir_literal["uri"]
    with blob_context(store, "executions/e1/n2/1", tmp_path / "later"):
        edited = to_python(dir_out, Directory)
        assert sorted(p.relative_to(edited.path).as_posix() for p in edited.files()) == [
            "b.txt",
            "sub/a.txt",
        ]
        assert (edited.path / "sub" / "a.txt").read_text() == "two"


def test_inside_a_blob_context_directories_round_trip(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("A")
    (tree / "sub" / "b c.txt").write_text("B")
    (tmp_path / "empty").mkdir()

    with blob_context(store, "x/n0", tmp_path / "downloads"):
        literal = to_literal(Directory(tree), Directory)
        empty = to_literal(Directory(tmp_path / "empty"), Directory)
    assert literal["uri"].startswith(store.uri("x/n0/dirs/") + "")
    assert [relative_key(u, literal["uri"]) for u in store.list(literal["uri"])] == [
        "a.txt",
        "sub/b c.txt",
    ]
    assert empty["uri"] != literal["uri"] and store.list(empty["uri"]) == []

    with blob_context(store, "x/n1", tmp_path / "downloads"):
        received = to_python(literal, Directory)
        received_empty = to_python(empty, Directory)
        assert to_literal(received, Directory) == literal
    assert {p.relative_to(received.path).as_posix(): p.read_text() for p in received.files()} == {
        "a.txt": "A",
        "sub/b c.txt": "B",
    }
    assert received_empty.path.is_dir() and received_empty.files() == []


def test_storage_helpers(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 100_000)
    uri = store.upload("p/q/big.bin", source)
    assert uri == store.uri("p/q/big.bin") and store.exists(uri)
    store.put("p/r.txt", b"r")

    assert store.list(store.uri("p")) == [store.uri("p/q/big.bin"), store.uri("p/r.txt")]
    assert store.list(store.uri("nothing")) == []
    assert parent_uri(uri) == store.uri("p/q")
    assert relative_key(uri, store.uri("p")) == "q/big.bin"
    with pytest.raises(FleetflowError, match="is not below"):
        relative_key(uri, store.uri("other"))
    with pytest.raises(FleetflowError, match="is not below"):
        relative_key("s3://bucket/p/q/big.bin", store.uri("p"))

    reader = store_for_uri(uri)  # reads wherever a file:// URI points
    reader.download(uri, tmp_path / "copy" / "big.bin")
    assert (tmp_path / "copy" / "big.bin").read_bytes() == b"x" * 100_000
    with pytest.raises(BlobNotFoundError):
        reader.download(store.uri("p/absent"), tmp_path / "absent")
    with pytest.raises(FleetflowError, match="outside the blob store"):
        store.download((tmp_path / "big.bin").as_uri(), tmp_path / "copy2")


# --------------------------------------------------------------- through the real runtime


@dataclass
class RuntimeRun:
    returncode: int
    stderr: str
    result: dict[str, Any]
    outputs: Any
    workdir: Path


def run_task(
    store: LocalBlobStore,
    tmp_path: Path,
    node: str,
    function: str,
    inputs: dict[str, Any],
    *,
    bundle_uri: str | None = None,
) -> RuntimeRun:
    """Run `typed_tasks.<function>` as `python -m fleetflow.runtime`, as an agent would, from
    the typed bundle (uploaded under its digest) unless `bundle_uri` names another."""
    if bundle_uri is None:
        digest, data = build_bundle(TYPED_BUNDLE)
        bundle_uri = store.put(f"bundles/{digest}.tar.gz", data)
    prefix = f"executions/e1/{node}/1"
    inputs_uri = store.put(f"{prefix}/inputs.json", json.dumps(inputs).encode())
    outputs_uri = store.uri(f"{prefix}/outputs.json")
    attempt = tmp_path / "attempts" / node
    proc = subprocess.run(
        [sys.executable, "-m", "fleetflow.runtime"]
        + ["--bundle-uri", bundle_uri, "--inputs-uri", inputs_uri, "--outputs-uri", outputs_uri]
        + ["--module", "typed_tasks", "--function", function]
        + ["--result-file", str(attempt / "result.json"), "--workdir", str(attempt / "code")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return RuntimeRun(
        returncode=proc.returncode,
        stderr=proc.stderr,
        result=json.loads((attempt / "result.json").read_text()),
        outputs=json.loads(read_uri(outputs_uri)) if store.exists(outputs_uri) else None,
        workdir=attempt / "code",
    )


def test_runtime_uploads_a_returned_file_and_the_next_task_downloads_it(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    written = run_task(store, tmp_path, "n0", "write_report", {"text": "accuracy: 0.93"})
    assert written.returncode == 0, written.stderr
    report = written.outputs["o0"]
    digest = sha256(b"accuracy: 0.93")
    assert report == {
        "uri": store.uri(f"executions/e1/n0/1/files/{digest}/report.txt"),
        "name": "report.txt",
    }
    assert read_uri(report["uri"]) == b"accuracy: 0.93"

    read = run_task(store, tmp_path, "n1", "read_report", {"report": report})
    assert read.returncode == 0, read.stderr
    assert read.outputs == {"o0": "report.txt:accuracy: 0.93"}
    downloaded = list((read.workdir / ".fleetflow" / "downloads").rglob("report.txt"))
    assert [p.read_text() for p in downloaded] == ["accuracy: 0.93"]

    passed = run_task(store, tmp_path, "n2", "pass_on", {"report": report})
    assert passed.returncode == 0, passed.stderr
    assert passed.outputs == {"o0": report}  # same URI: not uploaded again
    assert store.list(store.uri("executions/e1/n2/1")) == [
        store.uri("executions/e1/n2/1/inputs.json"),
        store.uri("executions/e1/n2/1/outputs.json"),
    ]


def test_runtime_uploads_and_downloads_directories(store: LocalBlobStore, tmp_path: Path) -> None:
    files = {"a.txt": "alpha", "nested/b.txt": "beta"}
    written = run_task(store, tmp_path, "n0", "write_tree", {"files": files})
    assert written.returncode == 0, written.stderr
    tree = written.outputs["o0"]
    assert list(tree) == ["uri"]
    assert tree["uri"].startswith(store.uri("executions/e1/n0/1/dirs/"))
    assert [relative_key(u, tree["uri"]) for u in store.list(tree["uri"])] == [
        "a.txt",
        "nested/b.txt",
    ]

    read = run_task(store, tmp_path, "n1", "read_tree", {"tree": tree})
    assert read.returncode == 0, read.stderr
    assert read.outputs == {"o0": files}


def test_runtime_named_outputs_with_a_file(store: LocalBlobStore, tmp_path: Path) -> None:
    run = run_task(store, tmp_path, "n0", "report_and_size", {"text": "four"})
    assert run.returncode == 0, run.stderr
    assert set(run.outputs) == {"report", "size"}
    assert run.outputs["size"] == 4
    assert read_uri(run.outputs["report"]["uri"]) == b"four"


def test_runtime_fails_clearly_for_a_missing_file_or_blob(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    lost = run_task(store, tmp_path, "n0", "lost_file", {})
    assert lost.returncode == 1
    assert lost.result["message"].startswith(
        "TaskOutputError: task lost_file (typed_tasks.py:73) returned File("
    )
    assert "never-written.txt does not exist" in lost.result["message"]
    assert lost.outputs is None

    gone = {"uri": store.uri("executions/e0/gone.txt"), "name": "gone.txt"}
    missing = run_task(store, tmp_path, "n1", "read_report", {"report": gone})
    assert missing.returncode == 1
    assert missing.result["message"].startswith(
        "LiteralValidationError: inputs.report: blob not found: "
    )
