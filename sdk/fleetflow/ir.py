"""The compiled workflow spec (IR): what the SDK produces and the control plane executes.

Everything here is pydantic and JSON-serialisable, so the same spec travels from the engineer's
machine to the API, the database and the Temporal workflow unchanged. Values ("literals") are
plain JSON whose shape is described by a `LiteralType`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetflow.secrets import check_names as check_secret_names
from fleetflow.states import map_failures_allowed

SPEC_FORMAT_VERSION = 1

# Bounds on every number in a spec. Each fits the type it travels as to the agent
# (protos/fleetflow/agent/v1/agent.proto: `Resources.cpu` double, `memory_bytes` int64, `gpu`
# int32; `Assignment.timeout_seconds` int32) and the column it is stored in, and is far beyond
# what one attempt (one pod on one node) can use: a spec outside them is refused when it is
# registered, not when its attempt is leased to an agent.
MAX_CPU_CORES = 1024.0
MAX_MEMORY_BYTES = 64 * 2**40  # 64 TiB
MAX_GPUS = 64
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600  # 30 days
MAX_RETRIES = 100
MAX_REPLICAS = 256  # workers of one multi-node task (a gang), all started together
MAX_MAP_CONCURRENCY = 10_000
MAX_GPU_TYPE_LENGTH = 64  # what an attempt records of it (task_attempts.gpu_type)
MAX_CONDITIONAL_CASES = 100
MAX_CONDITION_TERMS = 1000
MAX_FAIL_MESSAGE_LENGTH = 4000
# A `@dynamic` task's sub-DAG, built when it runs: at most this many nodes, and dynamic tasks
# nested (a dynamic task in a dynamic task's sub-DAG) at most this deep.
MAX_DYNAMIC_NODES = 1000
MAX_DYNAMIC_DEPTH = 4
# A node of a sub-DAG is `<dynamic node id>/<its id>`; ids are stored in 128 characters.
MAX_NODE_ID_LENGTH = 128


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TypeKind(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    BOOLEAN = "boolean"
    BYTES = "bytes"  # literal: base64 string
    DATETIME = "datetime"  # literal: ISO 8601 string; an offset only if the value had one
    DURATION = "duration"  # literal: seconds as a number
    ENUM = "enum"  # literal: the member's string value, one of `values`
    OPTIONAL = "optional"  # literal: null or a literal of `item`
    LIST = "list"
    DICT = "dict"  # literal keys are strings: see LiteralType.key
    SET = "set"  # literal: a list of distinct item literals, in their JSON text's order
    STRUCT = "struct"  # a dataclass or pydantic model: named, typed fields
    FILE = "file"  # literal: {"uri": ..., "name": ...}, a blob
    DIRECTORY = "directory"  # literal: {"uri": ...}, a prefix of blobs
    NDARRAY = "ndarray"  # a numpy.ndarray; literal: a File's, naming its `.npy` file
    DATAFRAME = "dataframe"  # a pandas.DataFrame; literal: a File's, naming its Parquet file
    UNION = "union"  # literal: {"variant": <the variant's describe()>, "value": its literal}


#: The kinds whose literal names one file in the blob store (`{"uri": ..., "name": ...}`): a
#: `File`, and the values stored as a file of a known format. Wherever blobs are found, uploaded,
#: staged or downloaded, a value of these kinds is a file.
FILE_KINDS = frozenset({TypeKind.FILE, TypeKind.NDARRAY, TypeKind.DATAFRAME})


class LiteralType(_Frozen):
    """The type of a value in the IR.

    `item` is the element type of a list or a set, the value type of a dict and the inner type
    of an optional; `key` is a dict's key type when it is not str (int, or an enum), whose
    literal keys are an int's decimal form or an enum member's value; `name` and `fields`
    describe a struct by its qualified name and its typed fields; `name` and `values` describe
    an enum (or a `Literal` of strings); `variants` are a union's alternatives, in the order of
    their `describe()` (see `union_literals.union_value` for its literal).
    """

    kind: TypeKind
    item: LiteralType | None = None
    # Not written when absent (every type but an int- or enum-keyed dict): specs and their
    # digests stay what they were before dict keys had a type.
    key: LiteralType | None = Field(default=None, exclude_if=lambda key: key is None)
    name: str | None = None
    fields: dict[str, LiteralType] | None = None
    values: list[str] | None = None
    # A union's alternatives, in declaration order; not written for any other type, so specs
    # and their digests stay what they were before unions.
    variants: list[LiteralType] | None = Field(
        default=None, exclude_if=lambda variants: variants is None
    )

    def variant(self, tag: Any) -> LiteralType | None:
        """A union's variant whose `describe()` is `tag` (the `variant` of its literal)."""
        return next((v for v in self.variants or [] if v.describe() == tag), None)

    def describe(self) -> str:
        """Human-readable type, as a Python annotation would read (`list[int]`, `Metrics`)."""
        match self.kind:
            case TypeKind.INTEGER:
                return "int"
            case TypeKind.FLOAT:
                return "float"
            case TypeKind.STRING:
                return "str"
            case TypeKind.BOOLEAN:
                return "bool"
            case TypeKind.BYTES:
                return "bytes"
            case TypeKind.DATETIME:
                return "datetime"
            case TypeKind.DURATION:
                return "timedelta"
            case TypeKind.FILE:
                return "File"
            case TypeKind.DIRECTORY:
                return "Directory"
            case TypeKind.NDARRAY:
                return "ndarray"
            case TypeKind.DATAFRAME:
                return "DataFrame"
            case TypeKind.OPTIONAL:
                return f"Optional[{self.item.describe() if self.item else '?'}]"
            case TypeKind.ENUM:
                if self.name is not None and self.name.startswith("Literal["):
                    return self.name  # its values may hold dots
                return (self.name or "enum").rsplit(".", 1)[-1]
            case TypeKind.LIST:
                return f"list[{self.item.describe() if self.item else '?'}]"
            case TypeKind.DICT:
                key = self.key.describe() if self.key else "str"
                return f"dict[{key}, {self.item.describe() if self.item else '?'}]"
            case TypeKind.SET:
                return f"set[{self.item.describe() if self.item else '?'}]"
            case TypeKind.STRUCT:
                return (self.name or "struct").rsplit(".", 1)[-1]
            case TypeKind.UNION:
                return " | ".join(v.describe() for v in self.variants or [])


