"""`numpy.ndarray` and `pandas.DataFrame` values: stored as `.npy` / Parquet files named by a
File's literal, round-tripping exactly, locally and through the blob store; a hostile `.npy`
is refused, never unpickled; the SDK imports neither library until a value needs it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra import pandas as hpd

from control_plane.agent_api.mapping import UnleasableAttemptError, input_blobs
from fleetflow import File, LiteralValidationError, task, workflow
from fleetflow.cache import LocalCache
from fleetflow.errors import UnsupportedTypeError, WorkflowCompileError
from fleetflow.files import blob_context, blob_literals, has_blobs, map_blob_literals
from fleetflow.ir import LiteralType, TaskSpec, TypedInterface, TypeKind, Variable
from fleetflow.storage import LocalBlobStore, read_uri
from fleetflow.types import is_assignable, literal_type_of, to_literal, to_python, validate_literal

ROOT = Path(__file__).resolve().parents[3]

# ------------------------------------------------------------------------------- the types


def test_the_types_and_their_literals() -> None:
    assert literal_type_of(np.ndarray) == LiteralType(kind=TypeKind.NDARRAY)
    assert literal_type_of(npt.NDArray[np.float64]) == LiteralType(kind=TypeKind.NDARRAY)
    assert literal_type_of(pd.DataFrame) == LiteralType(kind=TypeKind.DATAFRAME)
    assert literal_type_of(list[np.ndarray]).describe() == "list[ndarray]"
    assert literal_type_of(dict[str, pd.DataFrame]).describe() == "dict[str, DataFrame]"
    # Neither is a File, nor the other: a value of one is never bound to another.
    kinds = [literal_type_of(t) for t in (np.ndarray, pd.DataFrame, File)]
    for source in kinds:
        for target in kinds:
            assert is_assignable(source, target) == (source == target)
    # The literal has a File's shape and is checked as one.
    good = {"uri": "s3://bucket/x/files/abc/array.npy", "name": "array.npy"}
    assert validate_literal(good, kinds[0]) == good
    with pytest.raises(LiteralValidationError, match=r"^a: expected ndarray, got"):
        validate_literal([1, 2], kinds[0], "a")
    with pytest.raises(LiteralValidationError, match=r"^a\.name: expected a file name"):
        validate_literal({"uri": "file:///x", "name": "../x"}, kinds[1], "a")


def test_a_union_with_a_file_records_its_variant() -> None:
    array = np.arange(3)
    literal = to_literal(array, np.ndarray | File)
    assert literal["variant"] == "ndarray"
    assert np.array_equal(to_python(literal, np.ndarray | File), array)


# ---------------------------------------------------------------------- round trips: arrays

DTYPES = st.sampled_from(
    [
        np.dtype(t)
        for t in (
            "bool",
            "int8",
            "int64",
            "uint16",
            "float16",
            "float32",
            ">f8",
            "complex128",
            "U5",
            "S3",
            "datetime64[ns]",
            "timedelta64[s]",
            [("x", "<i4"), ("y", "<f8")],
        )
    ]
)
ARRAYS = DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0))
)
FORTRAN = st.booleans()


def same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray
    assert (b.dtype, b.shape) == (a.dtype, a.shape)
    assert b.tobytes() == a.tobytes()  # bit for bit: NaNs, -0.0, byte order


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=ARRAYS, fortran=FORTRAN)
def test_arrays_round_trip_locally(array: np.ndarray, fortran: bool) -> None:
    if fortran:
        array = np.asfortranarray(array)
    literal = to_literal(array, np.ndarray)
    assert literal["name"] == "array.npy" and literal["uri"].startswith("file://")
    same_array(array, to_python(literal, np.ndarray))
    assert to_literal(np.copy(array), np.ndarray) == literal  # content-addressed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=ARRAYS)
def test_arrays_round_trip_through_the_blob_store(array: np.ndarray, tmp_path_factory: Any) -> None:
    tmp = tmp_path_factory.mktemp("blobs")
    store = LocalBlobStore(tmp / "blobs")
    with blob_context(store, "executions/e1/n0/1", tmp / "downloads0"):
        literal = to_literal(array, np.ndarray)
    assert literal["uri"].startswith(store.uri("executions/e1/n0/1/files/"))
    assert literal["uri"].endswith("/array.npy")
    with blob_context(store, "executions/e1/n1/1", tmp / "downloads1"):
        same_array(array, to_python(literal, np.ndarray))


# ------------------------------------------------------------------ round trips: DataFrames

FRAMES = hpd.data_frames(
    columns=[
        hpd.column("count", dtype=np.int64),
        hpd.column("score", dtype=np.float64),
        hpd.column("flag", dtype=bool),
        hpd.column("label", elements=st.text(max_size=6), dtype=str),
        hpd.column(
            "at",
            elements=st.datetimes(
                min_value=pd.Timestamp("1970-01-01").to_pydatetime(),
                max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
            ),
            dtype="datetime64[ns]",
        ),
    ],
    index=hpd.range_indexes(max_size=8) | hpd.indexes(dtype=np.int64, max_size=8),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=FRAMES, categorical=st.booleans())
def test_dataframes_round_trip(
    frame: pd.DataFrame, categorical: bool, tmp_path_factory: Any
) -> None:
    if categorical and len(frame):  # (an empty categorical reads back as object: pyarrow's)
        frame = frame.assign(label=frame["label"].astype("category"))
    back = to_python(to_literal(frame, pd.DataFrame), pd.DataFrame)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)

    tmp = tmp_path_factory.mktemp("blobs")
    store = LocalBlobStore(tmp / "blobs")
    with blob_context(store, "executions/e1/n0/1", tmp / "downloads0"):
        literal = to_literal(frame, pd.DataFrame)
    assert literal["name"] == "dataframe.parquet"
    with blob_context(store, "executions/e1/n1/1", tmp / "downloads1"):
        pd.testing.assert_frame_equal(to_python(literal, pd.DataFrame), frame, check_exact=True)


def test_dataframes_with_nullable_columns_and_a_named_index_round_trip() -> None:
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "s": ["a", None, "c"],
            "when": pd.to_datetime(["2024-01-01", None, "2024-03-01"], utc=True),
            "ratio": [0.5, float("nan"), -0.0],
        },
        index=pd.Index(["x", "y", "z"], name="key"),
    )
    pd.testing.assert_frame_equal(to_python(to_literal(frame, pd.DataFrame), pd.DataFrame), frame)


# -------------------------------------------------------------------- refused and hostile


def test_values_that_cannot_be_stored_are_refused_clearly() -> None:
    with pytest.raises(LiteralValidationError, match=r"^out: expected numpy\.ndarray, got list"):
        to_literal([1, 2], np.ndarray, "out")
    with pytest.raises(LiteralValidationError, match=r"^out: .*dtype object holds Python objects"):
        to_literal(np.array([1, "a", None], dtype=object), np.ndarray, "out")
    with pytest.raises(LiteralValidationError, match=r"subclass MaskedArray.*plain ndarray"):
        to_literal(np.ma.masked_array([1, 2], mask=[0, 1]), np.ndarray, "out")
    with pytest.raises(LiteralValidationError, match=r"expected pandas\.DataFrame, got Series"):
        to_literal(pd.Series([1]), pd.DataFrame, "out")
    mixed = pd.DataFrame({"o": [1, "a"]})
    with pytest.raises(LiteralValidationError, match=r"^out: cannot store .* as a Parquet file"):
        to_literal(mixed, pd.DataFrame, "out")


class Boom:
    """Unpickling this would write `MARKER`: a hostile .npy's payload."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(os.environ["FLEETFLOW_TEST_MARKER"]), "unpickled!"))


