"""`client.workflows`: code bundles, registering workflow versions, and reading back what is
registered.

A workflow's code bundle is a deterministic tarball of its module's directory named by its
sha256, so `HEAD /api/v1/bundles/{digest}` skips uploading unchanged code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from fleetflow.api_models.workflows import WorkflowDetail, WorkflowPublic
from fleetflow.client.transport import Transport, path_part
from fleetflow.errors import FleetflowError
from fleetflow.ir import WorkflowSpec

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

WorkflowList = list[WorkflowPublic]


class UploadedBundle(BaseModel):
    """A workflow's code bundle: its sha256 `digest`, size, and whether it was `uploaded` now
    (False: the control plane had it)."""

    digest: str
    size_bytes: int
    uploaded: bool


class RegisteredWorkflow(WorkflowPublic):
    """What `register` did: the registered version, as the API answers it, and its code
    `bundle`."""

    bundle: UploadedBundle


class Workflows:
    """Registered workflows and their code."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def has_bundle(self, digest: str) -> bool:
        return self._transport.request("HEAD", f"/api/v1/bundles/{digest}").status_code == 200

    def upload_bundle(self, digest: str, data: bytes) -> bool:
        """Upload a bundle unless the control plane has it; True when bytes were sent."""
        if self.has_bundle(digest):
            return False
        self._transport.request(
            "PUT",
            f"/api/v1/bundles/{digest}",
            content=data,
            headers={"Content-Type": "application/gzip"},
        )
        return True

    def register_spec(
        self, spec: WorkflowSpec, bundle_digest: str, version: str | None = None
    ) -> WorkflowPublic:
        """Register a compiled spec whose code bundle the control plane has."""
        body = {"spec": spec.model_dump(mode="json"), "bundle_digest": bundle_digest}
        if version:
            body["version"] = version
        return self._transport.call("POST", "/api/v1/workflows", WorkflowPublic, json=body)

    def register(
        self,
        workflow_fn: WorkflowFunction[..., Any],
        *,
        root: str | os.PathLike[str] | None = None,
        version: str | None = None,
    ) -> RegisteredWorkflow:
        """Upload the workflow's code bundle (unless the control plane has it) and register
        its spec.

        Args:
            workflow_fn: a `@workflow`. Its code bundle is the directory its module is imported
                from (for a script run as `__main__`, the script's directory, the script being
                imported as a module named after the file, as `fleetflow run` does). A workflow
                defined in a notebook cell or an IPython session is captured by value instead:
                its code and what it uses from the session become one generated module
                (`fleetflow.interactive`), and it is registered as
                `fleetflow_interactive_<digest>.<function>`.
            root: the directory to bundle instead.
            version: a version name; default: a hash of the spec and the bundle.
        """
        from fleetflow.bundle import build_bundle, build_bundle_from_files
        from fleetflow.interactive import capture_workflow, is_interactive
        from fleetflow.loader import workflow_source

        if is_interactive(workflow_fn):
            if root is not None:
                raise FleetflowError(
                    f"workflow '{workflow_fn.fn.__name__}' is defined interactively: its code is "
                    "captured by value (with the modules of your own it imports), so it takes no "
                    "root directory; leave out `root`"
                )
            captured = capture_workflow(workflow_fn)
            workflow_fn = captured.workflow
            digest, data = build_bundle_from_files(
                captured.files, what=f"workflow '{workflow_fn.fn.__name__}'"
            )
        else:
            if root is None:
                workflow_fn, bundle_root = workflow_source(workflow_fn)
            else:
                bundle_root = Path(root)
            digest, data = build_bundle(bundle_root)
        uploaded = self.upload_bundle(digest, data)
        registered = self.register_spec(workflow_fn.spec, digest, version)
        bundle = UploadedBundle(digest=digest, size_bytes=len(data), uploaded=uploaded)
        return RegisteredWorkflow(**dict(registered), bundle=bundle)

    def list(
        self, *, name: str | None = None, latest_only: bool = False, limit: int = 50
    ) -> WorkflowList:
        """Registered workflow versions by name, newest version first; with `latest_only`,
        only the newest version of each workflow."""
        params: dict[str, Any] = {"limit": limit}
        if name is not None:
            params["name"] = name
        if latest_only:
            params["latest_only"] = "true"
        return self._transport.call("GET", "/api/v1/workflows", WorkflowList, params=params)

    def get(self, name: str, version: str | None = None) -> WorkflowDetail:
        """One version of a registered workflow (default: the newest) with its whole compiled
        `spec` (tasks with their resources, nodes)."""
        params = {} if version is None else {"version": version}
        path = f"/api/v1/workflows/{path_part(name)}"
        return self._transport.call("GET", path, WorkflowDetail, params=params)

    def versions(self, name: str, limit: int = 50) -> WorkflowList:
        """The registered versions of workflow `name`, newest first."""
        path = f"/api/v1/workflows/{path_part(name)}/versions"
        return self._transport.call("GET", path, WorkflowList, params={"limit": limit})
