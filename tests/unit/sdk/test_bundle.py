"""Code bundles: reproducible digests, the right files, and refusal of unsafe archives."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from fleetflow.bundle import BundleError, build_bundle, bundle_files, extract_bundle


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    _write(
        root,
        {
            "workflows.py": "X = 1\n",
            "pkg/__init__.py": "",
            "pkg/tasks.py": "def f():\n    return 2\n",
            "data/config.yaml": "lr: 0.1\n",
            # Left out:
            ".env": "SECRET=1\n",
            ".git/config": "[core]\n",
            "pkg/__pycache__/tasks.cpython-311.pyc": "compiled",
            "pkg/stale.pyc": "compiled",
            ".venv/lib/site.py": "",
            "venv/lib/site.py": "",
            "node_modules/x/index.js": "",
            ".hidden/notes.py": "",
        },
    )
    return root


def test_bundle_holds_the_source_tree_without_hidden_or_generated_files(
    project: Path, tmp_path: Path
) -> None:
    _digest, data = build_bundle(project)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        members = tar.getmembers()

    assert names == ["data/config.yaml", "pkg/__init__.py", "pkg/tasks.py", "workflows.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o644)
    }

    dest = tmp_path / "out"
    extract_bundle(data, dest)
    assert (dest / "pkg/tasks.py").read_text() == "def f():\n    return 2\n"
    assert (dest / "data/config.yaml").read_text() == "lr: 0.1\n"
    assert not (dest / ".env").exists()


def test_unchanged_code_has_the_same_digest(project: Path, tmp_path: Path) -> None:
    digest, data = build_bundle(project)

    # Same content elsewhere, written later, with other timestamps and modes.
    copy = tmp_path / "copy"
    for name, path in bundle_files(project):
        _write(copy, {name: path.read_text()})
    os.utime(copy / "workflows.py", (1_000_000, 1_000_000))
    (copy / "pkg/tasks.py").chmod(0o600)
    _write(copy, {"pkg/__pycache__/other.pyc": "x", ".cache/y": "y"})
    assert build_bundle(copy) == (digest, data)

    _write(copy, {"workflows.py": "X = 2\n"})
    assert build_bundle(copy)[0] != digest


def test_symlinks_are_not_packed(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (project / "link.txt").symlink_to(outside)
    (project / "linkdir").symlink_to(tmp_path)

    _digest, data = build_bundle(project)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert not any(n.startswith("link") for n in tar.getnames())


def test_oversized_source_tree_is_refused_clearly(project: Path) -> None:
    _write(project, {"data/big.bin": "x" * 5000})
    with pytest.raises(BundleError, match=r"larger than .*MiB.*data/big.bin"):
        build_bundle(project, max_bytes=4096)


def test_missing_or_empty_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        build_bundle(tmp_path / "nope")
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    with pytest.raises(BundleError, match="no source files"):
        build_bundle(tmp_path / "empty")


def _archive(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tuple):
                info, content = entry
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.addfile(entry)
    return raw.getvalue()


def _file(name: str, content: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def _entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("archive", "reason"),
    [
        (_archive(_file("../evil.py")), "escapes the destination"),
        (_archive(_file("pkg/../../evil.py")), "escapes the destination"),
        (_archive(_file("/tmp/fleetflow-evil.py")), "absolute path"),
        (_archive(_entry("pkg/link", tarfile.SYMTYPE, "/etc/passwd")), "not a regular file"),
        (_archive(_file("a.py"), _entry("b.py", tarfile.LNKTYPE, "a.py")), "not a regular file"),
        (_archive(_entry("dev", tarfile.CHRTYPE)), "not a regular file"),
        (_archive(_entry("fifo", tarfile.FIFOTYPE)), "not a regular file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_unsafe_archives_are_rejected(archive: bytes, reason: str, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=reason):
        extract_bundle(archive, dest)
    assert not (tmp_path / "evil.py").exists()
    assert not Path("/tmp/fleetflow-evil.py").exists()
    assert not (dest / "pkg" / "link").is_symlink()


def test_symlink_then_file_through_it_is_rejected(tmp_path: Path) -> None:
    # The classic two-step escape: a link to outside, then a file written "inside" the link.
    archive = _archive(_entry("escape", tarfile.SYMTYPE, str(tmp_path)), _file("escape/evil.py"))
    with pytest.raises(BundleError):
        extract_bundle(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.py").exists()


def test_unpacked_size_is_bounded(tmp_path: Path) -> None:
    archive = _archive(_file("big.bin", b"\0" * 100_000))
    assert len(archive) < 4096  # compresses well: the bound must apply to the unpacked size
    with pytest.raises(BundleError, match="unpacks to more than"):
        extract_bundle(archive, tmp_path / "dest", max_bytes=4096)


def test_corrupt_data_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a valid code bundle"):
        extract_bundle(b"definitely not a tarball", tmp_path / "dest")
    with pytest.raises(BundleError, match="not a valid code bundle"):
        extract_bundle(gzip.compress(b"not a tar either" * 100), tmp_path / "dest")


def test_plain_tar_with_directory_entries_is_accepted(tmp_path: Path) -> None:
    dir_entry = _entry("./", tarfile.DIRTYPE)
    pkg_entry = _entry("./pkg", tarfile.DIRTYPE)
    archive = _archive(dir_entry, pkg_entry, _file("./pkg/mod.py", b"Y = 3\n"))
    extract_bundle(archive, tmp_path / "dest")
    assert (tmp_path / "dest/pkg/mod.py").read_bytes() == b"Y = 3\n"
