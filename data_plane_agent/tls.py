"""How the agent dials the control plane: TLS unless plaintext is asked for or harmless.

The rule (`channel_security`):

- `FLEETFLOW_AGENT_INSECURE=true`: plaintext, on purpose;
- any of `FLEETFLOW_AGENT_TLS_CA_FILE`, `…_TLS_CERT_FILE`/`…_TLS_KEY_FILE` set, or a control
  plane that is not on a loopback address: TLS, verifying the server's certificate against the
  CA file (or gRPC's default roots), for the target's host or `FLEETFLOW_AGENT_TLS_SERVER_NAME`,
  and presenting the client certificate when one is set (mutual TLS);
- nothing set and a loopback target (`fleetflow dev up`, tests): plaintext.

A failed connection is explained by `connection_hint`, since gRPC's own text ("Socket closed",
"CERTIFICATE_VERIFY_FAILED") rarely says which setting to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from data_plane_agent.settings import AgentSettings
from fleetflow.tls import TlsConfigError, is_loopback_host, read_pem, target_host

CA_ENV = "FLEETFLOW_AGENT_TLS_CA_FILE"
CERT_ENV = "FLEETFLOW_AGENT_TLS_CERT_FILE"
KEY_ENV = "FLEETFLOW_AGENT_TLS_KEY_FILE"
SERVER_NAME_ENV = "FLEETFLOW_AGENT_TLS_SERVER_NAME"
INSECURE_ENV = "FLEETFLOW_AGENT_INSECURE"


@dataclass(frozen=True)
class ChannelSecurity:
    """Credentials and channel options for dialling the control plane."""

    credentials: grpc.ChannelCredentials | None
    description: str
    options: list[tuple[str, Any]] = field(default_factory=list)
    client_certificate: bool = False

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    def open_channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, self.credentials, options=options + self.options)


def channel_security(settings: AgentSettings) -> ChannelSecurity:
    """Decide how to dial `settings.control_plane`; read the TLS files.

    Raises:
        TlsConfigError: the TLS settings are incomplete or contradictory, or a file cannot be
            read.
    """
    ca, cert, key = settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        missing = KEY_ENV if key is None else CERT_ENV
        raise TlsConfigError(
            f"{CERT_ENV} and {KEY_ENV} go together: set {missing} too (or neither)"
        )
    tls_asked = ca is not None or cert is not None or settings.tls_server_name is not None
    if settings.insecure:
        if tls_asked:
            raise TlsConfigError(
                f"{INSECURE_ENV}=true contradicts the FLEETFLOW_AGENT_TLS_* settings: unset one "
                "of them to choose plaintext or TLS"
            )
        return ChannelSecurity(None, f"plaintext ({INSECURE_ENV}=true)")
    if not tls_asked and is_loopback_host(target_host(settings.control_plane)):
        return ChannelSecurity(None, "plaintext, to a loopback address")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, CA_ENV) if ca else None,
        private_key=read_pem(key, KEY_ENV) if key else None,
        certificate_chain=read_pem(cert, CERT_ENV) if cert else None,
    )
    options: list[tuple[str, Any]] = []
    if settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    parts = [f"trusting {ca}" if ca else "trusting the default CA roots"]
    if settings.tls_server_name:
        parts.append(f"server name {settings.tls_server_name}")
    if cert:
        parts.append(f"client certificate {cert}")
    return ChannelSecurity(
        credentials, f"TLS, {', '.join(parts)}", options, client_certificate=cert is not None
    )


def connection_hint(details: str, security: ChannelSecurity, settings: AgentSettings) -> str:
    """What to check after a failed connection whose gRPC error details are `details`; empty
    when there is nothing more useful to say."""
    text = details.lower()
    if security.tls and "certificate_verify_failed" in text:
        if settings.tls_ca_file:
            trusted = f"the CA in {CA_ENV}={settings.tls_ca_file}"
        else:
            trusted = f"the default CA roots (set {CA_ENV} to the CA that signed it)"
        return f"TLS: the control plane's certificate is not signed by {trusted}"
    if security.tls and "hostname verification" in text:
        name = settings.tls_server_name or target_host(settings.control_plane)
        return (
            f"TLS: the control plane's certificate is not valid for {name!r}; dial a name it "
            f"carries or set {SERVER_NAME_ENV}"
        )
    if security.tls and ("wrong_version_number" in text or "ssl" in text or "tls" in text):
        return "TLS handshake failed: does the control plane serve TLS on this port?"
    if "socket closed" in text or "connection reset" in text:
        if not security.tls:
            return (
                "the control plane closed a plaintext connection: if it serves TLS, set "
                f"{CA_ENV} (and {CERT_ENV}/{KEY_ENV} if it requires client certificates)"
            )
        if not security.client_certificate:
            return (
                "the control plane closed the TLS connection: if it requires client "
                f"certificates (mutual TLS), set {CERT_ENV} and {KEY_ENV}"
            )
        return (
            "the control plane closed the TLS connection: is the client certificate signed by "
            "the CA it trusts for agents?"
        )
    return ""


__all__ = ["ChannelSecurity", "TlsConfigError", "channel_security", "connection_hint"]
