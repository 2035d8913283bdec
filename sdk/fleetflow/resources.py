"""`Resources`: what one attempt of a task asks the cluster for, written the Kubernetes way.

Engineers think in `"4Gi"`, `gpu_type=["H100", "A100"]` and `labels={"zone": "eu"}`; placement
and quota need plain numbers. This module is the one place where the former becomes the latter
(`ir.Resources`), and it refuses nonsense at decoration time rather than when a pod fails to
schedule hours later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from fleetflow import ir
from fleetflow.errors import InvalidOptionError

# Binary (Ki) and decimal (k/K) suffixes as Kubernetes quantities spell them.
_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}
_QUANTITY = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kKMGTP]i?|)\s*$")


def parse_memory(value: int | str) -> int:
    """Memory as bytes: an int, or a quantity string such as `"512Mi"`, `"4Gi"`, `"1G"`, `"1000"`.

    Raises:
        InvalidOptionError: not a positive whole number of bytes in a known unit.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidOptionError(
            f"memory must be a number of bytes or a string like '4Gi', got {value!r}"
        )
    if isinstance(value, int):
        number_of_bytes = value
    else:
        match = _QUANTITY.match(value)
        if match is None:
            units = ", ".join(u for u in _MEMORY_UNITS if u)
            raise InvalidOptionError(
                f"memory {value!r} is not a quantity like '512Mi', '4Gi' or '1000' (units: {units})"
            )
        try:
            exact = Decimal(match["number"]) * _MEMORY_UNITS[match["unit"]]
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
            raise InvalidOptionError(f"memory {value!r} is not a number") from exc
        if exact != exact.to_integral_value():
            raise InvalidOptionError(f"memory {value!r} is not a whole number of bytes")
        number_of_bytes = int(exact)
    if number_of_bytes <= 0:
        raise InvalidOptionError(f"memory must be positive, got {value!r}")
    if number_of_bytes > ir.MAX_MEMORY_BYTES:
        raise InvalidOptionError(
            f"memory {value!r} is more than one attempt can get "
            f"(at most {ir.MAX_MEMORY_BYTES // 2**40}Ti)"
        )
    return number_of_bytes


def parse_cpu(value: int | float | str) -> float:
    """CPU cores as a float: `2`, `0.5`, or a Kubernetes millicore string such as `"500m"`."""
    if isinstance(value, str):
        text = value.strip()
        try:
            cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError as exc:
            raise InvalidOptionError(
                f"cpu {value!r} is not a number of cores like 2, 0.5 or '500m'"
            ) from exc
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(f"cpu must be a number of cores, got {value!r}")
    else:
        cores = float(value)
    if not math.isfinite(cores) or cores <= 0:
        raise InvalidOptionError(f"cpu must be a positive number of cores, got {value!r}")
    if cores > ir.MAX_CPU_CORES:
        raise InvalidOptionError(
            f"cpu {value!r} is more than one attempt can get (at most {ir.MAX_CPU_CORES:g} cores)"
        )
    return cores


# Kubernetes label syntax: an optional DNS-subdomain prefix and "/", then a name; values are
# names or empty. Cluster labels are Kubernetes-style, so a requirement in another shape could
# never match.
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")


