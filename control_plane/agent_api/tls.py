"""How the agent gRPC service listens: TLS, mutual TLS, or plaintext only where that is safe.

Agents send their cluster token with every call, so plaintext on a network hands it to anyone
on the path. The rule (`server_security`):

- `FLEETFLOW_GRPC_TLS_CERT_FILE` and `FLEETFLOW_GRPC_TLS_KEY_FILE` set: TLS; with
  `FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE` also, agents must present a client certificate that
  chains to that CA (mutual TLS);
- `FLEETFLOW_GRPC_INSECURE=true`: plaintext, on purpose (a warning says so);
- neither: plaintext on a loopback address (`fleetflow dev up`, tests), and a refusal to start
  anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from control_plane.settings import GrpcSettings
from fleetflow.tls import TlsConfigError, is_loopback_host, read_pem

CERT_ENV = "FLEETFLOW_GRPC_TLS_CERT_FILE"
KEY_ENV = "FLEETFLOW_GRPC_TLS_KEY_FILE"
CLIENT_CA_ENV = "FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE"
INSECURE_ENV = "FLEETFLOW_GRPC_INSECURE"


@dataclass(frozen=True)
class ServerSecurity:
    """Credentials for the agent service's port, and how to describe them in the logs."""

    credentials: grpc.ServerCredentials | None
    description: str
    warning: str | None = None

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Bind `address` with these credentials; returns the port (0 when binding failed)."""
        if self.credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.credentials)


def server_security(settings: GrpcSettings) -> ServerSecurity:
    """Decide how the agent service listens on `settings.host`; read the TLS files.

    Raises:
        TlsConfigError: the TLS settings are incomplete or contradictory, a file cannot be
            read, or nothing is configured for a non-loopback host.
    """
    cert, key = settings.tls_cert_file, settings.tls_key_file
    client_ca = settings.tls_client_ca_file
    if (cert is None) != (key is None):
        missing = KEY_ENV if key is None else CERT_ENV
        raise TlsConfigError(
            f"{CERT_ENV} and {KEY_ENV} go together: set {missing} too (or neither)"
        )
    if client_ca is not None and cert is None:
        raise TlsConfigError(
            f"{CLIENT_CA_ENV} asks for mutual TLS, which needs the server's own certificate: "
            f"set {CERT_ENV} and {KEY_ENV}"
        )
    if cert is not None and key is not None:
        if settings.insecure:
            raise TlsConfigError(
                f"{INSECURE_ENV}=true contradicts {CERT_ENV}/{KEY_ENV}: "
                "unset one of them to choose plaintext or TLS"
            )
        credentials = grpc.ssl_server_credentials(
            [(read_pem(key, KEY_ENV), read_pem(cert, CERT_ENV))],
            root_certificates=read_pem(client_ca, CLIENT_CA_ENV) if client_ca else None,
            require_client_auth=client_ca is not None,
        )
        if client_ca is not None:
            return ServerSecurity(credentials, "mutual TLS: agents need a client certificate")
        return ServerSecurity(credentials, "TLS")
    if settings.insecure:
        return ServerSecurity(
            None,
            "plaintext",
            warning=f"serving agents in plaintext ({INSECURE_ENV}=true): their cluster tokens "
            "cross the network unencrypted; keep this port on a private network",
        )
    if is_loopback_host(settings.host):
        return ServerSecurity(
            None,
            f"plaintext, loopback only; set {CERT_ENV} and {KEY_ENV} to serve other addresses",
        )
    raise TlsConfigError(
        f"refusing to serve agents in plaintext on {settings.host}:{settings.port}, which is not "
        f"a loopback address: their cluster tokens would cross the network unencrypted. Set "
        f"{CERT_ENV} and {KEY_ENV} (and {CLIENT_CA_ENV} to require client certificates), or "
        f"{INSECURE_ENV}=true to accept plaintext"
    )