def test_a_hostile_npy_is_refused_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("FLEETFLOW_TEST_MARKER", str(marker))
    hostile = tmp_path / "array.npy"
    with hostile.open("wb") as out:
        np.save(out, np.array([Boom()], dtype=object), allow_pickle=True)
    literal = {"uri": hostile.as_uri(), "name": "array.npy"}
    with pytest.raises(LiteralValidationError, match=r"^x: .* is not a readable \.npy file"):
        to_python(literal, np.ndarray, "x")
    assert not marker.exists()

    store = LocalBlobStore(tmp_path / "blobs")  # the same through the blob store
    uri = store.upload("executions/e1/n0/1/files/whatever/array.npy", hostile)
    with blob_context(store, "executions/e1/n1/1", tmp_path / "downloads"):
        with pytest.raises(LiteralValidationError, match=r"not a readable \.npy file"):
            to_python({"uri": uri, "name": "array.npy"}, np.ndarray, "x")
    assert not marker.exists()


def test_files_of_the_wrong_format_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an array at all")
    literal = {"uri": junk.as_uri(), "name": "junk.bin"}
    with pytest.raises(LiteralValidationError, match=r"^x: .* is not a readable \.npy file"):
        to_python(literal, np.ndarray, "x")
    with pytest.raises(LiteralValidationError, match=r"^x: .* is not a readable Parquet file"):
        to_python(literal, pd.DataFrame, "x")
    frame = to_literal(pd.DataFrame({"a": [1]}), pd.DataFrame)
    with pytest.raises(LiteralValidationError, match=r"not a readable \.npy file"):
        to_python(frame, np.ndarray, "x")
    two = tmp_path / "two.npy"
    with two.open("wb") as out:
        np.save(out, np.arange(2))
        np.save(out, np.arange(3))
    with pytest.raises(LiteralValidationError, match=r"more than one array"):
        to_python({"uri": two.as_uri(), "name": "two.npy"}, np.ndarray, "x")


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    literal = to_literal(pd.DataFrame({"a": [1]}), pd.DataFrame)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # imports of it fail, as if absent
    with pytest.raises(UnsupportedTypeError, match=r"needs pyarrow: pip install pyarrow"):
        literal_type_of(Annotated[pd.DataFrame, "not cached yet"])
    with pytest.raises(LiteralValidationError, match=r"^x: .*pip install pyarrow"):
        to_literal(pd.DataFrame({"a": [1]}), pd.DataFrame, "x")
    with pytest.raises(LiteralValidationError, match=r"^x: .*needs pyarrow.*pip install pyarrow"):
        to_python(literal, pd.DataFrame, "x")


