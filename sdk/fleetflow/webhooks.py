"""Signatures of the control plane's webhook notifications: how it signs a body, and how a
receiver verifies one (the standard library alone; a receiver may copy `verify_signature`).

`X-Fleetflow-Signature: sha256=<hex>` is the HMAC-SHA256, under the tenant's signing key, of
`<X-Fleetflow-Timestamp>.<raw body>`; the timestamp (Unix seconds) is in the signed text, so a
recorded request cannot be replayed later than the receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Fleetflow-Signature"
TIMESTAMP_HEADER = "X-Fleetflow-Timestamp"
DELIVERY_HEADER = "X-Fleetflow-Delivery"


def signature(key: str, timestamp: int, body: bytes) -> str:
    """The `X-Fleetflow-Signature` value of `body` sent at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()


def verify_signature(
    key: str,
    timestamp: str,
    body: bytes,
    given: str,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Whether `given` (the signature header) signs `body` at `timestamp` (the timestamp
    header) under `key`, and the timestamp is within `tolerance_seconds` of `now`."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(key, sent, body), given)
