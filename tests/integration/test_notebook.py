"""A workflow defined in notebook cells runs remotely: a real notebook executed by `nbclient`
in an IPython kernel against a real stack; its code is captured by value
(`fleetflow.interactive`) and its outputs equal a local run's in the same kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.stack import Stack

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).parents[1] / "fixtures" / "notebooks" / "remote_run.ipynb"


def test_a_workflow_of_notebook_cells_runs_remotely_with_the_local_outputs(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel inherits the environment: the Client in the notebook reads these.
    monkeypatch.setenv("FLEETFLOW_API_URL", stack.api_url)
    monkeypatch.setenv("FLEETFLOW_TOKEN", stack.admin_token)
    monkeypatch.setenv("FLEETFLOW_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.delenv("FLEETFLOW_TENANT", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"the notebook failed: {exc}\n{stack.logs()}")
    printed = "".join(
        output.get("text", "") for output in notebook.cells[-1].outputs if output.get("name")
    )
    report = json.loads(printed.strip().splitlines()[-1])
    assert report["status"] == "SUCCEEDED", f"{report['error']}\n{stack.logs()}"
    # Typed as the notebook's own dataclass, equal to what the local call returned.
    assert report["outputs_type"] == "Summary"
    assert report["same_as_local"] is True
    assert report["workflow"].startswith("fleetflow_interactive_")
    assert report["workflow"].endswith(".pipeline")
    local = notebook.cells[-2].outputs[0]["data"]["text/plain"]
    assert local == "Summary(total=270, root=16.431676725154983, label='small')"
