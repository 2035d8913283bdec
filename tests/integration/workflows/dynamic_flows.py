"""Workflows with dynamic tasks, run through the whole stack (test_dynamic.py)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from fleetflow import conditional, dynamic, map_task, task, workflow
from fleetflow.dynamic import DynamicFunction


@task
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@task(retries=1)
def square(x: int) -> int:
    return x * x


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def pause(x: int, seconds: float = 0.0, marker: str = "") -> int:
    """`x`, after writing `marker` (when given) and sleeping `seconds`."""
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        with contextlib.suppress(PermissionError):
            os.chmod(marker, 0o666)
    time.sleep(seconds)
    return x


@dynamic
def sum_squares(xs: list[int]) -> int:
    """A loop over a list known only at run time: one `square` and one `add` per element."""
    result = 0
    for x in xs:
        result = add(a=result, b=square(x=x))
    return result


@dynamic(retries=1)
def nested(n: int) -> int:
    """Dynamic tasks inside a dynamic task, and a map node."""
    parts = [sum_squares(xs=list(range(k))) for k in range(1, n)]
    return total(values=[*parts, total(values=map_task(square)(x=list(range(n))))])


@workflow
def squares(n: int) -> int:
    return add(a=sum_squares(xs=numbers(n=n)), b=nested(n=n))


@dynamic
def by_sign(n: int) -> int:
    """A conditional in a sub-DAG."""
    m = add(a=n, b=0)
    return conditional("sign").if_(m > 0).then(square(x=m)).else_().then(add(a=m, b=-1))


@workflow
def signs(n: int) -> int:
    return add(a=by_sign(n=n), b=0)


@dynamic
def slow_steps(n: int, seconds: float, marker: str) -> int:
    first = pause(x=n, seconds=seconds, marker=marker)
    return add(a=first, b=pause(x=first))


@workflow
def slow(n: int, seconds: float = 0.0, marker: str = "") -> int:
    return slow_steps(n=n, seconds=seconds, marker=marker)


@dynamic
def mistyped(n: int) -> int:
    return add(a=str(n), b=n)  # type: ignore[arg-type]


@workflow
def mistyped_flow(n: int) -> int:
    return mistyped(n=n)


@dynamic
def deeper(level: int) -> int:
    """Nests itself `level` times."""
    if level == 0:
        return add(a=0, b=1)
    return deeper(level=level - 1)


@workflow
def deep(level: int) -> int:
    return deeper(level=level)


def forged(change: Callable[[dict[str, Any]], None]) -> Callable[..., DynamicFunction[..., Any]]:
    """A dynamic task whose attempt writes a sub-DAG changed by `change`, as hostile task
    code could write anything as its outputs document."""

    def decorate(fn: Callable[..., Any]) -> DynamicFunction[..., Any]:
        made = DynamicFunction(fn)
        build = made.build_python

        def build_python(kwargs: Any, node_id: str = "") -> Any:
            data = build(kwargs, node_id).spec.model_dump(mode="json")
            change(data)
            return SimpleNamespace(spec=SimpleNamespace(model_dump=lambda mode: data))

        made.build_python = build_python  # type: ignore[method-assign]
        return made

    return decorate


def _foreign_task(data: dict[str, Any]) -> None:
    spec = data["tasks"]["dynamic_flows.square"]
    data["tasks"]["dynamic_flows.square"] = {**spec, "module": "not_in_the_bundle"}


def _many_nodes(data: dict[str, Any]) -> None:
    node = data["nodes"][0]
    data["nodes"] = [{**node, "id": f"n{i}-square"} for i in range(1001)]


@forged(_foreign_task)
def foreign(n: int) -> int:
    return square(x=n)


@forged(_many_nodes)
def too_many(n: int) -> int:
    return square(x=n)


@workflow
def foreign_flow(n: int) -> int:
    return foreign(n=n)


@workflow
def too_many_flow(n: int) -> int:
    return too_many(n=n)
