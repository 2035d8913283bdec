"""Workflows whose values hold File and Directory values inside structs and unions: a dataclass
with File, Directory, list[File] and `File | Directory` fields, returned by one task and
edited in place by the next, inside a pydantic model; a struct workflow input holding a File;
union values (`int | float`, two dataclasses with the same fields, a plain int into `int | str`,
a `File | int`). Run locally and remotely, they must give the same results (issue 16)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pydantic

from fleetflow import Directory, File, task, workflow


@dataclass
class Seed:
    """A workflow input: its File is uploaded when the workflow is launched remotely."""

    note: File
    copies: int


@dataclass
class Bundle:
    notes: File
    data: Directory
    extras: list[File]
    either: File | Directory


class Manifest(pydantic.BaseModel):
    """A model holding a dataclass that holds a Directory, and an optional File."""

    bundle: Bundle
    label: str
    seed_note: File | None = None


class Result(NamedTuple):
    contents: dict[str, str]
    manifest: Manifest


@task
def make_bundle(seed: Seed) -> Bundle:
    out = Path(tempfile.mkdtemp(prefix="bundle-"))
    (out / "notes.txt").write_text("notes v1")
    (out / "data" / "sub").mkdir(parents=True)
    (out / "data" / "a.txt").write_text("a v1")
    (out / "data" / "sub" / "b.txt").write_text("b v1")
    extras = []
    for i in range(seed.copies):
        (out / f"extra-{i}.txt").write_text(f"{seed.note.path.read_text()} #{i}")
        extras.append(File(out / f"extra-{i}.txt"))
    (out / "either").mkdir()
    (out / "either" / "inside.txt").write_text("either v1")
    return Bundle(
        notes=File(out / "notes.txt"),
        data=Directory(out / "data"),
        extras=extras,
        either=Directory(out / "either"),
    )


@task
def edit_bundle(bundle: Bundle, seed: Seed) -> Manifest:
    """Changes what it received in place (a file rewritten, a file added to a directory, a file
    inside the union's directory) and passes the rest on unchanged."""
    bundle.notes.path.write_text(bundle.notes.path.read_text() + " + edited")
    (bundle.data.path / "sub" / "b.txt").write_text("b v2")
    (bundle.data.path / "added.txt").write_text("added")
    assert isinstance(bundle.either, Directory)
    (bundle.either.path / "inside.txt").write_text("either v2")
    return Manifest(bundle=bundle, label="edited", seed_note=seed.note)


def _read(manifest: Manifest) -> dict[str, str]:
    bundle = manifest.bundle
    found = {"notes": bundle.notes.path.read_text(), "label": manifest.label}
    for path in bundle.data.files():
        found[f"data/{path.relative_to(bundle.data.path).as_posix()}"] = path.read_text()
    for i, extra in enumerate(bundle.extras):
        found[f"extras[{i}]"] = f"{extra.name}: {extra.path.read_text()}"
    either = bundle.either
    if isinstance(either, Directory):
        for path in either.files():
            found[f"either/{path.relative_to(either.path).as_posix()}"] = path.read_text()
    else:
        found["either"] = either.path.read_text()
    if manifest.seed_note is not None:
        found["seed_note"] = manifest.seed_note.path.read_text()
    return found


@task
def read_manifest(manifest: Manifest) -> dict[str, str]:
    return _read(manifest)


@workflow
def struct_files(seed: Seed) -> Result:
    manifest = edit_bundle(bundle=make_bundle(seed=seed), seed=seed)
    return Result(contents=read_manifest(manifest=manifest), manifest=manifest)


def contents_of(manifest: Manifest) -> dict[str, str]:
    """What `read_manifest` reads, for a test to apply to a workflow's output."""
    return _read(manifest)


@dataclass
class Cat:
    name: str


@dataclass
class Dog:  # the same fields as Cat: only the literal's variant tells them apart
    name: str


@task
def mixed(n: int) -> list[int | float | Cat | Dog]:
    return [n, float(n), Cat(name="tom"), Dog(name="rex")]


@task
def plain(n: int) -> int:
    return n


@task
def file_or_number(text: str) -> File | int:
    if not text:
        return 0
    out = Path(tempfile.mkdtemp(prefix="doc-")) / "doc.txt"
    out.write_text(text)
    return File(out)


@task
def describe_values(
    values: list[int | float | Cat | Dog],
    extra: int | str,
    label: int | str,
    doc: File | int,
    attachment: File | str,
) -> list[str]:
    described = [f"{type(v).__name__}:{v!r}" for v in [*values, extra, label]]
    shown = [
        f"{type(v).__name__}:{v.path.read_text() if isinstance(v, File) else v}"
        for v in (doc, attachment)
    ]
    return described + shown


@workflow
def unions(n: int, label: int | str, text: str, attachment: File | str = "none") -> list[str]:
    return describe_values(
        values=mixed(n=n),
        extra=plain(n=n),
        label=label,
        doc=file_or_number(text=text),
        attachment=attachment,
    )
