"""`GET /api/v1/executions/{id}/inputs/{name}[/files/{path}]`: the bytes of an execution's `File`
inputs, served with the same rights as its outputs: a viewer of the tenant reads them, another
tenant gets the 404 of an execution that does not exist, and an input literal naming a blob
outside the tenant (another tenant's, or one climbing out with `..`) is refused.

The world (app, tokens, registered workflows) is `test_execution_outputs_api.py`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from control_plane.db.models import Execution
from control_plane.db.session import transaction
from tests.integration.test_execution_outputs_api import World, world

__all__ = ["world"]  # the fixture, used by name


def measure(world: World, who: str, uri: str) -> str:
    """An execution of `watching.measure` reading `uri`, started by `who`; its id."""
    with world.client(who) as api:
        body = {"workflow": "watching.measure", "inputs": {"data": {"uri": uri, "name": "d.csv"}}}
        created = api.post("/api/v1/executions", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def record_inputs(world: World, execution_id: str, inputs: dict[str, Any]) -> None:
    """Overwrite the recorded inputs, as a database written before inputs were checked (or a
    tampered one) would hold them."""
    with transaction(world.sessions) as session:
        session.execute(update(Execution).where(Execution.id == execution_id).values(inputs=inputs))


def test_a_file_input_is_listed_and_served_to_a_viewer_of_the_tenant(world: World) -> None:
    upload = world.put("tenants/alpha/uploads/files/y/d.csv", b"a,b\n1,2\n")
    execution_id = measure(world, "alpha-dev", upload)
    base = f"/api/v1/executions/{execution_id}/inputs"
    with world.client("alpha-viewer") as api:  # reading needs only the viewer role
        listed = api.get(f"{base}/data")
        assert listed.status_code == 200, listed.text
        assert listed.json() == {
            "execution_id": execution_id,
            "name": "data",
            "type": "File",
            "value": {"uri": upload, "name": "d.csv"},
            "blobs": [
                {"kind": "file", "at": "data", "uri": upload, "path": "d.csv", "files": ["d.csv"]}
            ],
        }
        # Served whatever the status: this execution is still QUEUED.
        served = api.get(f"{base}/data/files/d.csv")
        assert served.status_code == 200 and served.content == b"a,b\n1,2\n"
        assert served.headers["content-type"] == "application/octet-stream"
        assert 'filename="d.csv"' in served.headers["content-disposition"]

        unknown = api.get(f"{base}/weights")
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == (
            f"execution {execution_id} has no input 'weights' (its inputs: data)"
        )
        for path in ("other.csv", "../d.csv", "%2e%2e/1/inputs.json", "d.csv/x"):
            missing = api.get(f"{base}/data/files/{path}")
            assert missing.status_code == 404, (path, missing.text)
            assert b"a,b" not in missing.content


def test_another_tenant_gets_the_answer_of_an_execution_that_does_not_exist(
    world: World,
) -> None:
    upload = world.put("tenants/alpha/uploads/files/y/d.csv", b"alpha secret\n")
    execution_id = measure(world, "alpha-dev", upload)
    nowhere = "ex-00000000000000000000000000000000"
    with world.client("beta-admin") as beta:
        for suffix in ("inputs/data", "inputs/data/files/d.csv"):
            on_alpha = beta.get(f"/api/v1/executions/{execution_id}/{suffix}")
            on_nothing = beta.get(f"/api/v1/executions/{nowhere}/{suffix}")
            assert on_alpha.status_code == on_nothing.status_code == 404
            assert on_alpha.text.replace(execution_id, "<id>") == on_nothing.text.replace(
                nowhere, "<id>"
            )
            assert b"alpha" not in on_alpha.content


def test_an_input_naming_a_blob_outside_the_tenant_is_refused(world: World) -> None:
    """The recorded literal is checked again when served, not trusted: another tenant's blob,
    a path climbing out of the tenant's space, or one outside the store are never read."""
    beta_execution = world.start("beta-admin")
    beta_blob = world.put(f"executions/{beta_execution}/n0-make_artifacts/1/d.csv", b"beta!")
    beta_upload = world.put("tenants/beta/uploads/files/x/d.csv", b"beta upload")
    own = world.put("tenants/alpha/uploads/files/y/d.csv", b"alpha upload")
    outside = Path(world.blobs.root).parent / "secret.bin"
    outside.write_bytes(b"outside the store")
    climbing = [
        world.blobs.uri("tenants/alpha/uploads") + "/../../beta/uploads/files/x/d.csv",
        world.blobs.uri("tenants/alpha/uploads") + "/%2e%2e/%2e%2e/beta/uploads/files/x/d.csv",
        world.blobs.uri("tenants/alpha") + "/../../../secret.bin",
    ]
    execution_id = measure(world, "alpha-dev", own)
    base = f"/api/v1/executions/{execution_id}/inputs/data"
    for uri in (beta_blob, beta_upload, outside.as_uri(), "file:///etc/passwd", *climbing):
        record_inputs(world, execution_id, {"data": {"uri": uri, "name": "d.csv"}})
        with world.client("alpha-dev") as alpha:
            for refused in (alpha.get(base), alpha.get(f"{base}/files/d.csv")):
                assert refused.status_code == 403, (uri, refused.text)
                assert refused.json()["detail"].startswith(
                    f"input data of execution {execution_id}: "
                )
                for secret in ("beta!", "beta upload", "outside the store", "root:"):
                    assert secret not in refused.text
    record_inputs(world, execution_id, {"data": {"uri": own, "name": "d.csv"}})
    with world.client("alpha-dev") as alpha:
        assert alpha.get(f"{base}/files/d.csv").content == b"alpha upload"
