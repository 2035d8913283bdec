"""What the client raises: the control plane's refusals (by status), no control plane at all,
and an execution that did not end as asked."""

from __future__ import annotations

from typing import Any

from fleetflow.errors import FleetflowError


class ApiError(FleetflowError):
    """The control plane refused a request; `detail` is its explanation (and `message`, when
    given, what to tell the user instead)."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        message: str | None = None,
    ):
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []
        lines = [message or detail]
        for error in self.errors:
            line = f"{error.get('field', '')}: {error.get('message', '')}".strip(": ")
            if line and line not in detail:  # the API often already says it in `detail`
                lines.append(f"  {line}")
        super().__init__("\n".join(lines))


class AuthenticationError(ApiError):
    """The control plane refused the request's token (401): none, unknown, expired or revoked.

    The message says where the token came from and how to get a working one.
    """


class PermissionDeniedError(ApiError):
    """The token is valid but its principal may not do this (403): its roles in the acting
    tenant do not allow it. The message names the acting tenant when it was not the caller's
    choice (FLEETFLOW_TENANT, the CLI config)."""


class ControlPlaneUnreachableError(FleetflowError):
    """No control plane answered at the configured URL."""


class ExecutionTimeoutError(FleetflowError, TimeoutError):
    """`wait_for_execution` gave up; the execution itself goes on."""


class ExecutionNotSucceededError(FleetflowError):
    """Outputs were asked of an execution that did not succeed (or has not finished)."""
