"""A throw-away public-key infrastructure for TLS tests, made with the `openssl` command line.

`make_pki(directory)` writes a certificate authority, a server certificate for 127.0.0.1 and
localhost, a client certificate signed by the same CA, and a second, unrelated CA (the "wrong"
one an agent must not accept the server under). EC P-256 keys keep generation fast.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DAYS = "2"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_ca_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _key(name: str, cwd: Path) -> Path:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name, cwd=cwd)
    return cwd / name


def _ca(prefix: str, subject: str, cwd: Path) -> tuple[Path, Path]:
    key = _key(f"{prefix}.key", cwd)
    _openssl(
        "req", "-x509", "-new", "-key", key.name, "-sha256", "-days", DAYS,
        "-subj", subject, "-out", f"{prefix}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip
    return cwd / f"{prefix}.crt", key


def _leaf(prefix: str, subject: str, extensions: str, ca: tuple[Path, Path], cwd: Path) -> Path:
    key = _key(f"{prefix}.key", cwd)
    (cwd / f"{prefix}.ext").write_text(extensions)
    _openssl("req", "-new", "-key", key.name, "-subj", subject, "-out", f"{prefix}.csr", cwd=cwd)
    _openssl(
        "x509", "-req", "-in", f"{prefix}.csr", "-CA", ca[0].name, "-CAkey", ca[1].name,
        "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", f"{prefix}.ext",
        "-out", f"{prefix}.crt",
        cwd=cwd,
    )  # fmt: skip
    return cwd / f"{prefix}.crt"


def make_pki(directory: Path) -> Pki:
    """Write the CA, server and client certificates under `directory`."""
    if shutil.which("openssl") is None:
        pytest.fail("TLS tests need the openssl command line (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("ca", "/CN=Fleetflow test CA", directory)
    server = _leaf(
        "server",
        "/CN=fleetflow-control-plane",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:control-plane.test\n",
        ca,
        directory,
    )
    client = _leaf(
        "client",
        "/CN=agent-alpha",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n",
        ca,
        directory,
    )
    other_ca = _ca("other-ca", "/CN=Some other CA", directory)
    return Pki(
        ca_cert=ca[0],
        server_cert=server,
        server_key=directory / "server.key",
        client_cert=client,
        client_key=directory / "client.key",
        other_ca_cert=other_ca[0],
        other_ca_key=other_ca[1],
    )
