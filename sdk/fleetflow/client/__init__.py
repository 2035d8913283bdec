"""The Python client of the control plane's REST API: `Client` (in `client.py`) over one
`Transport`, with one module per resource; answers are `fleetflow.api_models`."""

from fleetflow.client.admin import ROLES, PrincipalKind
from fleetflow.client.client import Client, ExecutionResult
from fleetflow.client.errors import (
    ApiError,
    AuthenticationError,
    ControlPlaneUnreachableError,
    ExecutionNotSucceededError,
    ExecutionTimeoutError,
    PermissionDeniedError,
)
from fleetflow.client.logs import GAP_TEXT, LogLine
from fleetflow.client.outputs import DownloadedInputs, DownloadedOutputs
from fleetflow.client.transport import TENANT_HEADER
from fleetflow.client.usage import UsageBucket, UsageGroupBy
from fleetflow.client.workflows import RegisteredWorkflow, UploadedBundle
from fleetflow.config import ClientConfigError

__all__ = [
    "GAP_TEXT",
    "ROLES",
    "TENANT_HEADER",
    "ApiError",
    "AuthenticationError",
    "Client",
    "ClientConfigError",
    "ControlPlaneUnreachableError",
    "DownloadedInputs",
    "DownloadedOutputs",
    "ExecutionNotSucceededError",
    "ExecutionResult",
    "ExecutionTimeoutError",
    "LogLine",
    "PermissionDeniedError",
    "PrincipalKind",
    "RegisteredWorkflow",
    "UploadedBundle",
    "UsageBucket",
    "UsageGroupBy",
]
