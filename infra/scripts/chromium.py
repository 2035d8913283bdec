"""A headless Chromium for the browser tests (tests/e2e/test_api_docs_browser.py).

The tests drive a real browser through Playwright from PyPI, but never let Playwright download
one: its browser builds come from outside the package registries. The browser is Debian's
`chromium` package instead. This module finds it (`$FLEETFLOW_CHROMIUM_BIN`, else
`/usr/bin/chromium`, else `chromium` on PATH) and, when it is missing and we run as root,
installs it with apt-get.

As a module (the tests)::

    path = find_chromium()                # None when not installed; never installs

As a command (`make test` runs it first)::

    python infra/scripts/chromium.py      # find or install it, print its path
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tooling import Reporter, apt_get_install, can_apt_get_install  # noqa: E402

_report = Reporter("chromium")
_say, _loud = _report.say, _report.loud

BIN_ENV = "FLEETFLOW_CHROMIUM_BIN"
DEBIAN_BINARY = Path("/usr/bin/chromium")


class ChromiumUnavailableError(RuntimeError):
    """Chromium is not installed and cannot be installed here; the message says why."""


def find_chromium() -> Path | None:
    """The Chromium binary, or None when none is installed.

    Raises:
        ChromiumUnavailableError: `$FLEETFLOW_CHROMIUM_BIN` names no executable file.
    """
    given = os.environ.get(BIN_ENV)
    if given:
        if not os.access(given, os.X_OK):
            raise ChromiumUnavailableError(f"{BIN_ENV}={given} is not an executable file")
        return Path(given)
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    on_path = shutil.which("chromium")
    return Path(on_path) if on_path else None


def how_to_get_it() -> str:
    """What a person does to get the browser, for skip and error messages."""
    return (
        "run `python infra/scripts/chromium.py` (as root it installs Debian's `chromium` with "
        "apt-get), or `sudo apt-get install -y --no-install-recommends chromium`, or point "
        f"{BIN_ENV} at a Chromium binary"
    )


def ensure_chromium_installed() -> Path:
    """Return the Chromium binary, installing Debian's `chromium` package if needed.

    Raises:
        ChromiumUnavailableError: it is missing and cannot be installed here (not root, no
            apt-get, or the installation failed).
    """
    found = find_chromium()
    if found is not None:
        return found
    if not can_apt_get_install():
        raise ChromiumUnavailableError(
            "Chromium was not found and cannot be installed automatically (that needs root "
            f"and apt-get); the browser tests need it: {how_to_get_it()}"
        )
    _loud(
        "Chromium is not installed. INSTALLING IT NOW with `apt-get install -y "
        "--no-install-recommends chromium` (system-wide, as root) so that the browser tests "
        "can run."
    )
    apt_get_install(["--no-install-recommends", "chromium"], ChromiumUnavailableError)
    found = find_chromium()
    if found is None:
        raise ChromiumUnavailableError(
            f"apt-get installed `chromium` but {DEBIAN_BINARY} is still not there"
        )
    return found


def chromium_version(binary: Path) -> str:
    """What `chromium --version` prints (it also proves the binary starts)."""
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise ChromiumUnavailableError(
            f"`{binary} --version` failed with exit code {result.returncode}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.parse_args(argv)
    try:
        binary = ensure_chromium_installed()
        _say(f"{chromium_version(binary)} at {binary}")
    except ChromiumUnavailableError as exc:
        _loud(f"BROWSER TESTS CANNOT RUN: {exc}")
        return 1
    sys.stdout.write(f"{binary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