class Variable(_Frozen):
    name: str
    type: LiteralType
    # JSON literal of the default; only meaningful when `has_default`.
    default: Any = None
    has_default: bool = False


class TypedInterface(_Frozen):
    inputs: list[Variable] = Field(default_factory=list)
    outputs: list[Variable] = Field(default_factory=list)

    def input(self, name: str) -> Variable | None:
        return next((v for v in self.inputs if v.name == name), None)

    def output(self, name: str) -> Variable | None:
        return next((v for v in self.outputs if v.name == name), None)


class Resources(_Frozen):
    """What one attempt of a task requests. Memory in bytes; 0 means "executor default".

    `gpu_type` is one accelerator model or a list of acceptable ones in order of preference
    (placement takes the first that fits somewhere now); `gpu_types` reads either form as a
    list. `labels` are cluster labels the cluster running the attempt must carry. Every number
    is finite, at least 0 and at most its `MAX_*` bound.
    """

    cpu: float = Field(default=1.0, ge=0, le=MAX_CPU_CORES, allow_inf_nan=False)
    memory_bytes: int = Field(default=0, ge=0, le=MAX_MEMORY_BYTES)
    gpu: int = Field(default=0, ge=0, le=MAX_GPUS)
    gpu_type: str | list[str] | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("gpu_type")
    @classmethod
    def _known_gpu_types(cls, value: str | list[str] | None) -> str | list[str] | None:
        types = [value] if isinstance(value, str) else value or []
        if isinstance(value, list) and not value:
            raise ValueError("gpu_type must name at least one GPU type")
        if any(not t.strip() for t in types):
            raise ValueError("GPU types must be non-empty strings")
        if any(len(t) > MAX_GPU_TYPE_LENGTH for t in types):
            raise ValueError(f"GPU type names are at most {MAX_GPU_TYPE_LENGTH} characters")
        if len(set(types)) != len(types):
            raise ValueError(f"gpu_type lists a GPU type twice: {types}")
        return value

    @property
    def gpu_types(self) -> list[str]:
        """Acceptable GPU types, most preferred first; empty when any type will do."""
        if self.gpu_type is None:
            return []
        return [self.gpu_type] if isinstance(self.gpu_type, str) else list(self.gpu_type)


