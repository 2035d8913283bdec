"""How the agent gRPC service decides to listen: TLS, mutual TLS, plaintext on loopback or on
purpose, and a refusal (with the settings to change) for plaintext anywhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from control_plane.agent_api.tls import server_security
from control_plane.settings import GrpcSettings
from fleetflow.tls import TlsConfigError, is_loopback_host, target_host
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def grpc_settings(host: str = "127.0.0.1", **values: Any) -> GrpcSettings:
    return GrpcSettings(host=host, port=9090, **values)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"])
def test_plaintext_on_loopback_needs_no_settings(host: str) -> None:
    security = server_security(grpc_settings(host))
    assert not security.tls and security.warning is None
    assert security.description.startswith("plaintext, loopback only")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "cp.internal"])
def test_plaintext_elsewhere_is_refused_with_the_settings_to_change(host: str) -> None:
    with pytest.raises(TlsConfigError) as raised:
        server_security(grpc_settings(host))
    message = str(raised.value)
    assert message.startswith(f"refusing to serve agents in plaintext on {host}:9090")
    for setting in (
        "FLEETFLOW_GRPC_TLS_CERT_FILE",
        "FLEETFLOW_GRPC_TLS_KEY_FILE",
        "FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE",
        "FLEETFLOW_GRPC_INSECURE=true",
    ):
        assert setting in message


def test_plaintext_elsewhere_when_asked_is_served_with_a_warning() -> None:
    security = server_security(grpc_settings("0.0.0.0", insecure=True))
    assert not security.tls
    assert security.warning is not None and "FLEETFLOW_GRPC_INSECURE=true" in security.warning


def test_tls_and_mutual_tls(pki: Pki) -> None:
    files = {"tls_cert_file": pki.server_cert, "tls_key_file": pki.server_key}
    tls = server_security(grpc_settings("0.0.0.0", **files))
    assert tls.tls and tls.description == "TLS"
    mutual = server_security(grpc_settings("0.0.0.0", tls_client_ca_file=pki.ca_cert, **files))
    assert mutual.tls and mutual.description.startswith("mutual TLS")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    monkeypatch.setenv("FLEETFLOW_GRPC_TLS_CERT_FILE", str(pki.server_cert))
    monkeypatch.setenv("FLEETFLOW_GRPC_TLS_KEY_FILE", str(pki.server_key))
    monkeypatch.setenv("FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE", str(pki.ca_cert))
    monkeypatch.setenv("FLEETFLOW_GRPC_INSECURE", "false")
    settings = GrpcSettings()
    assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file) == (
        pki.server_cert,
        pki.server_key,
        pki.ca_cert,
    )
    assert settings.insecure is False


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_cert_file": "c.pem"}, "set FLEETFLOW_GRPC_TLS_KEY_FILE too (or neither)"),
        ({"tls_key_file": "k.pem"}, "set FLEETFLOW_GRPC_TLS_CERT_FILE too (or neither)"),
        (
            {"tls_client_ca_file": "ca.pem"},
            "FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE asks for mutual TLS, which needs the server's own",
        ),
        (
            {"tls_cert_file": "c.pem", "tls_key_file": "k.pem", "insecure": True},
            "FLEETFLOW_GRPC_INSECURE=true contradicts",
        ),
        (
            {"tls_cert_file": "/nonexistent/c.pem", "tls_key_file": "/nonexistent/k.pem"},
            "cannot read FLEETFLOW_GRPC_TLS_KEY_FILE=/nonexistent/k.pem",
        ),
    ],
)
def test_invalid_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(TlsConfigError) as raised:
        server_security(grpc_settings(**values))
    assert message in str(raised.value)


def test_a_key_that_is_not_pem_is_refused(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "key.pem").write_text("secret\n")
    with pytest.raises(TlsConfigError, match="FLEETFLOW_GRPC_TLS_KEY_FILE=.* is not a PEM file"):
        server_security(
            grpc_settings(tls_cert_file=pki.server_cert, tls_key_file=tmp_path / "key.pem")
        )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.1", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("cp:9090", "cp"),
        ("127.0.0.1:9090", "127.0.0.1"),
        ("[::1]:9090", "::1"),
        ("dns:///cp.example.com:443", "cp.example.com"),
        ("ipv4:10.0.0.1:9090", "10.0.0.1"),
        ("cp.example.com", "cp.example.com"),
    ],
)
def test_target_host(target: str, host: str) -> None:
    assert target_host(target) == host
