"""Throw-away S3-compatible servers for tests and local development: SeaweedFS, built from the
Go module proxy.

Fleetflow's `s3://` blob store speaks S3 through the `minio` client, and its tests run against
a real server, without Docker. That server is SeaweedFS (Apache-2.0), not MinIO: the MinIO
server is under the AGPL, which this project does not take in (docs/storage.md). SeaweedFS's
`weed server -s3` is one process holding a master, a volume server, a filer and the S3
gateway, all on loopback.

The binary is built once, with `go`, from the pinned module version into
`~/.cache/fleetflow/seaweedfs/<version>/weed` (`$FLEETFLOW_CACHE_DIR` or `$XDG_CACHE_HOME`
move the cache; it is never inside the repository). `FLEETFLOW_S3_SERVER_BIN=/path/to/weed`
uses a binary built elsewhere instead. The first build takes several minutes.

As a module (tests/integration/s3_server.py)::

    server = start_s3_server()
    server.env()        # {"FLEETFLOW_S3_ENDPOINT": "http://127.0.0.1:PORT", ...}
    server.stop()       # and its data is gone

As a command::

    python infra/scripts/s3_server.py            # start one, print its settings, stop on Ctrl-C
    python infra/scripts/s3_server.py --build    # only build (or find) the binary, print its path
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess, free_ports, serve_until_stopped  # noqa: E402
from tooling import Reporter, cache_root, ensure_built, exit_status  # noqa: E402

_report = Reporter("s3-server")
_say, _loud = _report.say, _report.loud

MODULE = "github.com/seaweedfs/seaweedfs"
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
BIN_ENV = "FLEETFLOW_S3_SERVER_BIN"
BUILD_TIMEOUT_S = 3600


class S3ServerUnavailableError(RuntimeError):
    """No S3 server can be built or started on this machine; the message says why."""


def binary_path() -> Path:
    return cache_root() / "seaweedfs" / VERSION / "weed"


def ensure_weed() -> Path:
    """The `weed` binary: `$FLEETFLOW_S3_SERVER_BIN`, the cached build, or a new build.

    Raises:
        S3ServerUnavailableError: the binary named by the variable is missing, or `go` is
            missing, or the build failed (its log is in the message).
    """
    return ensure_built(binary_path(), BIN_ENV, _build, S3ServerUnavailableError)


def _run_go(argv: Sequence[str], *, cwd: Path | None, log: Path) -> str:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        raise S3ServerUnavailableError(
            f"`{' '.join(argv)}` failed ({result.returncode}); see {log}:\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
    return result.stdout


def _build(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise S3ServerUnavailableError(
            f"`go` is not on PATH, so SeaweedFS cannot be built; install Go or set {BIN_ENV}"
        )
    log = target.parent / "build.log"
    _loud(f"building SeaweedFS {VERSION} with Go into {target} (once; several minutes)")
    started = time.monotonic()
    # `go install module@version` refuses modules whose go.mod has replace directives, as
    # SeaweedFS's has: build it as the main module, in its (read-only) module cache directory.
    info = json.loads(
        _run_go([go, "mod", "download", "-json", f"{MODULE}@{VERSION}"], cwd=None, log=log)
    )
    partial = target.with_name(".weed.partial")
    _run_go(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "./weed"],
        cwd=Path(info["Dir"]),
        log=log,
    )
    partial.replace(target)
    _say(f"built {target} in {time.monotonic() - started:.0f}s")


@dataclass(kw_only=True)
class S3Server(ServerProcess):
    """A running throw-away server. `stop()` kills it and deletes its data."""

    name: str = "SeaweedFS"
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str
    base_dir: Path
    _stopped: bool = field(default=False, repr=False)

    def env(self) -> dict[str, str]:
        """The `FLEETFLOW_S3_*` settings that reach this server."""
        return {
            "FLEETFLOW_S3_ENDPOINT": self.endpoint,
            "FLEETFLOW_S3_ACCESS_KEY": self.access_key,
            "FLEETFLOW_S3_SECRET_KEY": self.secret_key,
            "FLEETFLOW_S3_REGION": self.region,
            "FLEETFLOW_S3_SECURE": "false",
        }

    def answers(self) -> bool:
        """The gateway answers and a bucket can be written to (volumes are allocated)."""
        with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=2) as response:
            if response.status != 200:
                return False
        _probe_write(self)
        return True

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after 10 s, delete its files."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.kill(signal.SIGTERM, timeout=10)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_s3_server(*, timeout: float = 120, attempts: int = 3) -> S3Server:
    """Build (once) and start a throw-away server on free loopback ports; the caller stops it.

    Raises:
        S3ServerUnavailableError: it cannot be built, or did not become ready in `timeout`.
    """
    weed = ensure_weed()
    for attempt in range(1, attempts + 1):
        server = _spawn(weed)
        try:
            server.wait_until_answering(
                server.answers,
                deadline=time.monotonic() + timeout,
                interval=0.25,
                unavailable=S3ServerUnavailableError,
            )
            return server
        except S3ServerUnavailableError:
            server.stop()
            # Another process may have taken one of the ports between choosing and binding.
            if attempt == attempts:
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


def _spawn(weed: Path) -> S3Server:
    base_dir = Path(tempfile.mkdtemp(prefix="fleetflow-s3-"))
    (base_dir / "data").mkdir()
    (base_dir / "logs").mkdir()
    access_key, secret_key = f"ff{secrets.token_hex(8)}", secrets.token_hex(20)
    config = {
        "identities": [
            {
                "name": "fleetflow",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (base_dir / "s3.json").write_text(json.dumps(config))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    argv = [
        str(weed),
        f"-logdir={base_dir / 'logs'}",
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={base_dir / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",  # no reports to the internet
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={base_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={base_dir / 's3.json'}",
        f"-s3.localSocket={base_dir / 's3.sock'}",
    ]
    server = S3Server(
        log_file=base_dir / "server.log",
        endpoint=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        region="us-east-1",
        base_dir=base_dir,
    )
    server.spawn(argv, cwd=base_dir)
    return server


def _probe_write(server: S3Server) -> None:
    import io

    from minio import Minio  # the dev install's S3 client; imported late so --build needs none

    client = Minio(
        server.endpoint.removeprefix("http://"),
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        secure=False,
    )
    bucket = "fleetflow-probe"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
    client.remove_object(bucket, "probe")
    client.remove_bucket(bucket)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--build", action="store_true", help="only build (or find) the binary, print its path"
    )
    args = parser.parse_args(argv)
    if args.build:
        return exit_status(
            lambda: sys.stdout.write(f"{ensure_weed()}\n"), S3ServerUnavailableError, _report
        )
    return exit_status(_serve, S3ServerUnavailableError, _report)


def _serve() -> None:
    server = start_s3_server()
    serve_until_stopped(
        server,
        printed="".join(f"export {name}={value}\n" for name, value in server.env().items()),
        note=f"running at {server.endpoint} (data in {server.base_dir}); Ctrl-C stops",
        report=_report,
    )


if __name__ == "__main__":
    sys.exit(main())