class WorkflowReference(_Frozen):
    """A workflow registered on the platform, by name and version, in the tenant of the
    workflow that calls it (`@fleetflow.reference_workflow`)."""

    name: str = Field(min_length=1, max_length=256)
    version: str = Field(min_length=1, max_length=128)


class TaskSpec(_Frozen):
    """One task: where its code lives inside the bundle, its typed interface and its policy."""

    name: str  # unique within a spec: "<module>.<function>"
    module: str  # import path inside the code bundle
    function: str
    interface: TypedInterface
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    timeout_seconds: int | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    image: str | None = None
    # Outputs are reused for the same inputs while `cache_version` is unchanged.
    cache: bool = False
    cache_version: str | None = None
    # A `@dynamic` task: when it runs, it returns a sub-DAG (a `WorkflowSpec`) that runs in its
    # place, whose outputs are the node's. Not written when false: other specs keep their
    # digests.
    dynamic: bool = Field(default=False, exclude_if=lambda dynamic: not dynamic)
    # A reference to a registered workflow (a typed stub): its node runs that workflow version
    # as a child execution, whose outputs are the node's. Not written when absent.
    reference: WorkflowReference | None = Field(
        default=None, exclude_if=lambda reference: reference is None
    )
    # Names of the tenant's secrets the task gets (`fleetflow.secrets`): names only, never
    # values. Not written when empty: other specs keep their digests.
    secrets: list[str] = Field(default_factory=list, exclude_if=lambda secrets: not secrets)
    # Workers started together as one attempt (a gang: `@task(replicas=4)`), each holding
    # `resources`; rank 0's return value is the task's. Not written when 1: other specs keep
    # their digests.
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, exclude_if=lambda n: n == 1)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, names: list[str]) -> list[str]:
        return check_secret_names(names)


class MapSpec(_Frozen):
    """A map node runs its task once per element of the inputs named in `over` (each bound to
    a list of the parameter's type); other inputs are passed whole to every element. Its
    outputs are lists, in element order."""

    over: list[str]
    concurrency: int | None = Field(default=None, gt=0, le=MAX_MAP_CONCURRENCY)
    # The node succeeds when at least this fraction of its elements do (after their
    # retries); a failed element's outputs are null. Not written when 1.0 (any failure
    # fails the node): specs without it keep their digests.
    min_success_ratio: float = Field(
        default=1.0, gt=0, le=1, allow_inf_nan=False, exclude_if=lambda ratio: ratio == 1.0
    )

    @field_validator("min_success_ratio", mode="before")
    @classmethod
    def _ratio_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number in (0, 1], got {value!r}")
        return value

    def failures_allowed(self, elements: int) -> int:
        """How many of `elements` may fail with the node still succeeding."""
        return map_failures_allowed(elements, self.min_success_ratio)

    def output_type(self, element: LiteralType) -> LiteralType:
        """The type of an output of the node whose elements' output has type `element`: the
        list of their values, each `Optional` when an element may fail (and be None)."""
        if self.min_success_ratio != 1.0 and element.kind is not TypeKind.OPTIONAL:
            element = LiteralType(kind=TypeKind.OPTIONAL, item=element)
        return LiteralType(kind=TypeKind.LIST, item=element)


class InputBinding(_Frozen):
    """The value of a workflow input."""

    kind: Literal["input"] = "input"
    input: str


