"""The agent's bundle cache: each bundle downloaded, checked and unpacked once, staged into
every attempt's sandbox (its modules linked read-only, its other files copied), and only ever
from the location the attempt names."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import data_plane_agent.bundle_cache as bundle_cache
from data_plane_agent.bundle_cache import BundleCache
from fleetflow.bundle import BundleError, build_bundle
from fleetflow.errors import FleetflowError
from fleetflow.storage import LocalBlobStore


def project(root: Path, text: str) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "tasks.py").write_text(f"TEXT = {text!r}\n")
    (root / "pkg" / "data.txt").write_text(text)
    return root


def upload(store: LocalBlobStore, root: Path, prefix: str = "tenants/a") -> str:
    digest, data = build_bundle(root)
    return store.put(f"{prefix}/bundles/{digest}.tar.gz", data)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_a_bundle_is_unpacked_once_and_each_copy_is_its_own(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    uri = upload(store, project(tmp_path / "p", "genuine"))
    cache = BundleCache(tmp_path / "cache")

    cache.copy_into(uri, tmp_path / "one")
    (tmp_path / "one" / "pkg" / "data.txt").write_text("changed by a task")
    Path(uri.removeprefix("file://")).unlink()  # not downloaded again
    cache.copy_into(uri, tmp_path / "two")

    assert (tmp_path / "two" / "pkg" / "data.txt").read_text() == "genuine"
    assert (tmp_path / "two" / "tasks.py").read_text() == "TEXT = 'genuine'\n"


def imported_from(directory: Path) -> tuple[str, str]:
    """`tasks.TEXT` imported in a fresh interpreter that writes no bytecode, and its verbose
    import log."""
    done = subprocess.run(
        [sys.executable, "-B", "-v", "-c", "import tasks; print(tasks.TEXT)"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip(), done.stderr


def staged_twice(store: LocalBlobStore, tmp_path: Path) -> tuple[str, BundleCache]:
    """A bundle's URI and a cache that staged it into `tmp_path`'s `one` and `two`."""
    uri = upload(store, project(tmp_path / "p", "genuine"))
    cache = BundleCache(tmp_path / "cache")
    for copy in ("one", "two"):
        cache.copy_into(uri, tmp_path / copy)
    return uri, cache


def test_each_copy_holds_its_modules_bytecode_checked_against_its_source(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    uri, cache = staged_twice(store, tmp_path)

    pyc = tmp_path / "one" / "__pycache__" / f"tasks.{sys.implementation.cache_tag}.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b11  # by hash, checked
    text, log = imported_from(tmp_path / "one")
    assert text == "genuine"
    assert f"code object from '{pyc}'" in log  # loaded, not compiled again

    # A task cannot write its module (read-only, and not its own) but may replace it in its
    # own directory: what it imports then is its edit, and the tree keeps the bundled one.
    edited = tmp_path / "two" / "tasks.py"
    edited.unlink()
    edited.write_text("TEXT = 'edited by a task'\n")
    assert imported_from(tmp_path / "two")[0] == "edited by a task"
    cache.copy_into(uri, tmp_path / "three")
    assert imported_from(tmp_path / "three")[0] == "genuine"


def test_modules_are_linked_read_only_and_other_files_are_copies(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    staged_twice(store, tmp_path)

    pyc = f"__pycache__/tasks.{sys.implementation.cache_tag}.pyc"
    for shared in ("tasks.py", pyc):
        one, two = (os.lstat(tmp_path / copy / shared) for copy in ("one", "two"))
        assert one.st_ino == two.st_ino  # one file, in the tree and in every sandbox
        assert one.st_mode & 0o222 == 0, oct(one.st_mode)
    one, two = (os.lstat(tmp_path / copy / "pkg" / "data.txt") for copy in ("one", "two"))
    assert one.st_ino != two.st_ino
    assert one.st_mode & 0o200
    assert (tmp_path / "one" / "__pycache__").stat().st_mode & 0o200  # the task's directories


def test_a_module_that_cannot_be_linked_is_copied_read_only(
    store: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = upload(store, project(tmp_path / "p", "genuine"))
    cache = BundleCache(tmp_path / "cache")

    def cross_device(source: str, dest: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(bundle_cache.os, "link", cross_device)
    cache.copy_into(uri, tmp_path / "one")

    module = os.lstat(tmp_path / "one" / "tasks.py")
    assert module.st_nlink == 1
    assert module.st_mode & 0o222 == 0, oct(module.st_mode)
    assert imported_from(tmp_path / "one")[0] == "genuine"


def test_a_bundle_changed_after_upload_is_refused_and_not_kept(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    genuine = project(tmp_path / "p", "genuine")
    uri = upload(store, genuine)
    _, forged = build_bundle(project(tmp_path / "evil", "evil"))
    Path(uri.removeprefix("file://")).write_bytes(forged)
    cache = BundleCache(tmp_path / "cache")

    with pytest.raises(BundleError, match="changed after upload"):
        cache.copy_into(uri, tmp_path / "one")
    assert not (tmp_path / "one").exists()
    assert not any((tmp_path / "cache").glob("*/tasks.py"))  # nothing of it unpacked

    _, data = build_bundle(genuine)
    Path(uri.removeprefix("file://")).write_bytes(data)  # put back: the genuine one is used
    cache.copy_into(uri, tmp_path / "two")
    assert (tmp_path / "two" / "pkg" / "data.txt").read_text() == "genuine"


def test_another_location_naming_the_same_digest_is_read_from_there(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    """A tenant naming another tenant's digest gets no code from the other's unpacked tree:
    its attempt reads its own location, where nothing is."""
    uri = upload(store, project(tmp_path / "p", "tenant a's code"), prefix="tenants/a")
    cache = BundleCache(tmp_path / "cache")
    cache.copy_into(uri, tmp_path / "a")

    elsewhere = uri.replace("/tenants/a/", "/tenants/b/")
    with pytest.raises(FleetflowError, match="not found"):
        cache.copy_into(elsewhere, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_least_recently_used_bundle_goes_but_never_one_being_copied(
    store: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = upload(store, project(tmp_path / "p1", "one"))
    second = upload(store, project(tmp_path / "p2", "two"))
    cache = BundleCache(tmp_path / "cache", max_bundles=1)

    copying, release = threading.Event(), threading.Event()
    copy_tree = bundle_cache._copy_tree  # noqa: SLF001 - held open to test eviction

    def slow_copy(tree: Path, dest: Path) -> None:
        if dest.name == "slow":
            copying.set()
            release.wait(30)
        copy_tree(tree, dest)

    monkeypatch.setattr(bundle_cache, "_copy_tree", slow_copy)
    slow = threading.Thread(target=cache.copy_into, args=(first, tmp_path / "slow"))
    slow.start()
    assert copying.wait(30)
    cache.copy_into(second, tmp_path / "other")  # over the cap, but the first is in use
    assert len(list((tmp_path / "cache").iterdir())) == 2
    release.set()
    slow.join(30)
    assert (tmp_path / "slow" / "pkg" / "data.txt").read_text() == "one"

    third = upload(store, project(tmp_path / "p3", "three"))
    cache.copy_into(third, tmp_path / "third")  # now the least recent ones go
    assert len(list((tmp_path / "cache").iterdir())) == 1


def plant(module: Path) -> None:
    """Replace `module` with other code, as someone who can write its directory would (it is
    read-only, so not in place)."""
    module.unlink()
    module.write_text("TEXT = 'planted'\n")


def test_a_previous_agents_trees_are_not_trusted(store: LocalBlobStore, tmp_path: Path) -> None:
    uri = upload(store, project(tmp_path / "p", "genuine"))
    BundleCache(tmp_path / "cache").copy_into(uri, tmp_path / "one")
    for planted in (tmp_path / "cache").glob("*/tasks.py"):
        plant(planted)

    BundleCache(tmp_path / "cache").copy_into(uri, tmp_path / "two")
    assert (tmp_path / "two" / "tasks.py").read_text() == "TEXT = 'genuine'\n"


def test_a_copy_made_ahead_goes_whole_to_one_attempt_and_is_made_from_the_checked_tree(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    uri = upload(store, project(tmp_path / "p", "genuine"))
    cache = BundleCache(tmp_path / "cache", spares=tmp_path / "spares")
    cache.copy_into(uri, tmp_path / "one")
    (tmp_path / "one" / "pkg" / "data.txt").write_text("changed by a task")

    cache.prepare_spare(uri)
    cache.prepare_spare(uri)  # one is waiting already: no second
    (spare,) = (tmp_path / "spares").iterdir()
    inode = spare.stat().st_ino
    cache.copy_into(uri, tmp_path / "two")
    cache.copy_into(uri, tmp_path / "three")  # none waiting now: copied as before

    assert (tmp_path / "two").stat().st_ino == inode  # moved, not copied again
    assert (tmp_path / "three").stat().st_ino != inode
    assert not any((tmp_path / "spares").iterdir())
    for copy in ("two", "three"):
        assert (tmp_path / copy / "pkg" / "data.txt").read_text() == "genuine"


def test_a_bundle_whose_copy_made_ahead_was_taken_counts_as_used_last(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    first = upload(store, project(tmp_path / "p1", "one"))
    second = upload(store, project(tmp_path / "p2", "two"))
    cache = BundleCache(tmp_path / "cache", max_bundles=2, spares=tmp_path / "spares")
    cache.copy_into(first, tmp_path / "a")
    cache.copy_into(second, tmp_path / "b")
    cache.prepare_spare(first)
    cache.copy_into(first, tmp_path / "a2")  # the copy made ahead: the first is used last

    cache.copy_into(upload(store, project(tmp_path / "p3", "three")), tmp_path / "c")

    Path(first.removeprefix("file://")).unlink()  # kept: not downloaded again
    cache.copy_into(first, tmp_path / "a3")
    assert (tmp_path / "a3" / "tasks.py").read_text() == "TEXT = 'one'\n"
    Path(second.removeprefix("file://")).unlink()  # evicted: it would be downloaded again
    with pytest.raises(FleetflowError, match="not found"):
        cache.copy_into(second, tmp_path / "b2")


def test_no_copy_is_made_ahead_of_a_bundle_the_cache_does_not_hold(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    uri = upload(store, project(tmp_path / "p", "genuine"))
    cache = BundleCache(tmp_path / "cache", spares=tmp_path / "spares")

    cache.prepare_spare(uri)  # never downloads: only a bundle an attempt used is copied ahead
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "spares").exists()

    BundleCache(tmp_path / "cache").copy_into(uri, tmp_path / "one")
    BundleCache(tmp_path / "cache").prepare_spare(uri)  # without a place for spares: none
    assert not (tmp_path / "spares").exists()


def test_an_evicted_bundles_copy_made_ahead_goes_with_it_and_a_new_agent_trusts_none(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    first = upload(store, project(tmp_path / "p1", "one"))
    second = upload(store, project(tmp_path / "p2", "two"))
    cache = BundleCache(tmp_path / "cache", max_bundles=1, spares=tmp_path / "spares")
    cache.copy_into(first, tmp_path / "a")
    cache.prepare_spare(first)
    assert len(list((tmp_path / "spares").iterdir())) == 1

    cache.copy_into(second, tmp_path / "b")  # the first bundle is evicted
    assert not any((tmp_path / "spares").iterdir())

    cache.prepare_spare(second)
    for planted in (tmp_path / "spares").glob("*/tasks.py"):
        plant(planted)
    cache = BundleCache(tmp_path / "cache", spares=tmp_path / "spares")
    assert not (tmp_path / "spares").exists()
    cache.copy_into(second, tmp_path / "c")
    assert (tmp_path / "c" / "tasks.py").read_text() == "TEXT = 'two'\n"

    cache.prepare_spare(second)
    cache.drop_spares()
    assert not (tmp_path / "spares").exists()
