"""What the agent knows about a task attempt, independent of the wire protocol.

Executors and the agent loop speak in these types; `protocol` is the only module that maps them
to and from protobuf messages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from fleetflow.states import AttemptState


@dataclass(frozen=True)
class AttemptResources:
    cpu: float = 0.0
    memory_bytes: int = 0
    gpu: int = 0
    gpu_type: str = ""


@dataclass(frozen=True)
class InputBlob:
    """A File or Directory among the attempt's inputs, which the control plane checked is the
    tenant's to read: what an agent that stages inputs copies for the task."""

    uri: str
    file_name: str = ""  # empty for a directory
    directory: bool = False


@dataclass(frozen=True)
class TaskSecret:
    """One of the tenant's secrets the task gets, in the environment variable `env_var`:
    its `value`, or (for a pod) a reference to a Kubernetes Secret the agent never reads."""

    name: str
    env_var: str
    value: str = field(default="", repr=False)
    kubernetes_secret: str = ""
    kubernetes_key: str = ""

    @property
    def is_reference(self) -> bool:
        return bool(self.kubernetes_secret)


@dataclass(frozen=True)
class TaskAssignment:
    """One attempt leased to this agent: which code to run, on which data, under which lease."""

    attempt_id: str
    fencing_token: int
    execution_id: str
    node_id: str
    tenant: str
    task_module: str
    task_function: str
    bundle_uri: str
    inputs_uri: str
    outputs_uri: str
    resources: AttemptResources = field(default_factory=AttemptResources)
    timeout_seconds: int = 0  # 0 = no timeout
    image: str = ""
    input_blobs: tuple[InputBlob, ...] = ()
    attempt_number: int = 0  # 1 for the unit's first try; 0: the control plane did not say
    map_index: int | None = None  # the element of a map node; None for an ordinary node
    checkpoint_uri: str = ""  # where the attempt's unit keeps its checkpoint; "": none
    replicas: int = 1  # workers started together (a gang), each holding `resources`
    # Never written to disk, an annotation or a log: the process (or pod) of the attempt only.
    secrets: tuple[TaskSecret, ...] = field(default=(), repr=False)

    @property
    def secret_values(self) -> list[str]:
        """The values this agent holds, to hide from the task's log it ships."""
        return [secret.value for secret in self.secrets if secret.value]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class AttemptEvent:
    """A state change an executor observed for one attempt."""

    attempt_id: str
    state: AttemptState
    message: str = ""
    traceback: str = ""
    observed_at: dt.datetime = field(default_factory=_now)