class NodeOutputBinding(_Frozen):
    """An output of an upstream node (what a promise compiles to)."""

    kind: Literal["node_output"] = "node_output"
    node_id: str
    output: str


class LiteralBinding(_Frozen):
    """A constant written in the workflow body."""

    kind: Literal["literal"] = "literal"
    value: Any


class SelectBinding(_Frozen):
    """The output of a conditional: the first of `options` (outputs of the branches' nodes,
    each guarded by its branch's condition) whose node ran; null when none did."""

    kind: Literal["select"] = "select"
    options: list[NodeOutputBinding] = Field(min_length=1, max_length=MAX_CONDITIONAL_CASES)


class ListBinding(_Frozen):
    """A list written in the workflow body with promises among its items (`t(xs=[a, b, 3])`):
    each item is bound on its own (and may be a collection itself); the value is the list of
    the items' values."""

    kind: Literal["list"] = "list"
    items: list[Binding]

    def item_bindings(self) -> list[tuple[str, Binding]]:
        """Each item with where it is in the list (`[2]`), in order."""
        return [(f"[{index}]", item) for index, item in enumerate(self.items)]


class DictBinding(_Frozen):
    """A dict written in the workflow body with promises among its values
    (`t(d={"a": a, "b": 2})`): `items` maps each literal key (a str, an int's decimal form or
    an enum member's value, as in a dict literal) to its value's binding."""

    kind: Literal["dict"] = "dict"
    items: dict[str, Binding]

    def item_bindings(self) -> list[tuple[str, Binding]]:
        """Each value with where it is in the dict (`['key']`), in order."""
        return [(f"[{key!r}]", item) for key, item in self.items.items()]


#: What a list or dict built from promises in a workflow body compiles to.
CollectionBinding = ListBinding | DictBinding

Binding = Annotated[
    InputBinding | NodeOutputBinding | LiteralBinding | SelectBinding | ListBinding | DictBinding,
    Field(discriminator="kind"),
]
ListBinding.model_rebuild()
DictBinding.model_rebuild()

#: A binding resolved on its own: collections are built from these.
LeafBinding = InputBinding | NodeOutputBinding | LiteralBinding | SelectBinding


def leaf_bindings(binding: Binding) -> Iterator[LeafBinding]:
    """The bindings in `binding` that are not collections, collections walked in order."""
    if isinstance(binding, CollectionBinding):
        for _, item in binding.item_bindings():
            yield from leaf_bindings(item)
    else:
        yield binding


def resolve_binding(binding: Binding, leaf: Callable[[LeafBinding], Any]) -> Any:
    """The value of `binding`: `leaf` gives each leaf binding's (input, node output, literal,
    select), and collections are built from their items' values."""
    if not isinstance(binding, CollectionBinding):
        return leaf(binding)
    if isinstance(binding, ListBinding):
        return [resolve_binding(item, leaf) for item in binding.items]
    return {key: resolve_binding(item, leaf) for key, item in binding.items.items()}


#: What a comparison compares: a workflow input, a node's output or a constant.
Operand = Annotated[InputBinding | NodeOutputBinding | LiteralBinding, Field(discriminator="kind")]

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


class Comparison(_Frozen):
    """`left <op> right`, evaluated on the operands' JSON literals when the workflow runs."""

    kind: Literal["compare"] = "compare"
    op: Literal["==", "!=", "<", "<=", ">", ">="]
    left: Operand
    right: Operand


class AllOf(_Frozen):
    """True when every condition is, evaluated in order and no further than the first false
    one (so a later condition may read what only exists when an earlier one holds)."""

    kind: Literal["and"] = "and"
    conditions: list[Condition] = Field(min_length=1, max_length=MAX_CONDITION_TERMS)


class AnyOf(_Frozen):
    """True when one of the conditions is, evaluated in order up to the first true one."""

    kind: Literal["or"] = "or"
    conditions: list[Condition] = Field(min_length=1, max_length=MAX_CONDITION_TERMS)


class Not(_Frozen):
    kind: Literal["not"] = "not"
    condition: Condition


Condition = Annotated[Comparison | AllOf | AnyOf | Not, Field(discriminator="kind")]
for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()


