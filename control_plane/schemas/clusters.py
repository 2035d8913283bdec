"""Cluster creation in; clusters out are `fleetflow.api_models.clusters`, shared with the
client."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from control_plane.schemas.common import dns_label

MAX_CLUSTER_NAME_LENGTH = 63
MAX_LABELS = 64
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A label's name part, and any non-empty value: Kubernetes' label syntax.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_MAX_LABEL_PART = 63
_MAX_LABEL_PREFIX = 253


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (
        not prefix or len(prefix) > _MAX_LABEL_PREFIX or not _DNS_SUBDOMAIN.fullmatch(prefix)
    ):
        return f"label key {key!r}: the prefix before '/' must be a DNS subdomain (example.com)"
    if len(name) > _MAX_LABEL_PART or not _LABEL_NAME.fullmatch(name):
        return (
            f"label key {key!r}: the name must be 1-{_MAX_LABEL_PART} letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit (e.g. gpu, example.com/zone)"
        )
    return None


def _labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    problems = [p for p in (_label_key_problem(key) for key in sorted(labels)) if p]
    for key in sorted(labels):
        value = labels[key]
        if value and (len(value) > _MAX_LABEL_PART or not _LABEL_NAME.fullmatch(value)):
            problems.append(
                f"label {key}: value {value!r} must be empty or 1-{_MAX_LABEL_PART} letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return labels


ClusterName = Annotated[
    str, dns_label("cluster name", max_length=MAX_CLUSTER_NAME_LENGTH, example="gpu-east-1")
]
ClusterLabels = Annotated[dict[str, str], AfterValidator(_labels)]


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ClusterName = Field(description="a DNS label: lowercase letters, digits and '-'")
    labels: ClusterLabels = Field(
        default_factory=dict,
        description='what placement can match (Kubernetes label syntax), e.g. {"zone": "eu"}',
    )
