"""`@task(secrets=[...])`: names checked when the task is declared, carried in its spec (names
only), read from the environment in local runs, and hidden in log text."""

from __future__ import annotations

import pytest

from fleetflow import task, workflow
from fleetflow.errors import InvalidOptionError
from fleetflow.local import run_locally
from fleetflow.secrets import MissingSecretError, env_var, redact


@task(secrets=["wandb", "hf-token"])
def reads_secrets() -> bool:
    import os

    return os.environ["FLEETFLOW_SECRET_WANDB"] == "w-value" and "FLEETFLOW_SECRET_HF_TOKEN" in (
        os.environ
    )


@workflow
def secret_pipeline() -> bool:
    return reads_secrets()


def test_the_spec_names_the_secrets_and_holds_no_value() -> None:
    assert reads_secrets.spec.secrets == ["wandb", "hf-token"]
    assert '"secrets":["wandb","hf-token"]' in reads_secrets.spec.model_dump_json()


def test_a_task_without_secrets_keeps_its_spec_digest_shape() -> None:
    @task
    def plain() -> int:
        return 1

    assert '"secrets"' not in plain.spec.model_dump_json()


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (["WandB"], "'WandB' is not a valid secret name"),
        (["a_b"], "'a_b' is not a valid secret name"),
        (["x", "x"], "secret 'x' is named twice"),
        ("wandb", "secrets must be a list"),
    ],
)
def test_bad_names_are_refused_at_declaration(secrets: object, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        task(secrets=secrets)  # type: ignore[arg-type]


def test_env_var_names() -> None:
    assert env_var("wandb") == "FLEETFLOW_SECRET_WANDB"
    assert env_var("hf-token") == "FLEETFLOW_SECRET_HF_TOKEN"


def test_a_local_run_reads_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_SECRET_WANDB", "w-value")
    monkeypatch.setenv("FLEETFLOW_SECRET_HF_TOKEN", "h-value")
    outputs = run_locally(secret_pipeline.spec, secret_pipeline.tasks, {})
    assert outputs == {"o0": True}


def test_a_local_run_without_the_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_SECRET_WANDB", "w-value")
    monkeypatch.delenv("FLEETFLOW_SECRET_HF_TOKEN", raising=False)
    with pytest.raises(
        MissingSecretError, match="set the environment variable FLEETFLOW_SECRET_HF_TOKEN"
    ):
        run_locally(secret_pipeline.spec, secret_pipeline.tasks, {})


def test_redaction_hides_values_longest_first_and_skips_tiny_ones() -> None:
    text = "key=abcdef-long and abcdef and x"
    assert redact(text, ["abcdef", "abcdef-long", "x"]) == "key=*** and *** and x"
