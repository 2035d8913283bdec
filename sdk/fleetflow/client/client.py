"""`fleetflow.Client`: the control plane's REST API for Python programs (and the CLI).

One object per control plane, its calls grouped by resource over one `Transport`:
`client.workflows`, `client.executions`, `client.launchplans`, `client.secrets`,
`client.uploads`, `client.clusters`, `client.admin`, `client.account`, `client.usage`,
`client.artifacts`. The conveniences a remote run needs (bundling and registering a workflow,
uploading its File/Directory inputs, launching, following, typed outputs, cancelling) are
methods of the client itself, so
`fleetflow run --remote` and a notebook calling `Client().run(pipeline, n=3)` behave the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.api_models.notifications import NotificationRule
from fleetflow.client.account import Account
from fleetflow.client.admin import Admin
from fleetflow.client.artifacts import Artifacts
from fleetflow.client.clusters import Clusters
from fleetflow.client.executions import Executions
from fleetflow.client.launch_plans import LaunchPlans
from fleetflow.client.secrets import Secrets
from fleetflow.client.transport import Transport, resolve_connection
from fleetflow.client.uploads import Uploads
from fleetflow.client.usage import Usage
from fleetflow.client.workflows import Workflows
from fleetflow.config import CliConfig

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction


@dataclass(frozen=True)
class ExecutionResult:
    """A finished execution, with its outputs as the workflow's declared Python type.

    Attributes:
        id: the execution id (`ex-…`).
        status: `SUCCEEDED`, `FAILED` or `CANCELLED`.
        outputs: what calling the workflow locally would return (a dataclass, a NamedTuple,
            a `File` readable at its path when the blob store is a local directory…);
            None unless the execution succeeded.
        error: the failure (`node_id`, `message`, `traceback`) of a failed execution.
        execution: the API's full answer, task attempts included.
    """

    id: str
    status: str
    outputs: Any
    error: dict[str, Any] | None
    execution: ExecutionPublic

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


class Client:
    """Talks to one control plane: register and run workflows, follow and cancel executions,
    read their outputs back as Python values.

        client = Client()                      # URL and token from the CLI config
        result = client.run(pipeline, n=100)   # register, upload File inputs, run, wait
        result.outputs                         # e.g. a Metrics dataclass
        Client(tenant="research").usage.quota_status()  # act in another tenant

    Args:
        url: the control plane's base URL; default from `FLEETFLOW_API_URL` or the CLI config
            file (`fleetflow login` or `fleetflow dev up` writes it).
        token: bearer token; default from `FLEETFLOW_TOKEN` or the CLI config.
        tenant: the tenant to act in (sent as `X-Fleetflow-Tenant`); default from
            `FLEETFLOW_TENANT` or the CLI config, else the token's home tenant.
        timeout: seconds for each HTTP request.
        config: use these settings instead of the CLI config file and the environment.

    Raises:
        ClientConfigError: the CLI config file is unreadable, or the URL is not http(s).

    Every call answers with the API's own models (`fleetflow.api_models`) and raises
    `ApiError` (with the server's explanation) when the control plane refuses a request:
    `AuthenticationError` when it refuses the token (401), `PermissionDeniedError` when the
    principal may not do that (403). When no control plane answers,
    `ControlPlaneUnreachableError`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        tenant: str | None = None,
        *,
        timeout: float = 30,
        config: CliConfig | None = None,
    ):
        self.transport = Transport(resolve_connection(url, token, tenant, config), timeout)
        self.api_url = self.transport.api_url
        self.tenant = self.transport.tenant
        """The tenant requests act in (`X-Fleetflow-Tenant`); None: the token's home tenant."""
        self.workflows = Workflows(self.transport)
        self.executions = Executions(self.transport)
        self.launchplans = LaunchPlans(self.transport)
        self.secrets = Secrets(self.transport)
        self.uploads = Uploads(self.transport)
        self.clusters = Clusters(self.transport)
        self.admin = Admin(self.transport)
        self.account = Account(self.transport)
        self.usage = Usage(self.transport)
        self.artifacts = Artifacts(self.transport)
        # What a remote run needs, on the client itself.
        self.register = self.workflows.register
        self.wait_for_execution = self.executions.wait
        self.cancel = self.executions.cancel
        self.follow_logs = self.executions.follow_logs
        self.outputs = self.executions.outputs
        self.download_outputs = self.executions.download_outputs
        self.download_inputs = self.executions.download_inputs

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def launch(
        self,
        workflow_fn: WorkflowFunction[..., Any],
        inputs: Mapping[str, Any],
        *,
        version: str | None = None,
        name: str | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        notifications: Sequence[NotificationRule] = (),
    ) -> ExecutionPublic:
        """Start an execution of a registered workflow on Python input values: checked and
        converted with the workflow's types, File/Directory inputs uploaded.

        Each call creates one execution even when its request has to be resent: it sends an
        `Idempotency-Key` (`idempotency_key`, or a fresh UUID).

        Args:
            workflow_fn: the workflow the inputs are typed by.
            inputs: input name -> Python value; inputs left out take their defaults.
            version: the registered version to run; default: the latest.
            name: the registered name, when it differs from `workflow_fn`'s (a `__main__`
                script, see `register`).
            priority: among the tenant's waiting tasks, higher starts first (-1000..1000).
            notifications: webhooks to call when it reaches a terminal state.

        Raises:
            WorkflowInputError, LiteralValidationError: the inputs do not fit the workflow.
        """
        literals = self.uploads.inputs(workflow_fn, workflow_fn.inputs_to_literals(inputs))
        return self.executions.create(
            name or workflow_fn.spec.name,
            literals,
            version=version,
            priority=priority,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            notifications=notifications,
        )

    def run(
        self,
        workflow_fn: WorkflowFunction[..., Any],
        *,
        wait: bool = True,
        timeout: float | None = None,
        **inputs: Any,
    ) -> Any:
        """Register the workflow, upload its File/Directory inputs, run it on the platform.

        Args:
            workflow_fn: a `@workflow`.
            wait: wait for the execution to finish.
            timeout: with `wait`, give up after this many seconds (the execution goes on).
            **inputs: the workflow's inputs as Python values, as for a local call (a workflow
                input named `wait` or `timeout` cannot be passed this way: use `register` and
                `launch`).

        Returns:
            With `wait`, an `ExecutionResult` (status, typed `outputs`, error); without, the
            created `ExecutionPublic` (its `id`, `status`…).

        Raises:
            ExecutionTimeoutError: still running after `timeout` seconds.
        """
        registered = self.register(workflow_fn)
        execution = self.launch(
            workflow_fn, inputs, version=registered.version, name=registered.name
        )
        if not wait:
            return execution
        final = self.wait_for_execution(execution.id, timeout=timeout)
        outputs = None
        if final.status == "SUCCEEDED":
            outputs = workflow_fn.outputs_to_python(final.outputs or {})
        return ExecutionResult(
            id=final.id, status=final.status, outputs=outputs, error=final.error, execution=final
        )