def condition_bindings(condition: Condition) -> list[InputBinding | NodeOutputBinding]:
    """The inputs and node outputs a condition reads, in order."""
    match condition:
        case Comparison():
            return [
                b for b in (condition.left, condition.right) if not isinstance(b, LiteralBinding)
            ]
        case AllOf() | AnyOf():
            return [b for c in condition.conditions for b in condition_bindings(c)]
        case Not():
            return condition_bindings(condition.condition)


def _upstream(bindings: list[Binding], when: Condition | None) -> list[str]:
    seen: dict[str, None] = {}
    read: list[Binding] = list(condition_bindings(when)) if when is not None else []
    for binding in (leaf for b in read + bindings for leaf in leaf_bindings(b)):
        if isinstance(binding, NodeOutputBinding):
            seen.setdefault(binding.node_id, None)
        elif isinstance(binding, SelectBinding):
            for option in binding.options:
                seen.setdefault(option.node_id, None)
    return list(seen)


class Node(_Frozen):
    id: str
    task: str  # key into WorkflowSpec.tasks
    inputs: dict[str, Binding] = Field(default_factory=dict)
    map: MapSpec | None = None
    # Runs only when this holds (a branch of a conditional), else is skipped. Not written
    # when absent: specs without conditionals keep their digests.
    when: Condition | None = Field(default=None, exclude_if=lambda when: when is None)

    @property
    def upstream(self) -> list[str]:
        """Ids of the nodes this one consumes outputs of (its condition's first), in
        first-use order, unique."""
        return _upstream(list(self.inputs.values()), self.when)


class Failure(_Frozen):
    """`.fail(message)` of a conditional's branch: the execution fails with `message` when
    `when` holds."""

    id: str
    when: Condition
    message: str = Field(min_length=1, max_length=MAX_FAIL_MESSAGE_LENGTH)

    @property
    def upstream(self) -> list[str]:
        return _upstream([], self.when)


class WorkflowSpec(_Frozen):
    """A compiled workflow: interface, DAG of task nodes, and how its outputs are bound."""

    format_version: int = SPEC_FORMAT_VERSION
    name: str  # "<module>.<function>"
    module: str
    function: str
    interface: TypedInterface
    tasks: dict[str, TaskSpec]
    nodes: list[Node]
    outputs: dict[str, Binding] = Field(default_factory=dict)
    # The conditionals' `.fail(...)` branches. Not written when empty.
    failures: list[Failure] = Field(default_factory=list, exclude_if=lambda failures: not failures)

    @model_validator(mode="after")
    def _no_map_of_dynamic_tasks(self) -> WorkflowSpec:
        for node in self.nodes:
            task = self.tasks.get(node.task)
            if node.map is not None and task is not None and task.dynamic:
                raise ValueError(f"map node '{node.id}' runs dynamic task '{task.name}'")
            if node.map is not None and task is not None and task.reference is not None:
                raise ValueError(f"map node '{node.id}' runs reference workflow '{task.name}'")
        for task in self.tasks.values():
            if task.dynamic and task.reference is not None:
                raise ValueError(f"task '{task.name}' is both dynamic and a reference")
        return self

    @model_validator(mode="after")
    def _conditions_are_sound(self) -> WorkflowSpec:
        if any(node.when is not None for node in self.nodes) or self.failures:
            from fleetflow.spec_conditions import check_conditions  # it reads this module

            check_conditions(self)
        else:
            for binding in self.outputs.values():
                if isinstance(binding, SelectBinding):
                    raise ValueError("a select binding needs nodes guarded by a condition")
            for node in self.nodes:
                if any(isinstance(b, SelectBinding) for b in node.inputs.values()):
                    raise ValueError("a select binding needs nodes guarded by a condition")
        return self

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def digest(self) -> str:
        """Content hash of the spec: the default version when it is registered."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# ----------------------------------------------------------------------- dynamic sub-DAGs

#: What a dynamic task's attempt writes as its outputs document: its sub-DAG, under this key.
DYNAMIC_SPEC_OUTPUT = "fleetflow.dynamic.spec"
_SUB_NODE_ID = re.compile(r"^[nf][0-9]+-[\w.-]{1,64}$")


def dynamic_depth(node_id: str) -> int:
    """How deep the sub-DAG of the dynamic node `node_id` is: 1 for a node of the workflow,
    2 for a node of that node's sub-DAG, ..."""
    return node_id.count("/") + 1


