"""Errors the SDK raises. Each subclasses the builtin a Python user would expect."""

from __future__ import annotations


class FleetflowError(Exception):
    """Base of every error Fleetflow raises on purpose."""


class UnsupportedTypeError(FleetflowError, TypeError):
    """A Python type that Fleetflow cannot carry between tasks."""


class LiteralValidationError(FleetflowError, ValueError):
    """A value does not match its declared type. `path` names where (`inputs.n`, `[2].lr`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)
