"""Pieces shared by the API's request schemas: names that are DNS labels; timestamps and the
error body are defined with the response models in `fleetflow.api_models`."""

from __future__ import annotations

import re

from pydantic import AfterValidator

from fleetflow.api_models.common import ErrorResponse, FieldError, UtcDatetime

__all__ = ["ErrorResponse", "FieldError", "UtcDatetime", "dns_label"]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def dns_label(what: str, *, max_length: int, example: str) -> AfterValidator:
    """Checks that a name (a tenant's, a cluster's) is a DNS label of at most `max_length`
    characters; `what` and `example` word the error."""

    def check(name: str) -> str:
        if len(name) > max_length or not _DNS_LABEL.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a valid {what}: 1-{max_length} lowercase letters, digits and "
                f"'-', starting and ending with a letter or digit (e.g. {example})"
            )
        return name

    return AfterValidator(check)
