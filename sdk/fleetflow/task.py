"""`@task`: a typed Python function plus the policy one attempt of it runs under.

The decorated object is a `TaskFunction`. It carries everything the other parts need:
`spec` (the IR the control plane schedules), `fn`/`input_types`/`output_type` (what the task
runtime calls and converts with), and it stays callable: a plain call outside a workflow, a
recorded node (returning a promise) inside a workflow body being compiled.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

from fleetflow import ir
from fleetflow.compiler import active_compilation, defining_on_first_use
from fleetflow.errors import (
    InvalidOptionError,
    LiteralValidationError,
    TaskDefinitionError,
    TaskOutputError,
    shown_path,
)
from fleetflow.interface import (
    Signature,
    definition_location,
    extract_signature,
    output_types,
    outputs_to_literals,
    require_function,
)
from fleetflow.resources import Resources
from fleetflow.secrets import check_names as check_secret_names
from fleetflow.types import describe_python_type, is_named_tuple

P = ParamSpec("P")
R = TypeVar("R")

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_timeout(value: int | timedelta | str | None) -> int | None:
    """A timeout as whole seconds: an int, a `timedelta`, or `"90s"`, `"30m"`, `"2h"`, `"1h30m"`.

    Fractions of a second round up, so a timeout is never shorter than asked for.

    Raises:
        InvalidOptionError: not a positive duration.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidOptionError(f"timeout must be seconds, a timedelta or '30m', got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, timedelta):
        seconds = math.ceil(value.total_seconds())
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        match = _DURATION.match(text)
        if text.isdigit():
            seconds = int(text)
        elif text and match is not None:
            units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            seconds = sum(int(match[u] or 0) * factor for u, factor in units.items())
        else:
            raise InvalidOptionError(
                f"timeout {value!r} is not a duration like '90s', '30m', '2h' or '1h30m'"
            )
    else:
        raise InvalidOptionError(
            f"timeout must be seconds (int), a timedelta or a string like '30m', got {value!r}"
        )
    if seconds <= 0:
        raise InvalidOptionError(f"timeout must be positive, got {value!r}")
    if seconds > ir.MAX_TIMEOUT_SECONDS:
        raise InvalidOptionError(
            f"timeout must be at most {ir.MAX_TIMEOUT_SECONDS} s (30 days), got {value!r}"
        )
    return seconds


def _check_retries(retries: object) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise InvalidOptionError(f"retries must be an int >= 0, got {retries!r}")
    if not 0 <= retries <= ir.MAX_RETRIES:
        raise InvalidOptionError(f"retries must be 0..{ir.MAX_RETRIES}, got {retries}")
    return retries


def _check_replicas(replicas: object) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise InvalidOptionError(
            f"replicas must be an int >= 1 (workers started together), got {replicas!r}"
        )
    if not 1 <= replicas <= ir.MAX_REPLICAS:
        raise InvalidOptionError(f"replicas must be 1..{ir.MAX_REPLICAS}, got {replicas}")
    return replicas


def _check_cache(cache: object, cache_version: object) -> str | None:
    if not isinstance(cache, bool):
        raise InvalidOptionError(f"cache must be True or False, got {cache!r}")
    if cache_version is not None and (
        not isinstance(cache_version, str) or not cache_version.strip()
    ):
        raise InvalidOptionError(
            f"cache_version must be a non-empty string such as '1', got {cache_version!r}"
        )
    if cache and cache_version is None:
        raise InvalidOptionError(
            "cache=True needs a cache_version (e.g. cache_version='1'); change it whenever the "
            "task's code changes its results, so outdated outputs are not reused"
        )
    if not cache and cache_version is not None:
        raise InvalidOptionError(
            f"cache_version={cache_version!r} is set but caching is off; add cache=True"
        )
    return cache_version


def _check_image(image: object) -> str | None:
    if image is None:
        return None
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise InvalidOptionError(f"image must be a container image reference, got {image!r}")
    return image


class TaskOptions(TypedDict, total=False):
    """The options of `@task(...)`, each optional: see `task`."""

    resources: Resources | None
    retries: int
    timeout: int | timedelta | str | None
    image: str | None
    cache: bool
    cache_version: str | None
    secrets: list[str] | tuple[str, ...]
    replicas: int


@dataclass(frozen=True)
class _Policy:
    """What one attempt of a task runs under: its options, checked."""

    retries: int
    timeout_seconds: int | None
    image: str | None
    cache: bool
    cache_version: str | None
    secrets: list[str]
    replicas: int = 1


def _check_secrets(names: object) -> list[str]:
    try:
        return check_secret_names(names)
    except ValueError as exc:
        raise InvalidOptionError(str(exc)) from None


def _check_options(options: TaskOptions) -> _Policy:
    """`options` checked (all but `resources`, which only a decorated function checks).

    Raises:
        TypeError: an option `@task` does not have.
        InvalidOptionError: an option is out of range.
    """
    unknown = sorted(options.keys() - TaskOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"task() got an unexpected keyword argument {unknown[0]!r}")
    cache = options.get("cache", False)
    return _Policy(
        retries=_check_retries(options.get("retries", 0)),
        timeout_seconds=parse_timeout(options.get("timeout")),
        image=_check_image(options.get("image")),
        cache=cache,
        cache_version=_check_cache(cache, options.get("cache_version")),
        secrets=_check_secrets(options.get("secrets", [])),
        replicas=_check_replicas(options.get("replicas", 1)),
    )


class TaskFunction(Generic[P, R]):
    """A function decorated with `@task`.

    Attributes:
        fn: the original function; the task runtime calls `fn(**kwargs)`.
        input_types: parameter name -> Python type, to convert inputs with `types.to_python`.
        output_type: the return type, to convert the result with `types.to_literal`; `None`
            when the task returns nothing.
        defaults: parameter name -> Python default value.
        spec: the `ir.TaskSpec` (name `<module>.<function>`, interface, resources, policy).
    """

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptions]) -> None:
        require_function(fn, "@task")
        name = f"{fn.__module__}.{fn.__name__}"
        resources = options.get("resources")
        if resources is not None and not isinstance(resources, Resources):
            raise InvalidOptionError(
                f"task '{name}': resources must be fleetflow.Resources(...), got {resources!r}"
            )
        try:
            self._policy = _check_options(options)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"task '{name}': {exc}") from exc
        self._resources = resources or Resources()
        self._qualified_name = name
        self.fn: Callable[P, R] = fn
        functools.update_wrapper(self, fn)
        if not defining_on_first_use():
            self.spec  # noqa: B018 - checked now: a mistake in the signature fails the import

    @functools.cached_property
    def _signature(self) -> Signature:
        return extract_signature(
            self.fn,
            functools.partial(TaskDefinitionError, task=self._qualified_name),
            decorator="@task",
        )

    @property
    def input_types(self) -> dict[str, Any]:
        return self._signature.input_types

    @property
    def output_type(self) -> Any | None:
        return self._signature.output_type

    @property
    def defaults(self) -> dict[str, Any]:
        return self._signature.defaults

    @functools.cached_property
    def spec(self) -> ir.TaskSpec:
        fn, policy = self.fn, self._policy
        return ir.TaskSpec(
            name=self._qualified_name,
            module=fn.__module__,
            function=fn.__name__,
            interface=self._signature.interface,
            resources=self._resources.to_ir(),
            retries=policy.retries,
            timeout_seconds=policy.timeout_seconds,
            image=policy.image,
            cache=policy.cache,
            cache_version=policy.cache_version,
            secrets=policy.secrets,
            replicas=policy.replicas,
        )

    dynamic = False
    """Whether it is a `@dynamic` task (its spec says so too; this needs no spec)."""

    @property
    def name(self) -> str:
        """`<module>.<function>`, its spec's name, without building the spec."""
        return self._qualified_name

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Outside a workflow: call the function. Inside a workflow body: record a node.

        In a workflow body the result is really a `Promise` of `R`; typing it as `R` lets type
        checkers verify the wiring in the body as if values flowed through it.
        """
        compilation = active_compilation()
        if compilation is None:
            return self.fn(*args, **kwargs)
        return compilation.call_task(self, args, kwargs)  # type: ignore[return-value]


def result_to_literals(task: Any, value: Any, path: str = "outputs") -> dict[str, Any]:
    """What a task's function returned -> its outputs as JSON literals, by output name.

    `task` is a `TaskFunction`, or anything with its `fn` and `output_type`, as the task
    runtime loads it.

    Raises:
        TaskOutputError: `value` does not match the return annotation; the message names the
            task, its `def`'s `file:line`, what came back and what was expected.
    """
    try:
        return outputs_to_literals(value, task.output_type, path)
    except LiteralValidationError as exc:
        raise _output_error(task.fn, task.output_type, value, path, exc) from None


def _output_error(
    fn: Callable[..., Any],
    output_type: Any | None,
    value: Any,
    path: str,
    exc: LiteralValidationError,
) -> TaskOutputError:
    """`exc`, found at `exc.path` while converting `value`, told about the task `fn`."""
    types = output_types(output_type)
    named = is_named_tuple(output_type)
    output: str | None = None
    returned_value, annotation = value, output_type
    inner = ""
    # `exc.path` is `path` (a NamedTuple of the wrong shape) or `path.<output><inner>`.
    rest = exc.path[len(path) + 1 :] if exc.path.startswith(f"{path}.") else ""
    for index, name in enumerate(types):
        if rest == name or rest.startswith((f"{name}.", f"{name}[")):
            inner = rest[len(name) :].lstrip(".")
            if named:
                output, returned_value, annotation = name, value[index], types[name]
            break
    expected = describe_python_type(annotation)
    if named and output is None:
        expected += f" ({len(types)} outputs: {', '.join(types)})"
    simple = not inner and exc.reason.startswith("expected ")
    detail = None if simple else (f"at {inner}: " if inner else "") + exc.reason
    file, _, line = definition_location(fn).rpartition(":")
    return TaskOutputError(
        exc.path,
        exc.reason,
        task=f"{fn.__module__}.{fn.__name__}",
        function=fn.__name__,
        location=f"{shown_path(file)}:{line}",
        returned=_describe_returned(returned_value),
        expected=expected,
        output=output,
        detail=detail,
    )


def _describe_returned(value: Any) -> str:
    """`str 'abc'`, `list [1.0, 'x']`, `None`: the type and the start of the value (paths in
    it relative to the working directory, as in the rest of the message)."""
    if value is None:
        return "None"
    text = repr(value).replace(os.getcwd() + os.sep, "")
    if len(text) > 60:
        text = text[:57] + "..."
    kind = type(value).__name__
    return text if text.startswith(kind) else f"{kind} {text}"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(**options: Unpack[TaskOptions]) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None, /, **options: Unpack[TaskOptions]
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Declare a task: `@task` or `@task(resources=..., retries=..., timeout=..., image=...)`.

    Args:
        resources: what one attempt requests (cpu, memory, gpu, gpu_type).
        retries: how many times a failed attempt is retried (0 = no retry), remotely and in
            local runs alike.
        timeout: per attempt; int seconds, a `timedelta`, or `"90s"`, `"30m"`, `"1h30m"`.
        image: container image to run in; `None` uses the platform's default.
        cache: reuse the outputs of an earlier run with the same inputs instead of running
            again: always on the control plane; in local runs only when a local cache
            directory is given (`FLEETFLOW_LOCAL_CACHE_DIR`, `fleetflow run --cache-dir`).
        cache_version: required with `cache=True`; part of the cache key, so bumping it
            invalidates the outputs cached so far.
        secrets: names of the tenant's secrets the task gets, each in the environment
            variable `FLEETFLOW_SECRET_<NAME>` (`wandb-key`: `FLEETFLOW_SECRET_WANDB_KEY`);
            in local runs, read from that variable of your own environment.
        replicas: workers started together as one attempt (a multi-node task, e.g. data
            parallel training), each holding `resources`, all on one cluster or none, with
            the rendezvous environment of `torch.distributed` (`MASTER_ADDR`, `MASTER_PORT`,
            `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `NODE_RANK`); the task's result is rank 0's.
            A local run calls the function once.

    Raises:
        InvalidOptionError: an option is out of range.
        TaskDefinitionError: a parameter or the return is unannotated or of an unsupported
            type; the message names the task, the parameter and the def's `file:line`.
    """
    if fn is None:
        # Check the options now, so `@task(retries=-1)` fails even before it decorates.
        _check_options(options)

        def decorate(function: Callable[P, R]) -> TaskFunction[P, R]:
            return TaskFunction(function, **options)

        return decorate
    return TaskFunction(fn, **options)
