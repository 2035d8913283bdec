"""`WorkflowFunction.parse_cli_inputs`: `--name value` strings -> typed Python values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from fleetflow import WorkflowInputError, task, workflow


@dataclass
class Config:
    name: str
    layers: list[int]


@task
def summarise(
    n: int,
    lr: float,
    label: str,
    verbose: bool,
    sizes: list[float],
    weights: dict[str, int],
    config: Config,
) -> str:
    return f"{n} {lr} {label} {verbose} {sizes} {weights} {config.name} {config.layers}"


@workflow
def configurable(
    n: int,
    lr: float = 0.1,
    label: str = "run",
    verbose: bool = False,
    sizes: list[float] = [1.0],  # noqa: B006 - a default is a literal, never mutated
    weights: dict[str, int] = {},  # noqa: B006
    config: Config = Config(name="base", layers=[1]),  # noqa: B008
) -> str:
    return summarise(
        n=n, lr=lr, label=label, verbose=verbose, sizes=sizes, weights=weights, config=config
    )


def test_scalars_by_type() -> None:
    parsed = configurable.parse_cli_inputs({"n": "3", "lr": "1e-3", "label": "007"})
    assert parsed == {"n": 3, "lr": 0.001, "label": "007"}
    assert type(parsed["n"]) is int and type(parsed["lr"]) is float
    assert configurable.parse_cli_inputs({"n": "-4", "lr": "2"}) == {"n": -4, "lr": 2.0}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YES", True),
        ("false", False),
        ("0", False),
        ("no", False),
    ],
)
def test_bool_spellings(text: str, value: bool) -> None:
    assert configurable.parse_cli_inputs({"verbose": text}) == {"verbose": value}


def test_json_for_containers_and_dataclasses() -> None:
    parsed = configurable.parse_cli_inputs(
        {
            "sizes": "[1, 2.5]",
            "weights": '{"a": 1, "b": 2}',
            "config": '{"name": "big", "layers": [64, 64]}',
        }
    )
    assert parsed == {
        "sizes": [1.0, 2.5],
        "weights": {"a": 1, "b": 2},
        "config": Config(name="big", layers=[64, 64]),
    }
    assert all(type(x) is float for x in parsed["sizes"])


def test_parsed_values_run_the_workflow() -> None:
    values = configurable.parse_cli_inputs(
        {"n": "2", "verbose": "yes", "config": '{"name": "x", "layers": []}'}
    )
    assert configurable(**values) == "2 0.1 run True [1.0] {} x []"
    assert configurable.inputs_to_literals(values)["config"] == {"name": "x", "layers": []}


def test_dashes_in_names_read_as_underscores() -> None:
    @workflow
    def dashed(learning_rate: float) -> float:
        return learning_rate

    assert dashed.parse_cli_inputs({"learning-rate": "0.5"}) == {"learning_rate": 0.5}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lr": "abc"}, "input 'lr': expected float, got 'abc'"),
        ({"lr": "nan"}, "input 'lr': expected float, got 'nan' (must be finite)"),
        ({"n": "3.0"}, "input 'n': expected int, got '3.0'"),
        ({"n": ""}, "input 'n': expected int, got ''"),
        ({"verbose": "maybe"}, "input 'verbose': expected bool, got 'maybe' (use true/false"),
        ({"sizes": "1,2"}, "input 'sizes': expected list[float], got '1,2' (not valid JSON"),
        ({"sizes": '["a"]'}, "inputs.sizes[0]: expected float, got str 'a'"),
        ({"weights": "[1]"}, "input 'weights': expected dict[str, int]"),
        ({"config": '{"name": "x"}'}, "missing field(s) layers for Config"),
        ({"epochs": "3"}, "has no input 'epochs'; its inputs are: n, lr, label"),
    ],
)
def test_errors_name_the_input(raw: dict[str, str], message: str) -> None:
    with pytest.raises(WorkflowInputError) as info:
        configurable.parse_cli_inputs(raw)
    assert message in str(info.value)
    assert info.value.input_name == next(iter(raw))
    assert isinstance(info.value, ValueError)


def test_inputs_not_given_are_left_to_defaults() -> None:
    assert configurable.parse_cli_inputs({}) == {}
    literals: dict[str, Any] = configurable.inputs_to_literals(
        configurable.parse_cli_inputs({"n": "1"})
    )
    assert literals == {
        "n": 1,
        "lr": 0.1,
        "label": "run",
        "verbose": False,
        "sizes": [1.0],
        "weights": {},
        "config": {"name": "base", "layers": [1]},
    }


# `run --launch-plan`: the same flags read against a registered spec alone -------------------

_FLAGS = {
    "n": "3",
    "lr": "0.5",
    "label": "1e3",  # a str that looks like a number stays text
    "verbose": "yes",
    "sizes": "[1, 2.5]",
    "weights": '{"a": 1}',
    "config": '{"name": "wide", "layers": [4, 4]}',
}


def test_literal_inputs_match_the_typed_parse_of_the_same_flags() -> None:
    from fleetflow.cli.inputs import literal_inputs

    typed = configurable.inputs_to_literals(configurable.parse_cli_inputs(_FLAGS))
    assert literal_inputs(_FLAGS, configurable.spec) == typed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"n": "three"}, "input 'n': expected int, got 'three'"),
        ({"verbose": "maybe"}, "input 'verbose': expected bool"),
        ({"config": '{"name": "x"}'}, "input 'config': expected Config"),
    ],
)
def test_literal_inputs_name_the_input_that_is_wrong(raw: dict[str, str], message: str) -> None:
    from fleetflow.cli.inputs import InputFlagError, literal_inputs

    with pytest.raises(InputFlagError, match=message.replace("(", r"\(")):
        literal_inputs(raw, configurable.spec)
