#!/usr/bin/env python3
"""Provide the binaries of the Kubernetes test tier: etcd, kube-apiserver, kube-scheduler, kwok,
and helm (the charts in infra/helm, tests/k8s/test_helm_charts.py).

Pinned versions are built from the Go module proxy by the build modules beside this script
(`modules/kube`: k8s.io/kubernetes with its staging modules replaced by their published
versions, and etcd's server at the version Kubernetes pins; `modules/kwok`: sigs.k8s.io/kwok;
`modules/helm`: helm.sh/helm/v4; each with a committed go.sum),
then cached outside the repository under `$FLEETFLOW_CACHE_DIR/k8s` (default
`~/.cache/fleetflow/k8s/<kubernetes>-kwok-<kwok>/bin`, and `~/.cache/fleetflow/k8s/helm-<helm>/bin`
for helm, so that a new helm version rebuilds helm only). A binary found in
`$KUBEBUILDER_ASSETS` (the envtest convention) is used instead of building it, and so is a
helm found in `$FLEETFLOW_HELM_BIN`.

    python infra/k8s/provision.py            # build what is missing, print the bin directory
    python infra/k8s/provision.py --check    # exit 1 if anything is missing, build nothing

The first build takes a while on few cores (kube-apiserver is large); later runs find the
cache. Concurrent runs wait for each other on a lock file in the cache directory.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from tooling import cache_root  # noqa: E402

KUBERNETES_VERSION = "v1.37.2"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v4.3.2"
MODULES_DIR = Path(__file__).resolve().parent / "modules"
# What the builds read from the repository (tests/unit/test_infra.py checks git tracks them).
BUILD_SOURCES = (MODULES_DIR / "kube", MODULES_DIR / "kwok", MODULES_DIR / "helm")
BINARIES = ("etcd", "kube-apiserver", "kube-scheduler", "kwok", "helm")
# Which build module makes which binary, and the package it builds.
_PACKAGES = {
    "kube-apiserver": ("kube", "k8s.io/kubernetes/cmd/kube-apiserver"),
    "kube-scheduler": ("kube", "k8s.io/kubernetes/cmd/kube-scheduler"),
    "etcd": ("kube", "./etcd"),
    "kwok": ("kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    "helm": ("helm", "helm.sh/helm/v4/cmd/helm"),
}


class ProvisionError(RuntimeError):
    """A binary could not be found or built."""


def cache_dir(module: str = "kube") -> Path:
    """Where the binaries of one build module are cached (kube and kwok share one)."""
    if module == "helm":
        return cache_root() / "k8s" / f"helm-{HELM_VERSION}" / "bin"
    return cache_root() / "k8s" / f"{KUBERNETES_VERSION}-kwok-{KWOK_VERSION}" / "bin"


def _provided(name: str) -> Path | None:
    if name == "helm":
        given = os.environ.get("FLEETFLOW_HELM_BIN")
        path = Path(given) if given else None
    else:
        assets = os.environ.get("KUBEBUILDER_ASSETS")
        path = Path(assets) / name if assets else None
    return path if path is not None and path.is_file() and os.access(path, os.X_OK) else None


def locate() -> dict[str, Path | None]:
    """Each binary's path, or None where it is neither provided nor cached."""
    found: dict[str, Path | None] = {}
    for name in BINARIES:
        cached = cache_dir(_PACKAGES[name][0]) / name
        found[name] = _provided(name) or (cached if cached.is_file() else None)
    return found


def _ldflags(module: str) -> str:
    """Strip symbols; stamp the Kubernetes version (`go build` leaves v0.0.0-master)."""
    flags = ["-s", "-w"]
    if module == "helm":  # `helm version` reports it; without it, v4.x-dev
        flags.append(f"-X helm.sh/helm/v4/internal/version.version={HELM_VERSION}")
    if module == "kube":
        major, minor, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {package}.gitVersion={KUBERNETES_VERSION}",
                f"-X {package}.gitMajor={major}",
                f"-X {package}.gitMinor={minor}",
                f"-X {package}.gitTreeState=clean",
            ]
    return " ".join(flags)


def _build(missing: list[str], log: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise ProvisionError("`go` is not on PATH: cannot build " + ", ".join(missing))
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
    for module in sorted({_PACKAGES[name][0] for name in missing}):
        names = [n for n in missing if _PACKAGES[n][0] == module]
        target = cache_dir(module)
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as out:
            command = [go, "build", "-trimpath", f"-ldflags={_ldflags(module)}", "-o", out + "/"]
            command += [_PACKAGES[n][1] for n in names]
            sys.stderr.write(f"building {', '.join(names)} (log: {log})\n")
            with open(log, "ab") as log_file:
                done = subprocess.run(
                    command, cwd=MODULES_DIR / module, env=env, stdout=log_file, stderr=log_file
                )
            if done.returncode != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise ProvisionError(f"building {', '.join(names)} failed:\n{tail}")
            for name in names:
                os.replace(Path(out) / name, target / name)


def provision() -> dict[str, Path]:
    """Every binary's path, building (once, under a lock) what is missing.

    Raises:
        ProvisionError: Go is missing or a build failed.
    """
    found = locate()
    if all(found.values()):
        return {k: v for k, v in found.items() if v is not None}
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same
        found = locate()
        missing = [name for name, path in found.items() if path is None]
        if missing:
            _build(missing, target / "build.log")
    found = locate()
    absent = [name for name, path in found.items() if path is None]
    if absent:
        raise ProvisionError("still missing after the build: " + ", ".join(absent))
    return {k: v for k, v in found.items() if v is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report only; build nothing")
    args = parser.parse_args()
    if args.check:
        found = locate()
        for name, path in found.items():
            sys.stdout.write(f"{name}: {path or 'MISSING'}\n")
        return 0 if all(found.values()) else 1
    try:
        paths = provision()
    except ProvisionError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    for name, path in paths.items():
        sys.stdout.write(f"{name}: {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
