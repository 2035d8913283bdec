"""`GET /api/v1/executions/{id}/outputs/{name}[/files/{path}]` on a migrated database (SQLite and
PostgreSQL) and a real local blob store: what an output lists, the bytes it serves, and what it
refuses — another tenant's execution, and an output naming a blob outside the caller's tenant.

The app is built as `test_api.py` builds it; the execution's outputs are written where a task
runtime writes them and recorded through the transition policy, as `finish_execution` does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.db.repositories.executions import get_execution, move_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction
from control_plane.settings import ApiSettings, DatabaseSettings, Settings
from fleetflow.api_models.tenancy import Role
from fleetflow.loader import load_workflow
from fleetflow.states import ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import bearer, principal_token
from tests.integration.test_api import FakeLauncher, make_bundle

WORKFLOWS = Path(__file__).parent / "workflows" / "watching.py"
MODEL = bytes(range(256)) * 4


@dataclass
class World:
    app: Any
    sessions: sessionmaker[Session]
    blobs: LocalBlobStore
    tokens: dict[str, str]  # "alpha-dev", "alpha-viewer", "beta-admin"

    def client(self, who: str) -> TestClient:
        return TestClient(self.app, headers=bearer(self.tokens[who]))

    def start(self, who: str) -> str:
        """An execution of `watching.artifacts` by `who`, QUEUED; its id."""
        with self.client(who) as api:
            created = api.post("/api/v1/executions", json={"workflow": NAME, "inputs": {"n": 2}})
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    def succeed(self, tenant: str, execution_id: str, outputs: dict[str, Any]) -> None:
        """Record the execution SUCCEEDED with `outputs`, through the transition policy."""
        with transaction(self.sessions) as session:
            owner = get_or_create_tenant(session, tenant)
            execution = get_execution(session, owner.id, execution_id)
            assert execution is not None
            assert move_execution(session, execution, ExecutionState.RUNNING)
            assert move_execution(session, execution, ExecutionState.SUCCEEDED, outputs=outputs)

    def put(self, key: str, data: bytes) -> str:
        return self.blobs.put(key, data)


NAME = "watching.artifacts"


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    settings = Settings(database=DatabaseSettings(url="sqlite://"), api=ApiSettings())
    blobs = LocalBlobStore(tmp_path / "blobs")
    app = create_app(
        settings, session_factory=session_factory, launcher=FakeLauncher(), blob_store=blobs
    )
    authorizer = app.state.authorizer
    tokens = {
        "alpha-dev": principal_token(
            session_factory, authorizer, "alpha-dev", tenant="alpha", role=Role.DEVELOPER
        ),
        "alpha-viewer": principal_token(
            session_factory, authorizer, "alpha-viewer", tenant="alpha", role=Role.VIEWER
        ),
        "beta-admin": principal_token(
            session_factory, authorizer, "beta-admin", tenant="beta", role=Role.TENANT_ADMIN
        ),
    }
    world = World(app, session_factory, blobs, tokens)
    for name in ("artifacts", "measure"):
        wf, _ = load_workflow(WORKFLOWS, name)
        for who in ("alpha-dev", "beta-admin"):
            with world.client(who) as api:
                body, digest = make_bundle()
                assert api.put(f"/api/v1/bundles/{digest}", content=body).status_code in (200, 201)
                spec = wf.spec.model_dump(mode="json")
                registered = api.post(
                    "/api/v1/workflows", json={"spec": spec, "bundle_digest": digest}
                )
                assert registered.status_code == 201, registered.text
    yield world


def artifacts_outputs(world: World, execution_id: str) -> dict[str, Any]:
    """Write the blobs of `watching.artifacts`'s outputs where a task runtime would, for
    `execution_id`; the outputs literal naming them."""
    prefix = f"executions/{execution_id}/n0-make_artifacts/1"
    digest = hashlib.sha256(MODEL).hexdigest()
    model = world.put(f"{prefix}/files/{digest}/model.bin", MODEL)
    world.put(f"{prefix}/dirs/d1/a.txt", b"alpha\n")
    world.put(f"{prefix}/dirs/d1/sub/b.txt", b"beta\n")
    shards = [
        {
            "uri": world.put(f"{prefix}/files/s{i}/shard-{i}.txt", f"shard {i}\n".encode()),
            "name": f"shard-{i}.txt",
        }
        for i in range(2)
    ]
    notes = world.put(f"{prefix}/files/n/notes.md", b"# notes\n")
    return {
        "model": {"uri": model, "name": "model.bin"},
        "data": {"uri": world.blobs.uri(f"{prefix}/dirs/d1")},
        "shards": shards,
        "notes": {"title": "notes", "text": {"uri": notes, "name": "notes.md"}},
    }


def test_each_output_lists_its_files_and_serves_their_bytes(world: World) -> None:
    execution_id = world.start("alpha-dev")
    outputs = artifacts_outputs(world, execution_id)
    world.succeed("alpha", execution_id, outputs)
    base = f"/api/v1/executions/{execution_id}/outputs"
    with world.client("alpha-viewer") as api:  # reading needs only the viewer role
        model = api.get(f"{base}/model").json()
        assert model["type"] == "File" and model["value"] == outputs["model"]
        assert model["blobs"] == [
            {
                "kind": "file",
                "at": "model",
                "uri": outputs["model"]["uri"],
                "path": "model.bin",
                "files": ["model.bin"],
            }
        ]
        served = api.get(f"{base}/model/files/model.bin")
        assert served.status_code == 200 and served.content == MODEL
        assert served.headers["content-type"] == "application/octet-stream"

        (data,) = api.get(f"{base}/data").json()["blobs"]
        assert (data["kind"], data["path"], data["files"]) == (
            "directory",
            ".",
            ["a.txt", "sub/b.txt"],
        )
        assert api.get(f"{base}/data/files/sub/b.txt").content == b"beta\n"

        shards = api.get(f"{base}/shards").json()
        assert shards["type"] == "list[File]"
        assert [(b["at"], b["path"]) for b in shards["blobs"]] == [
            ("shards[0]", "0/shard-0.txt"),
            ("shards[1]", "1/shard-1.txt"),
        ]
        assert api.get(f"{base}/shards/files/1/shard-1.txt").content == b"shard 1\n"

        (notes,) = api.get(f"{base}/notes").json()["blobs"]
        assert (notes["at"], notes["path"]) == ("notes.text", "text/notes.md")
        assert api.get(f"{base}/notes/files/text/notes.md").content == b"# notes\n"


def test_what_is_not_there_is_a_404_and_an_unfinished_execution_a_409(world: World) -> None:
    execution_id = world.start("alpha-dev")
    base = f"/api/v1/executions/{execution_id}/outputs"
    with world.client("alpha-dev") as api:
        pending = api.get(f"{base}/model")
        assert pending.status_code == 409
        assert pending.json()["detail"] == (
            f"execution {execution_id} is QUEUED; it has no outputs yet"
        )
        world.succeed("alpha", execution_id, artifacts_outputs(world, execution_id))
        unknown = api.get(f"{base}/weights")
        assert unknown.status_code == 404
        assert "its outputs: data, model, notes, shards" in unknown.json()["detail"]
        for output, path in [
            *(("model", p) for p in ("other.bin", "../1/inputs.json", "%2e%2e/inputs.json")),
            ("model", "model.bin/x"),
            ("data", "../../1/inputs.json"),  # the directory's own files only
            ("data", "sub/%2e%2e/a.txt"),
            ("data", "sub"),
        ]:
            missing = api.get(f"{base}/{output}/files/{path}")
            assert missing.status_code == 404, (output, path, missing.text)
        gone = api.get("/api/v1/executions/ex-0000/outputs/model")
        assert gone.status_code == 404
        assert gone.json()["detail"] == "execution ex-0000 not found"


def test_another_tenant_gets_the_answer_of_an_execution_that_does_not_exist(
    world: World,
) -> None:
    execution_id = world.start("alpha-dev")
    world.succeed("alpha", execution_id, artifacts_outputs(world, execution_id))
    nowhere = "ex-00000000000000000000000000000000"
    with world.client("beta-admin") as beta:
        for suffix in ("outputs/model", "outputs/model/files/model.bin", "outputs/data"):
            on_alpha = beta.get(f"/api/v1/executions/{execution_id}/{suffix}")
            on_nothing = beta.get(f"/api/v1/executions/{nowhere}/{suffix}")
            assert on_alpha.status_code == on_nothing.status_code == 404
            assert on_alpha.text.replace(execution_id, "<id>") == on_nothing.text.replace(
                nowhere, "<id>"
            )
            assert b"alpha" not in on_alpha.content


def test_an_output_naming_a_blob_outside_the_tenant_is_refused(world: World) -> None:
    """An output literal is whatever the task runtime wrote: if it names another tenant's
    blob (its execution, its uploads) or a path outside the store, nothing is served."""
    beta_execution = world.start("beta-admin")
    beta_blob = world.put(f"executions/{beta_execution}/n0-make_artifacts/1/model.bin", b"beta!")
    beta_upload = world.put("tenants/beta/uploads/files/x/model.bin", b"beta upload")
    outside = (Path(world.blobs.root).parent / "secret.bin").as_uri()
    for uri in (beta_blob, beta_upload, outside, "file:///etc/passwd"):
        execution_id = world.start("alpha-dev")
        outputs = artifacts_outputs(world, execution_id)
        outputs["model"] = {"uri": uri, "name": "model.bin"}
        world.succeed("alpha", execution_id, outputs)
        with world.client("alpha-dev") as alpha:
            base = f"/api/v1/executions/{execution_id}/outputs/model"
            for refused in (alpha.get(base), alpha.get(f"{base}/files/model.bin")):
                assert refused.status_code == 403, (uri, refused.text)
                assert "beta!" not in refused.text and "beta upload" not in refused.text
            # Its other outputs, in alpha's own space, are still served.
            assert alpha.get(f"/api/v1/executions/{execution_id}/outputs/data").status_code == 200
    own_upload = world.put("tenants/alpha/uploads/files/y/model.bin", b"alpha upload")
    execution_id = world.start("alpha-dev")
    outputs = artifacts_outputs(world, execution_id)
    outputs["model"] = {"uri": own_upload, "name": "model.bin"}  # an input passed through
    world.succeed("alpha", execution_id, outputs)
    with world.client("alpha-dev") as alpha:
        served = alpha.get(f"/api/v1/executions/{execution_id}/outputs/model/files/model.bin")
        assert served.status_code == 200 and served.content == b"alpha upload"


def test_an_input_may_not_name_a_blob_outside_the_tenant(world: World) -> None:
    """Else a task would read it on the caller's behalf, and its output would hand it over."""
    beta_execution = world.start("beta-admin")
    beta_blob = world.put(f"executions/{beta_execution}/n0-make_artifacts/1/model.bin", b"beta!")
    beta_upload = world.put("tenants/beta/uploads/files/x/model.bin", b"beta upload")
    alpha_execution = world.start("alpha-dev")
    alpha_blob = world.put(f"executions/{alpha_execution}/n0-make_artifacts/1/model.bin", b"a")
    alpha_upload = world.put("tenants/alpha/uploads/files/y/model.bin", b"alpha upload")
    climbing = [
        world.blobs.uri(f"executions/{alpha_execution}") + "/../../tenants/beta/uploads/files/x",
        world.blobs.uri("executions") + "/%2e%2e/tenants/beta/uploads/files/x/model.bin",
        world.blobs.uri("tenants/alpha/uploads") + "/../../beta/uploads/files/x/model.bin",
        world.blobs.uri(f"executions/{alpha_execution}") + "/../../../../../../etc/passwd",
    ]

    def start(uri: str) -> Any:
        with world.client("alpha-dev") as alpha:
            body = {"workflow": "watching.measure", "inputs": {"data": {"uri": uri, "name": "d"}}}
            return alpha.post("/api/v1/executions", json=body)

    refusals = set()
    for uri in (beta_blob, beta_upload, *climbing):
        refused = start(uri)
        assert refused.status_code == 422, (uri, refused.text)
        (error,) = refused.json()["errors"]
        assert error["field"] == "inputs.data"
        refusals.add(error["message"].replace(repr(uri), "<uri>"))
    assert len(refusals) == 1  # alike whatever the URI names: nothing is told about it
    for uri in (alpha_blob, alpha_upload):
        assert start(uri).status_code == 201, uri
