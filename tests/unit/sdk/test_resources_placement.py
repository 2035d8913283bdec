"""`Resources` for placement: acceptable GPU types in order of preference and required cluster
labels, validated when the decorator runs; the IR keeps old specs valid."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fleetflow import InvalidOptionError, Resources, ir, task


def train(x: int) -> int:
    return x


def test_gpu_types_in_order_of_preference_and_labels_reach_the_spec() -> None:
    resources = Resources(gpu=8, gpu_type=["H100", "A100"], labels={"zone": "eu"})
    decorated = task(resources=resources)(train)
    assert decorated.spec.resources == ir.Resources(
        cpu=1.0, gpu=8, gpu_type=["H100", "A100"], labels={"zone": "eu"}
    )
    assert decorated.spec.resources.gpu_types == ["H100", "A100"]
    # A frozen value: the caller's list is copied, and the value stays hashable.
    types = ["H100", "A100"]
    frozen = Resources(gpu=1, gpu_type=types)
    types.append("T4")
    assert frozen.gpu_type == ("H100", "A100")
    assert hash(frozen) == hash(Resources(gpu=1, gpu_type=("H100", "A100")))


def test_one_gpu_type_stays_a_string() -> None:
    assert Resources(gpu=1, gpu_type="H100").to_ir().gpu_type == "H100"
    assert Resources(gpu=1, gpu_type=["H100"]).to_ir().gpu_type == "H100"
    assert Resources(gpu=1, gpu_type="H100").to_ir().gpu_types == ["H100"]
    assert Resources(gpu=1).to_ir().gpu_types == []


@pytest.mark.parametrize(
    "labels",
    [{"zone": "eu"}, {"topology.kubernetes.io/zone": "eu-west-1a"}, {"gpu-tier": ""}, {}],
)
def test_good_labels(labels: dict[str, str]) -> None:
    assert Resources(labels=labels).to_ir().labels == labels


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu": 1, "gpu_type": []}, "got an empty list"),
        ({"gpu": 1, "gpu_type": ["H100", ""]}, "gpu_type must be a non-empty string or a list"),
        ({"gpu": 1, "gpu_type": ["H100", 7]}, "gpu_type must be a non-empty string or a list"),
        ({"gpu": 1, "gpu_type": {"H100"}}, "gpu_type must be a non-empty string or a list"),
        ({"gpu": 1, "gpu_type": ["H100", "A100", "H100"]}, "lists H100 more than once"),
        ({"gpu_type": ["H100", "A100"]}, "needs gpu >= 1"),
        ({"gpu": 1, "gpu_type": "H" * 65}, "is longer than 64 characters"),
        ({"labels": ["zone=eu"]}, "labels must be a dict of cluster labels"),
        ({"labels": {"zone eu": "x"}}, "'zone eu' is not a label key"),
        ({"labels": {"": "x"}}, "'' is not a label key"),
        ({"labels": {"zone": "eu west"}}, "the value of 'zone' must be a label value"),
        ({"labels": {"zone": 1}}, "the value of 'zone' must be a label value"),
        ({"labels": {"n" * 64: "x"}}, "is not a label key"),
    ],
)
def test_bad_placement_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=re.escape(message)):
        Resources(**kwargs)


def test_old_specs_stay_valid_and_the_ir_refuses_nonsense() -> None:
    old = ir.Resources.model_validate({"cpu": 2.0, "memory_bytes": 0, "gpu": 1, "gpu_type": "a100"})
    assert (old.gpu_types, old.labels) == (["a100"], {})
    with pytest.raises(ValueError, match="at least one GPU type"):
        ir.Resources(gpu=1, gpu_type=[])
    with pytest.raises(ValueError, match="at most 64 characters"):  # an attempt records it
        ir.Resources(gpu=1, gpu_type=["A100", "x" * 65])
    with pytest.raises(ValueError, match="lists a GPU type twice"):
        ir.Resources(gpu=1, gpu_type=["H100", "H100"])
    with pytest.raises(ValueError, match="non-empty strings"):
        ir.Resources(gpu=1, gpu_type=" ")
