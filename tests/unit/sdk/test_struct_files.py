"""File and Directory values inside dataclasses, pydantic models and unions take the paths a
top-level one takes: uploaded when a task returns them, downloaded into the task that receives
them, passed on under their URI unless changed in place (then uploaded as they are now)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydantic
import pytest

from fleetflow import Directory, File, LiteralValidationError
from fleetflow.files import blob_context
from fleetflow.storage import LocalBlobStore, read_uri
from fleetflow.types import literal_type_of, to_literal, to_python, validate_literal


@dataclass
class Shards:
    folder: Directory
    index: list[File]


class Dataset(pydantic.BaseModel):
    shards: Shards
    readme: File | None = None
    extra: File | Directory | int = 0


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def make_dataset(where: Path) -> Dataset:
    (where / "folder" / "sub").mkdir(parents=True)
    (where / "folder" / "sub" / "a.txt").write_text("a v1")
    (where / "i0.txt").write_text("index 0")
    (where / "i1.txt").write_text("index 1")
    (where / "README").write_text("readme v1")
    (where / "extra").mkdir()
    (where / "extra" / "e.txt").write_text("extra v1")
    return Dataset(
        shards=Shards(
            folder=Directory(where / "folder"),
            index=[File(where / "i0.txt"), File(where / "i1.txt")],
        ),
        readme=File(where / "README"),
        extra=Directory(where / "extra"),
    )


def test_blobs_in_structs_are_uploaded_downloaded_and_edits_kept(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    with blob_context(store, "executions/e1/n0/1", tmp_path / "downloads"):
        made = to_literal(make_dataset(tmp_path / "made"), Dataset)
    assert made["shards"]["folder"]["uri"].startswith(store.uri("executions/e1/n0/1/dirs/"))
    assert [read_uri(f["uri"]) for f in made["shards"]["index"]] == [b"index 0", b"index 1"]
    assert made["extra"]["variant"] == "Directory"
    assert made["extra"]["value"]["uri"].startswith(store.uri("executions/e1/n0/1/dirs/"))
    # What the control plane checks, and keeps as it is.
    assert validate_literal(made, literal_type_of(Dataset)) == made

    with blob_context(store, "executions/e1/n1/1", tmp_path / "downloads"):
        received = to_python(made, Dataset)
        downloads = tmp_path / "downloads"
        assert received.shards.folder.path.is_relative_to(downloads)
        assert all(f.path.is_relative_to(downloads) for f in received.shards.index)
        assert isinstance(received.extra, Directory)
        assert received.readme is not None and received.readme.path.read_text() == "readme v1"
        # Changed in place: a file in the nested directory, one list item, the union's directory.
        (received.shards.folder.path / "sub" / "a.txt").write_text("a v2")
        received.shards.index[1].path.write_text("index 1 v2")
        (received.extra.path / "new.txt").write_text("new")
        edited = to_literal(received, Dataset)

    assert edited["shards"]["index"][0] == made["shards"]["index"][0]
    assert edited["readme"] == made["readme"]  # nothing uploaded twice
    assert edited["shards"]["index"][1]["uri"] != made["shards"]["index"][1]["uri"]
    assert read_uri(edited["shards"]["index"][1]["uri"]) == b"index 1 v2"
    assert read_uri(made["shards"]["index"][1]["uri"]) == b"index 1"  # the input as it was
    assert edited["shards"]["folder"]["uri"] != made["shards"]["folder"]["uri"]
    assert edited["extra"]["value"]["uri"] != made["extra"]["value"]["uri"]

    with blob_context(store, "executions/e1/n2/1", tmp_path / "later"):
        final = to_python(edited, Dataset)
        assert (final.shards.folder.path / "sub" / "a.txt").read_text() == "a v2"
        assert final.shards.index[1].path.read_text() == "index 1 v2"
        assert isinstance(final.extra, Directory)
        assert sorted(p.name for p in final.extra.files()) == ["e.txt", "new.txt"]


def test_locally_blobs_in_structs_are_file_uris_of_existing_paths(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    literal = to_literal(dataset, Dataset)
    assert literal["shards"]["index"][0] == {
        "uri": (tmp_path / "i0.txt").as_uri(),
        "name": "i0.txt",
    }
    assert to_python(literal, Dataset) == dataset
    (tmp_path / "i1.txt").unlink()
    with pytest.raises(
        LiteralValidationError, match=r"^shards\.index\[1\]: file .* does not exist"
    ):
        to_literal(dataset, Dataset)


def test_pydantic_models_take_paths_for_file_fields(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("r")
    shards = Shards(folder=Directory(tmp_path), index=[])
    model = Dataset.model_validate({"shards": shards, "readme": str(tmp_path / "README")})
    assert model.readme == File(tmp_path / "README")
    assert model.model_dump(mode="json")["readme"] == str(tmp_path / "README")
    with pytest.raises(pydantic.ValidationError, match="expected File or a path, got Directory"):
        Dataset(shards=shards, readme=Directory(tmp_path))  # type: ignore[arg-type]