def check_dynamic_spec(spec: WorkflowSpec, node_id: str, task: str) -> None:
    """What a sub-DAG built by the dynamic task `task` (run as node `node_id`) must be;
    ValueError naming the task otherwise. It needs no inputs (the task's input values are
    constants in it), has at most `MAX_DYNAMIC_NODES` nodes, nests no deeper than
    `MAX_DYNAMIC_DEPTH`, and its node ids are those the compiler gives."""
    where = f"dynamic task '{task}' (node '{node_id}')"
    depth = dynamic_depth(node_id)
    if depth > MAX_DYNAMIC_DEPTH:
        raise ValueError(
            f"{where}: dynamic tasks are nested {depth} deep; at most {MAX_DYNAMIC_DEPTH} "
            "levels are allowed"
        )
    if len(spec.nodes) > MAX_DYNAMIC_NODES:
        raise ValueError(
            f"{where} built a sub-DAG of {len(spec.nodes)} nodes; the limit is "
            f"{MAX_DYNAMIC_NODES} (use map_task for many elements of one task)"
        )
    if spec.interface.inputs:
        raise ValueError(f"{where}: its sub-DAG must not declare inputs")
    for sub_task in spec.tasks.values():  # checked when the calling workflow is registered
        if sub_task.reference is not None:
            raise ValueError(
                f"{where}: its sub-DAG calls reference workflow '{sub_task.name}'; call "
                "references in the workflow's body instead"
            )
    ids = [node.id for node in spec.nodes] + [failure.id for failure in spec.failures]
    for step_id in ids:
        if not _SUB_NODE_ID.match(step_id):
            raise ValueError(f"{where}: its sub-DAG has an invalid node id {step_id[:80]!r}")
        if len(f"{node_id}/{step_id}") > MAX_NODE_ID_LENGTH:
            raise ValueError(
                f"{where}: node id '{node_id}/{step_id}' is longer than "
                f"{MAX_NODE_ID_LENGTH} characters (nest dynamic tasks less deeply)"
            )
    bindings: list[Binding] = list(spec.outputs.values())
    for node in spec.nodes:
        if node.task not in spec.tasks:
            raise ValueError(f"{where}: node '{node.id}' runs task '{node.task}', not in its spec")
        bindings += list(node.inputs.values())
    for binding in bindings:
        for leaf in leaf_bindings(binding):
            if isinstance(leaf, InputBinding):
                raise ValueError(f"{where}: its sub-DAG reads input '{leaf.input}'")


def prefix_spec(spec: WorkflowSpec, prefix: str) -> WorkflowSpec:
    """`spec` with every node and failure id (and every reference to one) prefixed
    `<prefix>/`: the sub-DAG of the dynamic node `prefix`, as the execution runs it."""

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("kind") == "literal":  # a constant: its value is not a binding
                return value
            renamed = {key: rename(item) for key, item in value.items()}
            if value.get("kind") == "node_output" and isinstance(value.get("node_id"), str):
                renamed["node_id"] = f"{prefix}/{value['node_id']}"
            return renamed
        if isinstance(value, list):
            return [rename(item) for item in value]
        return value

    data = spec.model_dump(mode="json")
    nodes = [{**rename(node), "id": f"{prefix}/{node['id']}"} for node in data["nodes"]]
    failures = [
        {**rename(failure), "id": f"{prefix}/{failure['id']}"}
        for failure in data.get("failures", [])
    ]
    data.update(nodes=nodes, failures=failures, outputs=rename(data["outputs"]))
    if not failures:
        del data["failures"]
    return WorkflowSpec.model_validate(data)
