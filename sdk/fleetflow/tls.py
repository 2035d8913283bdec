"""What the control plane's and the agent's TLS setups share: reading PEM files with errors
that name the setting, and telling loopback addresses (where plaintext is allowed by default)
from the rest."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from fleetflow.errors import FleetflowError


class TlsConfigError(FleetflowError):
    """TLS settings are incomplete, contradictory, or name files that cannot be read."""


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP addresses (127.0.0.0/8, ::1), bracketed or not.
    Wildcards (`0.0.0.0`, `::`, empty) and every other name are not loopback."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_host(target: str) -> str:
    """The host of a gRPC target such as `host:port`, `[::1]:9090`, `dns:///host:port` or
    `ipv4:127.0.0.1:9090`."""
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target.removeprefix(scheme)
            break
    if target.startswith("["):
        return target[1:].split("]", 1)[0]
    if target.count(":") == 1:
        return target.split(":", 1)[0]
    return target  # a bare host, or an IPv6 address without a port


def read_pem(path: Path, setting: str) -> bytes:
    """The bytes of a PEM file named by `setting` (an environment variable, for the message).

    Raises:
        TlsConfigError: the file cannot be read or holds no PEM block.
    """
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {setting}={path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{setting}={path} is not a PEM file (no '-----BEGIN' line)")
    return data
