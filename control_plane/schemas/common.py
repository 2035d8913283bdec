"""Pieces shared by the API schemas: timestamps and the error body (defined with the response
models in `fleetflow.api_models`)."""

from fleetflow.api_models.common import ErrorResponse, FieldError, UtcDatetime

__all__ = ["ErrorResponse", "FieldError", "UtcDatetime"]
