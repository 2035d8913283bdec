"""`numpy.ndarray` and `pandas.DataFrame` values through the full stack: uploaded as a
workflow input, stored as `.npy` / Parquet files by the tasks that return them, staged into the
tasks that read them, and downloaded through the outputs API, a remote run gives exactly the
values a local run gives (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "array_flows.py"


def same_result(got: Any, expected: Any) -> None:
    for name in ("scaled", *(f"parts[{i}]" for i in range(len(expected.parts)))):
        a = got.scaled if name == "scaled" else got.parts[int(name[6:-1])]
        b = expected.scaled if name == "scaled" else expected.parts[int(name[6:-1])]
        assert type(a) is np.ndarray, name
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), name
    pd.testing.assert_frame_equal(got.frame, expected.frame, check_exact=True)
    assert got.check == expected.check


def test_arrays_and_dataframes_run_remotely_as_locally(stack: Stack, tmp_path: Path) -> None:
    wf, _ = load_workflow(WORKFLOWS, "arrays")
    weights = np.arange(12, dtype=np.float32).reshape(4, 3)
    local = wf(weights=weights, by=0.5)
    assert local.check.startswith("DataFrame[id:int64,ok:bool,at:datetime64")
    assert local.frame.index.name == "label" and len(local.parts) == 4

    with stack.client() as client:
        result = client.run(wf, timeout=180, weights=weights, by=0.5)
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        same_result(result.outputs, local)
        # The array input was uploaded as its .npy file, as a File input is.
        sent = result.execution.inputs["weights"]
        assert sent["name"] == "array.npy"
        assert sent["uri"].startswith(f"{stack.blob_root}/tenants/default/uploads/files/")
        # Each output names the file the task that made it stored, under that attempt.
        outputs = result.execution.outputs
        assert outputs["scaled"]["name"] == "array.npy"
        assert _attempt_prefix(result, "scale") in outputs["scaled"]["uri"]
        assert outputs["frame"]["name"] == "dataframe.parquet"
        assert _attempt_prefix(result, "join") in outputs["frame"]["uri"]
        # The outputs API lists them as files, and serves their bytes.
        listed = client.executions.output(result.id, "parts")
        assert [(b.kind, b.at, b.path) for b in listed.blobs] == [
            ("file", f"parts[{i}]", f"{i}/array.npy") for i in range(4)
        ]
        frame = client.executions.output(result.id, "frame")
        assert [(b.kind, b.files) for b in frame.blobs] == [("file", ["dataframe.parquet"])]
        # Downloaded through the outputs API, the values are those of the local run.
        downloaded = client.outputs(result.id, wf, download_to=tmp_path / "downloads")
    same_result(downloaded, local)
    saved = tmp_path / "downloads" / "scaled" / "array.npy"
    assert np.array_equal(np.load(saved, allow_pickle=False), local.scaled)


def _attempt_prefix(result: Any, task: str) -> str:
    (attempt,) = [a for a in result.execution.attempts if a.task_name.endswith(f".{task}")]
    return f"/{attempt.node_id}/"
