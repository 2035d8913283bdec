"""The report secrets of the agent's leases, kept on disk so that a restarted agent has them.

The control plane refuses an attempt's status report without its lease's report secret. A
report buffered on disk (`report_buffer`) before the agent process died, or the outcome of a pod
the next process adopts (Kubernetes executor), must still go out with it, so each lease's secret
is one file under `<work_dir>/leases/`, the only place on disk it is written:

- the directory is created with mode 0700 (narrowed to it if found wider);
- `<attempt_id>.json` holds the attempt id, the lease's fencing token and its secret; it is
  created with mode 0600 (by `os.open`, never widened then narrowed), written to a temporary
  file, fsynced and renamed into place, so it is either whole or absent;
- it is deleted once nothing more will be reported under the lease;
- only an attempt id of the control plane's form (`at-<hex>`) names a file: a secret of an
  attempt with any other id is kept in memory only, and a file of any other name is ignored.

The secret itself never reaches a log line. Local-process tasks run as the agent's user and
could read these files (as they could the token file): see docs/operator.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path

from pydantic import SecretStr

from fleetflow.storage.local import TEMPORARY_SUFFIX, write_atomically

logger = logging.getLogger(__name__)

LEASES_DIR = "leases"
"""Under the work directory: the report secrets of the leases the agent still answers for."""
LEASE_SUFFIX = ".json"
DIRECTORY_MODE = 0o700
_ATTEMPT_ID = re.compile(r"at-[0-9a-f]{1,64}")


def names_a_lease_file(attempt_id: str) -> bool:
    """Whether `attempt_id` has the control plane's form, the only one that names a file."""
    return _ATTEMPT_ID.fullmatch(attempt_id) is not None


class LeaseStore:
    """Attempt id -> (fencing token, report secret), one file per lease under `directory`.

    Args:
        directory: Where the lease files live (created, mode 0700, if missing).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        mode = self._directory.stat().st_mode & 0o777
        if mode & ~DIRECTORY_MODE:
            logger.warning(
                "%s is open to its group or to others (mode %o); narrowing it to %o",
                self._directory,
                mode,
                DIRECTORY_MODE,
            )
            os.chmod(self._directory, DIRECTORY_MODE)

    @property
    def directory(self) -> Path:
        return self._directory

    def load(self) -> dict[str, tuple[int, SecretStr]]:
        """The leases a previous agent process left; unreadable files are logged and removed."""
        leases: dict[str, tuple[int, SecretStr]] = {}
        for path in sorted(self._directory.iterdir()):
            name = path.name
            if name.endswith(TEMPORARY_SUFFIX):
                logger.info("removing %s, a lease write cut short by a crash", path)
                path.unlink(missing_ok=True)
                continue
            attempt_id = name.removesuffix(LEASE_SUFFIX)
            if not name.endswith(LEASE_SUFFIX) or not names_a_lease_file(attempt_id):
                logger.warning("ignoring %s: not a lease file", path)
                continue
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read())
                token, secret = data["fencing_token"], data["report_secret"]
                if data["attempt_id"] != attempt_id or type(token) is not int:
                    raise ValueError("not the lease its name says")
                if not isinstance(secret, str):
                    raise ValueError("no report secret")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # The message names the problem, never the contents.
                logger.error(
                    "lease file %s is unreadable (%s); removing it", path, type(exc).__name__
                )
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                continue
            leases[attempt_id] = (token, SecretStr(secret))
        if leases:
            logger.info(
                "recovered the report secrets of %d lease(s) from %s", len(leases), self._directory
            )
        return leases

    def save(self, attempt_id: str, fencing_token: int, secret: SecretStr) -> None:
        """Store a lease's secret durably, replacing any earlier lease's of the attempt.

        Raises:
            ValueError: `attempt_id` is not of the form that may name a file.
            OSError: The file could not be written (none is left half written).
        """
        path = self._path(attempt_id)
        data = json.dumps(
            {
                "attempt_id": attempt_id,
                "fencing_token": fencing_token,
                "report_secret": secret.get_secret_value(),
            }
        ).encode()
        # Owner-only from creation, never through a link, durable before the lease is used.
        write_atomically(path, lambda f: f.write(data), durable=True)

    def delete(self, attempt_id: str) -> None:
        """Remove a lease's file, if it has one (an unlink that fails is logged)."""
        if not names_a_lease_file(attempt_id):
            return
        path = self._path(attempt_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the next process loads it and removes it when it finds it unused
            logger.warning("could not remove the lease file %s: %s", path, exc)

    def _path(self, attempt_id: str) -> Path:
        if not names_a_lease_file(attempt_id):
            raise ValueError(f"attempt id {attempt_id!r} cannot name a lease file")
        return self._directory / f"{attempt_id}{LEASE_SUFFIX}"
