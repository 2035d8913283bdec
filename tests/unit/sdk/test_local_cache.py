"""Cache options of `@task` and the opt-in local cache: keyed like the control plane's, files
by content, hits answered without calling the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control_plane.db.repositories import task_cache
from fleetflow import File, InvalidOptionError, map_task, task, workflow
from fleetflow.cache import CACHE_DIR_ENV, LocalCache, cache_key
from fleetflow.task import TaskFunction

MODULE = __name__
CALLS: dict[str, int] = {}


def count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)


@task(cache=True, cache_version="1")
def slow_square(x: int) -> int:
    count("slow_square")
    return x * x


@task(cache=True, cache_version="2")
def slow_square_v2(x: int) -> int:
    count("slow_square_v2")
    return x * x


@task
def uncached(x: int) -> int:
    count("uncached")
    return x + 1


@task(cache=True, cache_version="1")
def line_count(data: File) -> int:
    count("line_count")
    return len(data.path.read_text().splitlines())


@task(cache=True, cache_version="1")
def report(text: str, directory: str) -> File:
    count("report")
    path = Path(directory) / "report.txt"
    path.write_text(text)
    return File(path)


@workflow
def cached_pipeline(x: int) -> int:
    return uncached(x=slow_square(x=x))


@workflow
def cached_squares(xs: list[int]) -> list[int]:
    return map_task(slow_square, concurrency=2)(x=xs)


# Options ---------------------------------------------------------------------------------------


def test_cache_options_go_into_the_task_spec() -> None:
    assert (slow_square.spec.cache, slow_square.spec.cache_version) == (True, "1")
    assert (uncached.spec.cache, uncached.spec.cache_version) == (False, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cache": True}, "cache=True needs a cache_version"),
        ({"cache": True, "cache_version": ""}, "cache_version must be a non-empty string"),
        ({"cache": True, "cache_version": 1}, "cache_version must be a non-empty string"),
        ({"cache_version": "1"}, "cache_version='1' is set but caching is off; add cache=True"),
        ({"cache": "yes", "cache_version": "1"}, "cache must be True or False"),
    ],
)
def test_cache_options_are_checked_at_decoration(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        task(**options)  # type: ignore[call-overload]

    def plain(x: int) -> int:
        return x

    with pytest.raises(InvalidOptionError, match=message) as info:
        TaskFunction(plain, **options)  # type: ignore[arg-type]
    assert f"task '{MODULE}.plain'" in str(info.value)


# The key ---------------------------------------------------------------------------------------


def test_the_key_is_the_control_planes_scoped_to_a_tenant() -> None:
    inputs = {"x": 3}
    scoped = task_cache.cache_key("tenant-1", slow_square.spec, inputs)
    assert scoped == cache_key(slow_square.spec, inputs, scope="tenant:tenant-1")
    assert scoped != task_cache.cache_key("tenant-2", slow_square.spec, inputs)
    assert scoped != cache_key(slow_square.spec, inputs)  # a local run never finds tenants'
    assert LocalCache("unused").key(slow_square.spec, inputs) == cache_key(slow_square.spec, inputs)
    assert cache_key(slow_square.spec, {"x": 4}) != cache_key(slow_square.spec, inputs)
    assert cache_key(slow_square_v2.spec, inputs) != cache_key(slow_square.spec, inputs)


def test_a_file_input_is_keyed_by_its_content_not_its_path(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    one, two = tmp_path / "a" / "data.csv", tmp_path / "b" / "data.csv"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("x\n1\n")

    def key(path: Path) -> str:
        return cache.key(line_count.spec, {"data": {"uri": path.as_uri(), "name": path.name}})

    assert key(one) == key(two)
    two.write_text("x\n2\n")
    assert key(one) != key(two)


# Local runs ------------------------------------------------------------------------------------


def test_local_runs_do_not_cache_unless_asked() -> None:
    assert LocalCache.from_env() is None
    assert cached_pipeline(x=3) == 10
    assert cached_pipeline(x=3) == 10
    assert CALLS["slow_square"] == 2


def test_a_hit_answers_without_calling_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert cached_pipeline(x=3) == 10
    assert cached_pipeline(x=3) == 10
    assert CALLS == {"slow_square": 1, "uncached": 2}  # tasks without cache=True always run
    assert cached_pipeline(x=4) == 17
    assert CALLS["slow_square"] == 2
    entries = list((tmp_path / "cache" / "outputs").rglob("*.json"))
    assert len(entries) == 2
    assert json.loads(entries[0].read_text())["task"] == f"{MODULE}.slow_square"


def test_a_new_cache_version_misses(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path)
    assert cached_pipeline.run_local({"x": 2}, cache=cache) == {"o0": 5}
    assert (cache.hits, cache.misses) == (0, 1)
    assert cached_pipeline.run_local({"x": 2}, cache=cache) == {"o0": 5}
    assert (cache.hits, cache.misses) == (1, 1)

    @workflow
    def bumped(x: int) -> int:
        return slow_square_v2(x=x)

    bumped.run_local({"x": 2}, cache=cache)
    assert CALLS["slow_square_v2"] == 1 and cache.misses == 2


def test_map_elements_are_cached_one_by_one(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path)
    assert cached_squares.run_local({"xs": [1, 2, 3]}, cache=cache) == {"o0": [1, 4, 9]}
    assert cached_squares.run_local({"xs": [3, 4, 1]}, cache=cache) == {"o0": [9, 16, 1]}
    assert CALLS["slow_square"] == 4  # 1, 2, 3, then only 4
    assert cache.hits == 2


def test_map_task_called_directly_uses_the_env_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    # One at a time, so the second 5 finds the first one's outputs.
    assert map_task(slow_square, concurrency=1)(x=[5, 5, 6]) == [25, 25, 36]
    assert map_task(slow_square)(x=[5, 6]) == [25, 36]
    assert CALLS["slow_square"] == 2


def test_file_inputs_hit_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))

    @workflow
    def lines(data: File) -> int:
        return line_count(data=data)

    first, moved = tmp_path / "first.csv", tmp_path / "elsewhere" / "first.csv"
    first.write_text("a\nb\n")
    moved.parent.mkdir()
    moved.write_text("a\nb\n")
    assert lines(data=File(first)) == 2
    assert lines(data=File(moved)) == 2
    assert CALLS["line_count"] == 1
    first.write_text("a\nb\nc\n")
    assert lines(data=File(first)) == 3
    assert CALLS["line_count"] == 2


def test_file_outputs_are_kept_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))

    @workflow
    def reporting(text: str, directory: str) -> File:
        return report(text=text, directory=directory)

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made = reporting(text="hello", directory=str(scratch))
    assert made.path.read_text() == "hello"
    assert made.path.is_relative_to(tmp_path / "cache")  # a copy, not the task's own file
    (scratch / "report.txt").unlink()
    again = reporting(text="hello", directory=str(scratch))
    assert CALLS["report"] == 1
    assert again.path.read_text() == "hello"

    # A cached blob that disappeared is a miss, not a broken File.
    again.path.unlink()
    assert reporting(text="hello", directory=str(scratch)).path.read_text() == "hello"
    assert CALLS["report"] == 2
