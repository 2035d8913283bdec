"""The console's download links for output and input files (`/ui/executions/{id}/outputs/
{name}/files/...`, `.../inputs/{name}/files/...`): they serve what the API's
`GET /api/v1/executions/{id}/{outputs|inputs}/{name}/files/...` serves the same principal, and
nothing of another tenant — neither its execution's files nor a blob of its that an output or
an input names.

The world (app, tenants alpha and beta, `watching.artifacts`, outputs written where a task
runtime writes them) is tests/integration/test_execution_outputs_api.py's.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi.testclient import TestClient
from sqlalchemy import update

from control_plane.db.models import Execution
from control_plane.db.session import transaction
from tests.integration.test_console import SITE, form_csrf
from tests.integration.test_execution_outputs_api import (  # noqa: F401
    MODEL,
    World,
    artifacts_outputs,
    world,
)


def console_of(world: World, who: str) -> TestClient:  # noqa: F811
    """A browser signed in to the console as `who`."""
    browser = TestClient(world.app)
    csrf = form_csrf(browser.get("/ui/signin"))
    signed = browser.post(
        "/ui/signin",
        data={"token": world.tokens[who], "csrf": csrf, "next": "/ui/executions"},
        headers={"Origin": SITE},
    )
    assert signed.status_code == 200 and "Sign out" in signed.text, signed.text
    return browser


def test_the_execution_page_links_each_output_file_and_serves_its_bytes(world: World) -> None:  # noqa: F811
    execution_id = world.start("alpha-dev")
    world.succeed("alpha", execution_id, artifacts_outputs(world, execution_id))
    with console_of(world, "alpha-viewer") as browser:  # reading needs only the viewer role
        page = browser.get(f"/ui/executions/{execution_id}")
        assert page.status_code == 200
        links = dict(re.findall(r'<a download data-file="([^"]+)" href="([^"]+)"', page.text))
        assert {"model.bin", "a.txt", "sub/b.txt", "0/shard-0.txt"} <= set(links), links
        model = browser.get(links["model.bin"].replace("&amp;", "&"))
        assert model.status_code == 200 and model.content == MODEL
        nested = browser.get(links["sub/b.txt"].replace("&amp;", "&"))
        assert nested.content == b"beta\n"
        with world.client("alpha-viewer") as api:  # what the API serves, byte for byte
            served = api.get(f"/api/v1/executions/{execution_id}/outputs/model/files/model.bin")
            assert served.content == model.content


def test_another_tenant_cannot_download_the_files(world: World) -> None:  # noqa: F811
    execution_id = world.start("alpha-dev")
    world.succeed("alpha", execution_id, artifacts_outputs(world, execution_id))
    url = f"/ui/executions/{execution_id}/outputs/model/files/model.bin"
    with console_of(world, "beta-admin") as browser:
        for query in ("", "?tenant=alpha", "?tenant=beta"):
            refused = browser.get(url + query)
            assert refused.status_code == 404, (query, refused.text)
            assert refused.content != MODEL and "not found" in refused.text
        page = browser.get(f"/ui/executions/{execution_id}")
        assert page.status_code == 404 and "model.bin" not in page.text


def test_an_output_naming_another_tenants_blob_gets_no_link(world: World) -> None:  # noqa: F811
    alpha_execution = world.start("alpha-dev")
    alpha_blob = world.put(f"executions/{alpha_execution}/n0-make_artifacts/1/model.bin", b"alpha!")
    beta_execution = world.start("beta-admin")
    outputs = artifacts_outputs(world, beta_execution)
    outputs["model"] = {"uri": alpha_blob, "name": "model.bin"}
    world.succeed("beta", beta_execution, outputs)
    with console_of(world, "beta-admin") as browser:
        page = browser.get(f"/ui/executions/{beta_execution}")
        assert page.status_code == 200
        row = re.search(r'<tr data-output="model">.*?</tr>', page.text, re.S)
        assert row and "data-file" not in row.group(0) and "class=error" in row.group(0), page.text
        path = quote("model.bin")
        refused = browser.get(f"/ui/executions/{beta_execution}/outputs/model/files/{path}")
        assert refused.status_code == 403 and b"alpha!" not in refused.content


def _measure(world: World, who: str, uri: str) -> str:  # noqa: F811
    """An execution of `watching.measure` reading the `File` at `uri`; its id (QUEUED)."""
    with world.client(who) as api:
        body = {"workflow": "watching.measure", "inputs": {"data": {"uri": uri, "name": "d.csv"}}}
        created = api.post("/api/v1/executions", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_the_execution_page_links_each_input_file_and_serves_its_bytes(world: World) -> None:  # noqa: F811
    upload = world.put("tenants/alpha/uploads/files/y/d.csv", b"a,b\n1,2\n")
    execution_id = _measure(world, "alpha-dev", upload)
    with console_of(world, "alpha-viewer") as browser:  # reading needs only the viewer role
        page = browser.get(f"/ui/executions/{execution_id}")
        assert page.status_code == 200
        row = re.search(r'<tr data-input="data">.*?</tr>', page.text, re.S)
        assert row, page.text
        (link,) = re.findall(r'<a download data-file="d.csv" href="([^"]+)"', row.group(0))
        assert link.startswith(f"/ui/executions/{execution_id}/inputs/data/files/d.csv?")
        served = browser.get(link.replace("&amp;", "&"))
        assert served.status_code == 200 and served.content == b"a,b\n1,2\n"
        missing = browser.get(f"/ui/executions/{execution_id}/inputs/data/files/..%2F..%2Fx")
        assert missing.status_code == 404 and b"a,b" not in missing.content
    with console_of(world, "beta-admin") as browser:
        for query in ("", "?tenant=alpha", "?tenant=beta"):
            refused = browser.get(f"/ui/executions/{execution_id}/inputs/data/files/d.csv{query}")
            assert refused.status_code == 404, (query, refused.text)
            assert b"a,b" not in refused.content
    with TestClient(world.app) as stranger:  # not signed in: sent to sign in, nothing served
        anonymous = stranger.get(
            f"/ui/executions/{execution_id}/inputs/data/files/d.csv", follow_redirects=False
        )
        assert anonymous.status_code in (303, 307, 401) and b"a,b" not in anonymous.content


def test_an_input_naming_another_tenants_blob_gets_no_link(world: World) -> None:  # noqa: F811
    """A recorded input literal naming a blob beyond the tenant (a database written before
    inputs were checked) is refused on the page as by the API, and its bytes are not served."""
    alpha_upload = world.put("tenants/alpha/uploads/files/y/d.csv", b"alpha secret")
    beta_upload = world.put("tenants/beta/uploads/files/x/d.csv", b"beta data")
    beta_execution = _measure(world, "beta-admin", beta_upload)
    with transaction(world.sessions) as session:
        forged = {"data": {"uri": alpha_upload, "name": "d.csv"}}
        session.execute(
            update(Execution).where(Execution.id == beta_execution).values(inputs=forged)
        )
    with console_of(world, "beta-admin") as browser:
        page = browser.get(f"/ui/executions/{beta_execution}")
        assert page.status_code == 200
        row = re.search(r'<tr data-input="data">.*?</tr>', page.text, re.S)
        assert row and "data-file" not in row.group(0) and "class=error" in row.group(0), page.text
        refused = browser.get(f"/ui/executions/{beta_execution}/inputs/data/files/d.csv")
        assert refused.status_code == 403 and b"alpha secret" not in refused.content
