"""Code bundles from anyone: whatever a tar.gz holds (`..`, absolute names, symlinks and hard
links, devices, oversized members), extraction either refuses it with a BundleError or writes
only regular files and directories inside the destination, within the size bound."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetflow.bundle import BundleError, extract_bundle
from tests.hardening.world import examples

COMPONENTS = st.sampled_from(["a", "b", "..", ".", "", "pkg", "x.py", "ü", "escape", "link"])
NAMES = st.lists(COMPONENTS, min_size=1, max_size=4).map("/".join) | st.sampled_from(
    ["/etc/passwd", "../../outside", "link/../../x", "./a", "a//b", "/"]
)
KINDS = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CHRTYPE,
    ]
)
MEMBERS = st.lists(
    st.tuples(NAMES, KINDS, st.binary(max_size=300), NAMES | st.just("/tmp")), max_size=6
)
LIMIT = 1000


def archive(members: list[tuple[str, bytes, bytes, str]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = link
                tar.addfile(info)
    return buffer.getvalue()


@settings(max_examples=examples(150), deadline=None, suppress_health_check=list(HealthCheck))
@given(members=MEMBERS)
def test_extraction_never_escapes_the_destination(members: list) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside"
        outside.mkdir()
        dest = root / "work"
        dest.mkdir()
        # A link already in the work directory that points out of it.
        (dest / "escape").symlink_to(outside, target_is_directory=True)
        try:
            extract_bundle(archive(members), dest, max_bytes=LIMIT)
        except BundleError:
            pass
        assert list(outside.iterdir()) == []
        total = 0
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path == dest / "escape":
                    continue
                assert not path.is_symlink(), path
                assert path.resolve().is_relative_to(dest.resolve()), path
                assert path.is_dir() or path.is_file(), path
                if path.is_file():
                    total += path.stat().st_size
        assert total <= LIMIT