def parse_gpu_types(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Acceptable GPU types, most preferred first: `"H100"` or `["H100", "A100"]`.

    Raises:
        InvalidOptionError: not a non-empty string or a non-empty list of distinct ones.
    """
    if value is None:
        return ()
    shape = "gpu_type must be a non-empty string or a list of them (in order of preference)"
    if isinstance(value, str):
        types: tuple[str, ...] = (value,)
    elif isinstance(value, list | tuple):
        if not value:
            raise InvalidOptionError(f"{shape}, got an empty list")
        types = tuple(value)
    else:
        raise InvalidOptionError(f"{shape}, got {value!r}")
    for gpu_type in types:
        if not isinstance(gpu_type, str) or not gpu_type.strip():
            raise InvalidOptionError(f"{shape}, got {value!r}")
        if len(gpu_type) > ir.MAX_GPU_TYPE_LENGTH:
            raise InvalidOptionError(
                f"gpu_type {gpu_type[:20]!r}… is longer than {ir.MAX_GPU_TYPE_LENGTH} characters"
            )
    duplicates = sorted({t for t in types if types.count(t) > 1})
    if duplicates:
        raise InvalidOptionError(
            f"gpu_type lists {', '.join(duplicates)} more than once: {list(types)}"
        )
    return types


def parse_labels(value: Mapping[str, str] | None) -> dict[str, str]:
    """Cluster labels a task requires, checked against Kubernetes label syntax.

    Raises:
        InvalidOptionError: not a mapping of label keys to label values.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidOptionError(
            f"labels must be a dict of cluster labels like {{'zone': 'eu'}}, got {value!r}"
        )
    labels: dict[str, str] = {}
    for key, label_value in value.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise InvalidOptionError(
                f"labels: {key!r} is not a label key (letters, digits, '-', '_' and '.', "
                "at most 63 characters, optionally after a 'domain/' prefix)"
            )
        if not isinstance(label_value, str) or not _LABEL_VALUE.match(label_value):
            raise InvalidOptionError(
                f"labels: the value of {key!r} must be a label value (letters, digits, '-', "
                f"'_' and '.', at most 63 characters), got {label_value!r}"
            )
        labels[key] = label_value
    return labels


@dataclass(frozen=True)
class Resources:
    """What one attempt of a task requests, and where it may run.

    Each number is bounded by what one attempt can get (`fleetflow.ir.MAX_CPU_CORES`,
    `MAX_MEMORY_BYTES`, `MAX_GPUS`).

    Args:
        cpu: cores, e.g. `2`, `0.5` or `"500m"`; must be positive.
        memory: bytes as an int, or a quantity such as `"512Mi"`, `"4Gi"`, `"1G"`; `None` leaves
            it to the executor's default.
        gpu: number of whole GPUs (`0` for none).
        gpu_type: accelerator model placement must match (`"H100"`), or acceptable models in
            order of preference (`["H100", "A100"]`: the first that fits on some cluster now
            is taken); only with `gpu > 0`. `None`: any model.
        labels: cluster labels the cluster must carry (`{"zone": "eu"}`).

    Raises:
        InvalidOptionError: on construction, for any value that could never be scheduled.
    """

    cpu: int | float | str = 1
    memory: int | str | None = None
    gpu: int = 0
    gpu_type: str | Sequence[str] | None = None
    labels: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        parse_cpu(self.cpu)
        if self.memory is not None:
            parse_memory(self.memory)
        if isinstance(self.gpu, bool) or not isinstance(self.gpu, int):
            raise InvalidOptionError(f"gpu must be a whole number of GPUs, got {self.gpu!r}")
        if self.gpu < 0:
            raise InvalidOptionError(f"gpu must be >= 0, got {self.gpu}")
        if self.gpu > ir.MAX_GPUS:
            raise InvalidOptionError(f"gpu must be at most {ir.MAX_GPUS}, got {self.gpu}")
        gpu_types = parse_gpu_types(self.gpu_type)
        if gpu_types and self.gpu == 0:
            raise InvalidOptionError(
                f"gpu_type={self.gpu_type!r} needs gpu >= 1: a GPU type without GPUs "
                "would only restrict placement"
            )
        if not isinstance(self.gpu_type, str | None):
            # A list stays a value (hashable, not shared with the caller).
            object.__setattr__(self, "gpu_type", gpu_types)
        if self.labels is not None:
            object.__setattr__(self, "labels", parse_labels(self.labels))

    def to_ir(self) -> ir.Resources:
        """The numeric form the control plane schedules by."""
        gpu_types = parse_gpu_types(self.gpu_type)
        return ir.Resources(
            cpu=parse_cpu(self.cpu),
            memory_bytes=parse_memory(self.memory) if self.memory is not None else 0,
            gpu=self.gpu,
            gpu_type=list(gpu_types) if len(gpu_types) > 1 else (gpu_types or (None,))[0],
            labels=parse_labels(self.labels),
        )
