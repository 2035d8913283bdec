"""Large workflow outputs live in the blob store, not in the executions table.

Values between tasks always travel through the blob store; an execution's final outputs are
also kept on its row for the API. Past `INLINE_LIMIT_BYTES` the row holds only a reference,
`{"$blob": <uri>}` (no output is named `$blob`: output names are Python identifiers), and
readers resolve it.
"""

from __future__ import annotations

import json
from typing import Any

from fleetflow.storage import BlobStore

INLINE_LIMIT_BYTES = 256 * 1024
_REFERENCE = "$blob"


def store_outputs(outputs: dict[str, Any], blobs: BlobStore, key: str) -> dict[str, Any]:
    """What to keep on the row: the outputs, or a reference to them written at `key`."""
    encoded = json.dumps(outputs).encode()
    if len(encoded) <= INLINE_LIMIT_BYTES:
        return outputs
    return {_REFERENCE: blobs.put(key, encoded)}


def load_outputs(stored: dict[str, Any] | None, blobs: BlobStore) -> dict[str, Any] | None:
    """The outputs a row holds, following a reference to the blob store."""
    if stored is not None and set(stored) == {_REFERENCE}:
        loaded: dict[str, Any] = json.loads(blobs.get(stored[_REFERENCE]))
        return loaded
    return stored