def test_import_fleetflow_and_a_local_run_import_neither_library() -> None:
    code = (
        "import sys\n"
        "from fleetflow import task, workflow\n"
        "@task\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
        "@workflow\n"
        "def flow(x: int) -> int:\n"
        "    return double(x=double(x=x))\n"
        "assert flow(x=3) == 12\n"
        "loaded = sorted({'numpy', 'pandas', 'pyarrow'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'sdk'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- blob walkers


@dataclass
class Split:
    train: pd.DataFrame
    weights: list[np.ndarray]
    note: str


def test_blob_walkers_treat_them_as_files() -> None:
    kind = literal_type_of(Split)
    assert has_blobs(kind) and has_blobs(literal_type_of(np.ndarray))
    value = Split(train=pd.DataFrame({"a": [1]}), weights=[np.zeros(2), np.ones(3)], note="n")
    literal = to_literal(value, Split)
    found = list(blob_literals(literal, kind, "split"))
    assert [(path, k) for path, k, _ in found] == [
        ("split.train", TypeKind.DATAFRAME),
        ("split.weights[0]", TypeKind.NDARRAY),
        ("split.weights[1]", TypeKind.NDARRAY),
    ]
    renamed = map_blob_literals(literal, kind, lambda k, blob: {**blob, "kind": k.value})
    assert renamed["train"]["kind"] == "file" and renamed["weights"][1]["kind"] == "file"


# ------------------------------------------------------------------------ a local workflow


@task
def make_data(n: int) -> Split:
    frame = pd.DataFrame(
        {"x": np.arange(n, dtype=np.float64), "label": [f"r{i}" for i in range(n)]}
    )
    return Split(train=frame, weights=[np.eye(2) * n, np.arange(n)], note=f"{n} rows")


@task
def fit(split: Split) -> np.ndarray:
    return split.train["x"].to_numpy() * split.weights[0][0, 0]


@task
def summarise(split: Split, fitted: np.ndarray) -> pd.DataFrame:
    return split.train.assign(fitted=fitted).set_index("label")


@workflow
def array_flow(n: int) -> pd.DataFrame:
    split = make_data(n=n)
    return summarise(split=split, fitted=fit(split=split))


def test_a_local_workflow_passes_arrays_and_frames_between_tasks() -> None:
    out = array_flow(n=3)
    expected = pd.DataFrame(
        {"x": [0.0, 1.0, 2.0], "fitted": [0.0, 3.0, 6.0]},
        index=pd.Index(["r0", "r1", "r2"], name="label"),
    )
    pd.testing.assert_frame_equal(out, expected)


@task
def scale(a: np.ndarray, by: float) -> np.ndarray:
    return a * by


@workflow
def scaled(a: np.ndarray, by: float) -> np.ndarray:
    return scale(a=a, by=by)


def test_array_workflow_inputs_locally_and_from_the_cli(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    same_array(array * 2, scaled(a=array, by=2.0).astype(np.int32))
    literal = scaled.inputs_to_literals({"a": array, "by": 2.0})["a"]
    assert literal["name"] == "array.npy"
    same_array(array, np.load(Path(literal["uri"].removeprefix("file://"))))
    saved = tmp_path / "input.npy"
    np.save(saved, array)
    parsed = scaled.parse_cli_inputs({"a": str(saved), "by": "3"})
    same_array(array, parsed["a"])
    with pytest.raises(Exception, match=r"input 'a': expected ndarray, got .*not a readable"):
        scaled.parse_cli_inputs({"a": str(tmp_path / "absent.npy"), "by": "3"})


def test_an_array_is_not_bound_to_a_file_parameter() -> None:
    @task
    def size(file: File) -> int:
        return file.path.stat().st_size

    with pytest.raises(WorkflowCompileError, match=r"ndarray"):

        @workflow
        def wrong(a: np.ndarray) -> int:
            return size(file=a)  # type: ignore[arg-type]


def test_read_back_is_a_copy_the_task_may_change(tmp_path: Path) -> None:
    literal = to_literal(np.zeros(3), np.ndarray)
    first = to_python(literal, np.ndarray)
    first[0] = 9.0  # writable, and not shared with the next reader
    assert to_python(literal, np.ndarray)[0] == 0.0
    assert read_uri(literal["uri"])[:6] == b"\x93NUMPY"


CALLS: list[str] = []


@task(cache=True, cache_version="1")
def cached_gram(a: np.ndarray) -> pd.DataFrame:
    CALLS.append("gram")
    return pd.DataFrame(a.T @ a)


@workflow
def gram(a: np.ndarray) -> pd.DataFrame:
    return cached_gram(a=a)


def test_the_local_cache_keys_them_by_content_and_keeps_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    CALLS.clear()
    cache = LocalCache(tmp_path / "cache")
    a = np.arange(6.0).reshape(3, 2)
    first = gram.outputs_to_python(gram.run_local({"a": a}, cache=cache))
    # An equal array (another object) hits; the cached output is a copy inside the cache.
    literal = gram.run_local({"a": a.copy()}, cache=cache)["o0"]
    assert CALLS == ["gram"] and cache.hits == 1
    assert Path(literal["uri"].removeprefix("file://")).is_relative_to(tmp_path / "cache")
    pd.testing.assert_frame_equal(gram.outputs_to_python({"o0": literal}), first)
    gram.run_local({"a": a + 1}, cache=cache)
    assert CALLS == ["gram", "gram"]


# ------------------------------------------------------------- what the control plane stages

OWN = "file:///blobs/tenants/acme/"


def _own_only(uri: str) -> str | None:
    return None if uri.startswith(OWN) else "is not its tenant's to read"


@pytest.mark.parametrize("kind", [TypeKind.NDARRAY, TypeKind.DATAFRAME])
def test_a_lease_stages_them_as_files_and_refuses_another_tenants(kind: TypeKind) -> None:
    spec = TaskSpec(
        name="m.f",
        module="m",
        function="f",
        interface=TypedInterface(
            inputs=[
                Variable(
                    name="values", type=LiteralType(kind=TypeKind.LIST, item=LiteralType(kind=kind))
                )
            ]
        ),
    )
    own = {"uri": OWN + "executions/e/n/1/files/a/array.npy", "name": "array.npy"}
    listed = input_blobs({"values": [own]}, spec, _own_only)
    assert [(b.uri, b.file_name, b.directory) for b in listed] == [(own["uri"], "array.npy", False)]
    theirs = {"uri": "file:///blobs/tenants/beta/uploads/files/x/array.npy", "name": "array.npy"}
    with pytest.raises(UnleasableAttemptError, match=r"inputs\.values\[1\] names .*tenant's"):
        input_blobs({"values": [own, theirs]}, spec, _own_only)
    with pytest.raises(UnleasableAttemptError, match=r"inputs\.values\[0\] has no usable file"):
        input_blobs({"values": [{**own, "name": "../x"}]}, spec, _own_only)
