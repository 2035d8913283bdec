"""A workflow defined in notebook cells runs remotely: a real notebook executed by `nbclient`
in an IPython kernel, and an IPython session, against a real stack; its code is captured by
value (`fleetflow.interactive`), its outputs equal a local run's in the same session, and a
failure's traceback shows the cell's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stack import Stack

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

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


SESSION = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance(colors="nocolor")
for cell in json.load(sys.stdin):
    if not shell.run_cell(cell, store_history=True).success:
        sys.exit(3)
"""

CELLS = [
    "import json\nfrom fleetflow import Client, task, workflow",
    "LIMIT = 10",
    """@task
def checked(n: int) -> int:
    if n > LIMIT:
        raise ValueError(f"{n} is over the limit")
    return n * 2""",
    """@workflow
def pipeline(n: int) -> int:
    return checked(n=checked(n=n))""",
    """with Client() as client:
    good = client.run(pipeline, n=4, timeout=120)
    bad = client.run(pipeline, n=7, timeout=120)
print("REPORT " + json.dumps({
    "local": pipeline(n=4),
    "good": [good.status, good.outputs],
    "bad": [bad.status, bad.error],
}))""",
]


def test_an_ipython_session_runs_remotely_and_a_failure_shows_the_cells_code(
    stack: Stack, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "FLEETFLOW_API_URL": stack.api_url,
        "FLEETFLOW_TOKEN": stack.admin_token,
        "FLEETFLOW_CONFIG": str(tmp_path / "no-config.json"),
    }
    env.pop("FLEETFLOW_TENANT", None)
    done = subprocess.run(
        [sys.executable, "-c", SESSION],
        input=json.dumps(CELLS),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, f"{done.stdout}\n{done.stderr}\n{stack.logs()}"
    report = json.loads(lines[-1].removeprefix("REPORT "))
    assert report["good"] == ["SUCCEEDED", report["local"]] and report["local"] == 16
    status, error = report["bad"]
    assert status == "FAILED"
    assert error["message"] == "ValueError: 14 is over the limit"
    # The traceback is of the captured cell code, with its lines.
    assert 'raise ValueError(f"{n} is over the limit")' in error["traceback"]
    assert "fleetflow_interactive_" in error["traceback"]
