"""`@task(replicas=N)`: checked when the decorator runs, written into the spec only when it is
not 1 (so specs without gangs keep their digests)."""

from __future__ import annotations

import pytest

from fleetflow import InvalidOptionError, Resources, ir, task


def test_replicas_reach_the_spec_only_when_not_one() -> None:
    @task(resources=Resources(gpu=8, gpu_type="H100"), replicas=4)
    def train(steps: int) -> int:
        return steps

    @task
    def single(steps: int) -> int:
        return steps

    assert train.spec.replicas == 4
    assert train.spec.model_dump(mode="json")["replicas"] == 4
    assert single.spec.replicas == 1
    assert "replicas" not in single.spec.model_dump(mode="json")
    again = ir.TaskSpec.model_validate(train.spec.model_dump(mode="json"))
    assert again == train.spec
    assert train(steps=3) == 3  # outside a workflow, a plain call: one worker


@pytest.mark.parametrize(
    ("replicas", "message"),
    [
        (0, "replicas must be 1..256, got 0"),
        (-2, "replicas must be 1..256, got -2"),
        (1000, "replicas must be 1..256, got 1000"),
        (True, "replicas must be an int >= 1 (workers started together), got True"),
        (2.0, "replicas must be an int >= 1 (workers started together), got 2.0"),
        ("4", "replicas must be an int >= 1 (workers started together), got '4'"),
    ],
)
def test_bad_replicas_are_refused_naming_the_task(replicas: object, message: str) -> None:
    with pytest.raises(
        InvalidOptionError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        task(replicas=replicas)  # type: ignore[call-overload]

    def train() -> None:
        pass

    with pytest.raises(InvalidOptionError) as refused:
        task(train, replicas=replicas)  # type: ignore[call-overload]
    assert str(refused.value) == f"task '{__name__}.train': {message}"


def test_a_spec_refuses_replicas_out_of_range() -> None:
    interface = ir.TypedInterface(inputs=[], outputs=[])
    with pytest.raises(ValueError, match="replicas"):
        ir.TaskSpec(name="m.t", module="m", function="t", interface=interface, replicas=0)


def test_a_dynamic_task_refuses_replicas() -> None:
    from fleetflow import dynamic

    with pytest.raises(InvalidOptionError, match="dynamic tasks cannot have replicas"):
        dynamic(replicas=2)

    def build(n: int) -> int:
        return n

    with pytest.raises(InvalidOptionError, match="replicas is not supported"):
        dynamic(build, replicas=2)


def test_the_dry_run_shows_a_gangs_workers() -> None:
    from rich.console import Console

    from fleetflow.cli.remote import print_preview

    task = {
        "task": "m.train",
        "nodes": ["n0-train"],
        "resources": {"cpu": 4, "memory_bytes": 0, "gpu": 8, "gpu_types": ["H100"]},
        "replicas": 4,
        "cluster": None,
        "gpu_type": None,
        "waiting_reason": "needs 4 × 8 H100 on one cluster; largest free: gpu-b with 2 × 8 H100",
        "eligible": [],
        "excluded": [],
        "quota": "fits: the tenant has no quota",
    }
    preview = {"workflow": "m.wf", "version": "1", "strategy": "spread", "tasks": [task]}
    console = Console(record=True, width=400)
    print_preview(preview, console)
    text = console.export_text()
    assert "4 × 4 CPU, 8 GPU (H100)" in text, text
    assert "largest free: gpu-b with 2 × 8 H100" in text, text
