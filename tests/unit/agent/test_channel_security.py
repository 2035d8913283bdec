"""How the agent decides to dial the control plane (TLS, mutual TLS or plaintext), how it
explains failed handshakes, and what its CLI says about invalid TLS settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from data_plane_agent.cli import app
from data_plane_agent.settings import AgentSettings
from data_plane_agent.tls import channel_security, connection_hint
from fleetflow.tls import TlsConfigError
from tests.pki import Pki, make_pki


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_AGENT_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(control_plane: str = "127.0.0.1:9090", **values: Any) -> AgentSettings:
    return AgentSettings(control_plane=control_plane, token="ffa_unit", **values)


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:9090", "localhost:9090", "[::1]:9090", "127.0.0.2:1", "dns:///127.0.0.1:1"],
)
def test_plaintext_to_a_loopback_target_without_settings(target: str) -> None:
    security = channel_security(settings(target))
    assert not security.tls
    assert security.description == "plaintext, to a loopback address"


@pytest.mark.parametrize("target", ["cp.example.com:9090", "10.0.0.5:9090", "[fd00::1]:9090"])
def test_tls_with_the_default_roots_to_any_other_target(target: str) -> None:
    security = channel_security(settings(target))
    assert security.tls
    assert security.description == "TLS, trusting the default CA roots"


def test_plaintext_elsewhere_only_when_asked() -> None:
    security = channel_security(settings("cp.example.com:9090", insecure=True))
    assert not security.tls
    assert "FLEETFLOW_AGENT_INSECURE=true" in security.description


def test_tls_settings_turn_tls_on_even_for_loopback(pki: Pki) -> None:
    security = channel_security(
        settings(
            tls_ca_file=pki.ca_cert,
            tls_cert_file=pki.client_cert,
            tls_key_file=pki.client_key,
            tls_server_name="control-plane.test",
        )
    )
    assert security.tls and security.client_certificate
    assert security.options == [("grpc.ssl_target_name_override", "control-plane.test")]
    assert security.description == (
        f"TLS, trusting {pki.ca_cert}, server name control-plane.test, "
        f"client certificate {pki.client_cert}"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"tls_cert_file": "c.pem"},
            "FLEETFLOW_AGENT_TLS_CERT_FILE and FLEETFLOW_AGENT_TLS_KEY_FILE go together: set "
            "FLEETFLOW_AGENT_TLS_KEY_FILE too",
        ),
        (
            {"tls_key_file": "k.pem"},
            "go together: set FLEETFLOW_AGENT_TLS_CERT_FILE too",
        ),
        (
            {"insecure": True, "tls_ca_file": "ca.pem"},
            "FLEETFLOW_AGENT_INSECURE=true contradicts the FLEETFLOW_AGENT_TLS_* settings",
        ),
        (
            {"tls_ca_file": "/nonexistent/ca.pem"},
            "cannot read FLEETFLOW_AGENT_TLS_CA_FILE=/nonexistent/ca.pem: No such file",
        ),
    ],
)
def test_invalid_tls_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(TlsConfigError) as raised:
        channel_security(settings("cp.example.com:9090", **values))
    assert message in str(raised.value)


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match="is not a PEM file"):
        channel_security(settings(tls_ca_file=tmp_path / "ca.pem"))


def test_hints_name_the_setting_to_check(pki: Pki) -> None:
    tls = settings(tls_ca_file=pki.ca_cert)
    verify = (
        "ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): CERTIFICATE_VERIFY_FAILED"
    )
    assert connection_hint(verify, channel_security(tls), tls) == (
        f"TLS: the control plane's certificate is not signed by the CA in "
        f"FLEETFLOW_AGENT_TLS_CA_FILE={pki.ca_cert}"
    )
    hostname = "Custom verification check failed with error: Hostname Verification Check failed."
    assert "set FLEETFLOW_AGENT_TLS_SERVER_NAME" in connection_hint(
        hostname, channel_security(tls), tls
    )
    closed = "failed to connect to all addresses; last error: UNAVAILABLE: ...: Socket closed"
    assert "set FLEETFLOW_AGENT_TLS_CERT_FILE and FLEETFLOW_AGENT_TLS_KEY_FILE" in (
        connection_hint(closed, channel_security(tls), tls)
    )
    plain = settings()
    assert "if it serves TLS, set FLEETFLOW_AGENT_TLS_CA_FILE" in connection_hint(
        closed, channel_security(plain), plain
    )
    assert connection_hint("Connection refused", channel_security(plain), plain) == ""


def test_cli_refuses_contradictory_tls_settings_before_starting(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "--control-plane", "127.0.0.1:1", "--work-dir", str(tmp_path)],
        env={
            "FLEETFLOW_AGENT_TOKEN": "ffa_cli",
            "FLEETFLOW_AGENT_INSECURE": "true",
            "FLEETFLOW_AGENT_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        },
    )
    assert result.exit_code == 2
    assert "error: FLEETFLOW_AGENT_INSECURE=true contradicts" in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "--control-plane", "127.0.0.1:1", "--work-dir", str(tmp_path)],
        env={"FLEETFLOW_AGENT_TOKEN": "ffa_cli", "FLEETFLOW_LOG_FORMAT": "yaml"},
    )
    assert result.exit_code == 2
    assert "FLEETFLOW_LOG_FORMAT='yaml' is not a log format: use 'text' or 'json'" in (
        result.output
    )
