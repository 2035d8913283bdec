"""`@task` options and `Resources` are validated when the decorator runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fleetflow import InvalidOptionError, Resources, TaskFunction, ir, task
from fleetflow.resources import parse_memory
from fleetflow.task import parse_timeout


def plain(x: int) -> int:
    return x + 1


def test_bare_and_configured_decorator() -> None:
    bare = task(plain)
    assert isinstance(bare, TaskFunction)
    assert bare.spec.resources == ir.Resources()
    assert (bare.spec.retries, bare.spec.timeout_seconds, bare.spec.image) == (0, None, None)
    assert bare.spec.name == f"{__name__}.plain"
    assert bare.__name__ == "plain" and bare.fn is plain

    configured = task(
        resources=Resources(cpu="500m", memory="512Mi"),
        retries=3,
        timeout=timedelta(minutes=2),
        image="ghcr.io/acme/train:1.2",
    )(plain)
    assert configured.spec.resources == ir.Resources(cpu=0.5, memory_bytes=512 * 2**20)
    assert (configured.spec.retries, configured.spec.timeout_seconds) == (3, 120)
    assert configured.spec.image == "ghcr.io/acme/train:1.2"
    assert configured(1) == 2 and configured(x=2) == 3


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [
        (90, 90),
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d2h", 93600),
        (" 1h 30m ", 5400),
        (timedelta(hours=1, seconds=1), 3601),
        (timedelta(seconds=0.2), 1),  # rounds up: never shorter than asked
        (None, None),
    ],
)
def test_timeout_forms(timeout: Any, seconds: int | None) -> None:
    assert parse_timeout(timeout) == seconds
    assert task(timeout=timeout)(plain).spec.timeout_seconds == seconds


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (0, "must be positive"),
        (-5, "must be positive"),
        ("0m", "must be positive"),
        (timedelta(0), "must be positive"),
        ("30 minutes", "not a duration"),
        ("m30", "not a duration"),
        ("", "not a duration"),
        ("1.5h", "not a duration"),
        (1.5, "must be seconds"),
        (True, "must be seconds"),
        (2**31, "must be at most 2592000 s"),  # past the wire's int32: once wedged a cluster
        (timedelta(days=31), "must be at most 2592000 s"),
        ("721h", "must be at most 2592000 s"),
    ],
)
def test_bad_timeouts(timeout: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        task(timeout=timeout)(plain)


@pytest.mark.parametrize("retries", [-1, 101, 10**6, 1.0, "2", True, None])
def test_bad_retries(retries: Any) -> None:
    with pytest.raises(InvalidOptionError, match="retries must be"):
        task(retries=retries)


def test_option_error_names_the_task_when_decorating() -> None:
    message = f"task '{__name__}.plain': retries must be 0..100"
    with pytest.raises(InvalidOptionError, match=message):
        task(plain, retries=-2)
    with pytest.raises(InvalidOptionError, match="resources must be fleetflow.Resources"):
        task(resources={"cpu": 2})(plain)
    assert isinstance(InvalidOptionError("x"), ValueError)


@pytest.mark.parametrize("image", ["", "  ", "has space:1", 3])
def test_bad_image(image: Any) -> None:
    with pytest.raises(InvalidOptionError, match="image must be"):
        task(image=image)


@pytest.mark.parametrize(
    ("memory", "number_of_bytes"),
    [
        ("512Mi", 512 * 2**20),
        ("4Gi", 4 * 2**30),
        ("1G", 10**9),
        ("1000", 1000),
        ("1.5Gi", 3 * 2**29),
        ("2k", 2000),
        ("1Ti", 2**40),
        (2048, 2048),
    ],
)
def test_memory_quantities(memory: Any, number_of_bytes: int) -> None:
    assert parse_memory(memory) == number_of_bytes
    assert Resources(memory=memory).to_ir().memory_bytes == number_of_bytes


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        ("4GB", "not a quantity"),
        ("lots", "not a quantity"),
        ("-1Gi", "not a quantity"),
        ("0.5", "not a whole number of bytes"),
        ("0", "must be positive"),
        (0, "must be positive"),
        (1.5, "must be a number of bytes"),
        (True, "must be a number of bytes"),
    ],
)
def test_bad_memory(memory: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        Resources(memory=memory)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpu": 0}, "cpu must be a positive number"),
        ({"cpu": -1.5}, "cpu must be a positive number"),
        ({"cpu": float("nan")}, "cpu must be a positive number"),
        ({"cpu": "two"}, "not a number of cores"),
        ({"cpu": True}, "cpu must be a number of cores"),
        ({"gpu": -1}, "gpu must be >= 0"),
        ({"gpu": 1.5}, "gpu must be a whole number"),
        ({"gpu": True}, "gpu must be a whole number"),
        ({"gpu_type": "H100"}, "needs gpu >= 1"),
        ({"gpu": 1, "gpu_type": ""}, "gpu_type must be a non-empty string"),
        ({"gpu": 1, "gpu_type": 100}, "gpu_type must be a non-empty string"),
    ],
)
def test_bad_resources(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        Resources(**kwargs)


def test_resources_to_ir() -> None:
    assert Resources(cpu=2, memory="4Gi", gpu=1, gpu_type="H100").to_ir() == ir.Resources(
        cpu=2.0, memory_bytes=4 * 2**30, gpu=1, gpu_type="H100"
    )
    assert Resources().to_ir() == ir.Resources(cpu=1.0, memory_bytes=0, gpu=0, gpu_type=None)
