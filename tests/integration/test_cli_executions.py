"""The scriptable, watchable CLI against a real stack: `--json` with nothing but JSON on stdout,
exit statuses a script can branch on, `executions wait`, `executions outputs --download`,
`executions logs --follow`, `workflows list|get|versions`, and what another tenant's token gets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetflow import Directory, File
from fleetflow.client import ApiError
from fleetflow.errors import FleetflowError
from fleetflow.loader import load_workflow
from tests.integration.stack import FLEETFLOW, Stack

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "watching.py"
MODEL = bytes(range(256)) * 4
HINT = "`fleetflow executions list` shows recent ones"


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    """stdout as one JSON document: nothing else may be printed there."""
    return json.loads(result.stdout)


def ok(result: subprocess.CompletedProcess[str], stack: Stack) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{stack.logs()}"
    return result


def cli_as(stack: Stack, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`fleetflow ARGS` with another principal's token."""
    return subprocess.run(
        [FLEETFLOW, *args],
        env={**os.environ, **stack.env, "FLEETFLOW_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_remote_run_as_json_then_its_outputs_downloaded(stack: Stack, tmp_path: Path) -> None:
    run = ok(stack.cli("run", "--remote", "--json", str(WORKFLOWS), "artifacts", "--n", "2"), stack)
    final = as_json(run)
    assert final["status"] == "SUCCEEDED" and final["workflow"] == "watching.artifacts"
    assert "registered watching.artifacts" in run.stderr
    execution_id = final["id"]

    listed = as_json(ok(stack.cli("executions", "list", "--json", "--limit", "5"), stack))
    assert execution_id in [item["id"] for item in listed]
    got = as_json(ok(stack.cli("executions", "get", execution_id, "--json"), stack))
    assert got["outputs"] == final["outputs"]
    outputs = as_json(ok(stack.cli("executions", "outputs", execution_id, "--json"), stack))
    assert outputs == final["outputs"]

    target = tmp_path / "results"
    downloaded = ok(
        stack.cli("executions", "outputs", execution_id, "--download", str(target)), stack
    )
    (line,) = downloaded.stdout.splitlines()  # one line of JSON, for scripts
    local = json.loads(line)
    assert (target / "model" / "model.bin").read_bytes() == MODEL
    assert (target / "data" / "a.txt").read_text() == "alpha\n"
    assert (target / "data" / "sub" / "b.txt").read_text() == "beta\n"
    assert [(target / "shards" / str(i) / f"shard-{i}.txt").read_text() for i in (0, 1)] == [
        "shard 0\n",
        "shard 1\n",
    ]
    assert (target / "notes" / "text" / "notes.md").read_text() == "# notes\n"
    assert local["model"] == {
        "uri": (target / "model" / "model.bin").resolve().as_uri(),
        "name": "model.bin",
    }
    assert local["data"] == {"uri": (target / "data").resolve().as_uri()}
    assert "downloaded 6 files to" in downloaded.stderr

    # The Python client: the same files, as the workflow's own types.
    wf, _ = load_workflow(WORKFLOWS, "artifacts")
    with stack.client() as client:
        artifacts = client.outputs(execution_id, wf, download_to=tmp_path / "typed")
    assert isinstance(artifacts.model, File) and artifacts.model.path.read_bytes() == MODEL
    assert isinstance(artifacts.data, Directory)
    assert sorted(p.name for p in artifacts.data.files()) == ["a.txt", "b.txt"]
    assert [s.path.read_text() for s in artifacts.shards] == ["shard 0\n", "shard 1\n"]
    assert artifacts.notes.text.path.read_text() == "# notes\n"


def test_workflows_can_be_listed_and_inspected(stack: Stack) -> None:
    registered = ok(stack.cli("register", "--json", str(WORKFLOWS), "chorus"), stack)
    version = as_json(registered)
    assert version["name"] == "watching.chorus" and version["bundle"]["digest"]
    assert "registered watching.chorus" in registered.stderr
    listed = as_json(ok(stack.cli("workflows", "list", "--json"), stack))
    assert {"name": "watching.chorus", "version": version["version"]}.items() <= next(
        w for w in listed if w["name"] == "watching.chorus"
    ).items()
    shown = as_json(ok(stack.cli("workflows", "get", "watching.chorus", "--json"), stack))
    assert [n["id"] for n in shown["spec"]["nodes"]] == ["n0-indices", "n1-chatter"]
    versions = as_json(ok(stack.cli("workflows", "versions", "watching.chorus", "--json"), stack))
    assert version["version"] in [v["version"] for v in versions]

    table = ok(stack.cli("workflows", "get", "watching.chorus"), stack).stdout
    assert re.search(r"^\s*n\s+int\s+3\s*$", table, re.M), table
    assert re.search(r"n1-chatter\s+watching\.chatter \(map\)\s+1 CPU", table), table
    rows = ok(stack.cli("workflows", "list"), stack).stdout
    assert re.search(rf"watching\.chorus\s+{version['version']}\s+\S+ \S+ UTC\s+\(n: int", rows)
    missing = stack.cli("workflows", "get", "watching.nothing")
    assert missing.returncode == 1
    assert "`fleetflow workflows list` shows the registered ones" in missing.stderr


def test_exit_statuses_follow_the_execution(stack: Stack) -> None:
    failed = stack.cli("run", "--remote", str(WORKFLOWS), "doomed", "--message", "bad row 7")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert re.search(r"error: execution ex-\w+ FAILED", failed.stderr)
    assert "RuntimeError: bad row 7" in failed.stdout
    # The failed attempts' last output lines, under their progress line.
    assert "    | about to fail: bad row 7" in failed.stdout, failed.stdout
    execution_id = re.findall(r"execution (ex-\w+)", failed.stderr)[0]
    waited = stack.cli("executions", "wait", execution_id, "--json")
    assert waited.returncode == 1 and as_json(waited)["status"] == "FAILED"
    no_outputs = stack.cli("executions", "outputs", execution_id)
    assert (
        no_outputs.returncode == 1
        and "is FAILED: RuntimeError: bad row 7; it has no outputs" in (no_outputs.stderr)
    )

    started = ok(
        stack.cli("run", "--remote", "--no-wait", "--json", str(WORKFLOWS), "drowsy"), stack
    )
    sleeper = as_json(started)["id"]
    still = stack.cli("executions", "wait", sleeper, "--timeout", "0.5")
    assert still.returncode == 124, still.stdout + still.stderr
    assert f"it keeps running: fleetflow executions wait {sleeper}" in still.stderr
    cancelled = as_json(ok(stack.cli("executions", "cancel", sleeper, "--json"), stack))
    assert cancelled["id"] == sleeper
    after = stack.cli("executions", "wait", sleeper)
    assert after.returncode == 1 and f"execution {sleeper} CANCELLED" in after.stderr

    unknown = stack.cli("executions", "wait", "ex-nothing")
    assert unknown.returncode == 1 and HINT in unknown.stderr
    for usage in (("executions", "wait"), ("executions", "list", "--status", "DONE")):
        assert stack.cli(*usage).returncode == 2, usage


def test_logs_follow_the_execution_to_its_end(stack: Stack) -> None:
    chorus = stack.launch(WORKFLOWS, "chorus", n=3, lines=2)
    followed = ok(stack.cli("executions", "logs", chorus, "--follow"), stack)
    lines = followed.stdout.splitlines()
    expected = {f"n1-chatter[{i}] | element {i} says {k}" for i in range(3) for k in range(2)}
    assert expected <= set(lines), followed.stdout
    for i in range(3):  # each element's lines in the order printed
        mine = [line for line in lines if line.startswith(f"n1-chatter[{i}] | element")]
        assert mine == [f"n1-chatter[{i}] | element {i} says {k}" for k in range(2)]
    assert followed.stderr.strip().endswith(f"execution {chorus} SUCCEEDED")

    as_lines = ok(stack.cli("executions", "logs", chorus, "--follow", "--json"), stack).stdout
    records = [json.loads(line) for line in as_lines.splitlines()]
    said = [r for r in records if " says " in r["text"]]  # the runtime's own lines too
    assert {(r["map_index"], r["text"]) for r in said} == {
        (i, f"element {i} says {k}") for i in range(3) for k in range(2)
    }
    assert all(r["node_id"] == "n1-chatter" and r["attempt_number"] == 1 for r in said)

    # One source: the lines as printed, nothing added.
    monologue = stack.launch(WORKFLOWS, "monologue", lines=3)
    single = ok(stack.cli("executions", "logs", monologue, "-f"), stack)
    assert [line for line in single.stdout.splitlines() if line.startswith("line")] == [
        "line 0",
        "line 1",
        "line 2",
    ]
    assert not any(line.startswith("n0-speak") for line in single.stdout.splitlines())
    stored = ok(stack.cli("executions", "logs", monologue, "--json"), stack).stdout
    texts = [json.loads(line)["text"] for line in stored.splitlines()]
    assert [text for text in texts if text.startswith("line ")] == [
        "line 0",
        "line 1",
        "line 2",
    ]


def test_another_tenant_reads_none_of_it(stack: Stack, tmp_path: Path) -> None:
    execution_id = stack.launch(WORKFLOWS, "artifacts", n=1)
    with stack.client() as admin:
        assert admin.wait_for_execution(execution_id, timeout=120).status == "SUCCEEDED"
        admin.admin.create_tenant("rival")
        rival = admin.admin.create_user("rival", "mallory", "tenant-admin").token
    with stack.client(token=rival) as client:
        for call in (
            lambda: client.executions.output(execution_id, "model"),
            lambda: client.executions.download_output_file(
                execution_id, "model", "model.bin", tmp_path / "m"
            ),
            lambda: client.download_outputs(execution_id, tmp_path / "stolen"),
            lambda: list(client.follow_logs(execution_id, poll_interval=0)),
            lambda: client.workflows.get("watching.artifacts"),
            lambda: client.workflows.versions("watching.artifacts"),
        ):
            with pytest.raises(ApiError) as refused:
                call()
            assert refused.value.status_code == 404
        assert client.workflows.list(latest_only=True) == []
    assert not (tmp_path / "m").exists() and not (tmp_path / "stolen").exists()
    for args in (
        ("executions", "outputs", execution_id, "--download", str(tmp_path / "cli")),
        ("executions", "logs", execution_id, "--follow"),
        ("executions", "wait", execution_id),
    ):
        answer = cli_as(stack, rival, *args)
        assert answer.returncode == 1, args
        assert f"execution {execution_id} not found" in answer.stderr and HINT in answer.stderr
        assert answer.stdout == ""
    assert not (tmp_path / "cli").exists()


def test_executions_are_listed_by_who_launched_them_and_when(stack: Stack) -> None:
    """`executions list --launched-by/--since/--until` and `Client.executions.list` filter as
    the API does; a time that is neither a duration nor ISO 8601 is a usage error (exit 2)."""
    theirs = stack.launch(WORKFLOWS, "artifacts", n=1)
    with stack.client() as admin:
        who = f"lister-{os.getpid()}"
        token = admin.admin.create_user("default", who, "developer").token
        before = admin.executions.get(theirs)
    with stack.client(token=token) as dev:
        mine = str(dev.executions.create("watching.artifacts", {"n": 1}).id)
        mine_created = dev.executions.get(mine).created_at
        assert [e.id for e in dev.executions.list(launched_by=who)] == [mine]
        # A datetime (naive: UTC) or ISO text; created_before excludes that very moment.
        after_theirs = dev.executions.list(created_after=mine_created.replace(tzinfo=None))
        assert mine in [e.id for e in after_theirs] and theirs not in [e.id for e in after_theirs]
        up_to_mine = [e.id for e in dev.executions.list(created_before=mine_created.isoformat())]
        assert theirs in up_to_mine and mine not in up_to_mine
    assert before.launched_by and before.launched_by != who

    def ids(*args: str) -> list[str]:
        listed = as_json(ok(stack.cli("executions", "list", "--json", *args), stack))
        return [item["id"] for item in listed]

    assert ids("--launched-by", who) == [mine]
    assert ids("--launched-by", who, "--since", "1h") == [mine]
    assert ids("--launched-by", who, "--until", "1h") == []
    assert ids("--launched-by", who, "--since", mine_created.isoformat()) == [mine]
    assert ids("--launched-by", who, "--until", mine_created.isoformat()) == []
    window = ids("--since", before.created_at.isoformat(), "--until", mine_created.isoformat())
    assert theirs in window and mine not in window
    empty = ok(stack.cli("executions", "list", "--launched-by", "nobody-at-all"), stack)
    assert "no executions (launched by nobody-at-all) on" in empty.stdout

    for args, flag in (
        (("--since", "yesterday"), "--since"),
        (("--until", "2026-13-45"), "--until"),
        (("--since", "1h", "--until", "2h"), "--until"),
    ):
        bad = stack.cli("executions", "list", *args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert f"Invalid value for '{flag}'" in bad.stderr and "Traceback" not in bad.stderr
        assert bad.stdout == ""


def test_file_inputs_are_read_back_through_the_control_plane(stack: Stack, tmp_path: Path) -> None:
    """`executions inputs ID --download DIR` and `Client.download_inputs` fetch the `File`
    inputs a run uploaded, as `executions outputs --download` fetches outputs; another tenant
    gets the answer of an execution that does not exist."""
    given = tmp_path / "rows.csv"
    given.write_bytes(b"a,b\n1,2\n" * 100)
    run = ok(
        stack.cli(
            "run",
            "--remote",
            "--no-wait",
            "--json",
            str(WORKFLOWS),
            "measure",
            "--data",
            str(given),
        ),
        stack,
    )
    execution_id = as_json(run)["id"]

    listed = as_json(ok(stack.cli("executions", "inputs", execution_id, "--json"), stack))
    assert listed["data"]["uri"] != given.as_uri()  # an upload in the control plane's store
    fetched = ok(
        stack.cli("executions", "inputs", execution_id, "--download", str(tmp_path / "got")),
        stack,
    )
    local = json.loads(fetched.stdout)["data"]["uri"]
    assert local.startswith("file://") and "downloaded 1 file to" in fetched.stderr
    (copy,) = (tmp_path / "got" / "data").iterdir()
    assert copy.read_bytes() == given.read_bytes() and Path(local[len("file://") :]) == copy

    with stack.client() as admin:
        one = admin.executions.input(execution_id, "data")
        assert one.type == "File" and [b.files for b in one.blobs] == [[copy.name]]
        downloaded = admin.download_inputs(execution_id, tmp_path / "api")
        assert [p.read_bytes() for p in downloaded.files] == [given.read_bytes()]
        assert downloaded.inputs["data"]["uri"] == downloaded.files[0].resolve().as_uri()
        with pytest.raises(FleetflowError, match="has no input 'model' \\(its inputs: data\\)"):
            admin.download_inputs(execution_id, tmp_path / "none", names=["model"])
        admin.admin.create_tenant("rival-inputs")
        rival = admin.admin.create_user("rival-inputs", "eve", "tenant-admin").token
    with stack.client(token=rival) as client:
        for call in (
            lambda: client.executions.input(execution_id, "data"),
            lambda: client.download_inputs(execution_id, tmp_path / "stolen"),
            lambda: client.executions.download_input_file(
                execution_id, "data", copy.name, tmp_path / "stolen.csv"
            ),
        ):
            with pytest.raises(ApiError) as refused:
                call()
            assert refused.value.status_code == 404
    answer = cli_as(stack, rival, "executions", "inputs", execution_id, "--download", "x")
    assert answer.returncode == 1 and f"execution {execution_id} not found" in answer.stderr
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "stolen.csv").exists()
