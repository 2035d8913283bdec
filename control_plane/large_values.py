"""Large workflow inputs and outputs live in the blob store, not in the executions table.

Values between tasks always travel through the blob store; an execution's inputs and final
outputs are also kept on its row. Past `INLINE_LIMIT_BYTES` the row holds only a reference,
`{"$blob": <uri>}` (no input or output is named `$blob`: names are Python identifiers), and
readers resolve it.
"""

from __future__ import annotations

import json
from typing import Any

from fleetflow.storage import BlobStore

INLINE_LIMIT_BYTES = 256 * 1024
_REFERENCE = "$blob"


def store_values(values: dict[str, Any], blobs: BlobStore, key: str) -> dict[str, Any]:
    """What to keep on the row: the values, or a reference to them written at `key`."""
    encoded = json.dumps(values).encode()
    if len(encoded) <= INLINE_LIMIT_BYTES:
        return values
    return {_REFERENCE: blobs.put(key, encoded)}


def load_values(stored: dict[str, Any] | None, blobs: BlobStore) -> dict[str, Any] | None:
    """The values a row holds, following a reference to the blob store."""
    if stored is not None and set(stored) == {_REFERENCE}:
        loaded: dict[str, Any] = json.loads(blobs.get(stored[_REFERENCE]))
        return loaded
    return stored
