"""Bearer tokens and lease report secrets: random, shown once, stored only as their SHA-256.

The prefix tells a secret's kind at a glance (and to secret scanners): `ffu_` for users and
service accounts, `ffa_` for cluster agents, `ffl_` for the report secret of one attempt's
lease (sent to the agent with the lease, required on its status reports).

A leaf (standard library only): the repositories that store principals, clusters and leases
hash with it, and so does `auth/`, which sits above the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

USER_TOKEN_PREFIX = "ffu_"
AGENT_TOKEN_PREFIX = "ffa_"
LEASE_SECRET_PREFIX = "ffl_"


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_user_token() -> str:
    return f"{USER_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"


def new_agent_token() -> str:
    return f"{AGENT_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"


def new_lease_secret() -> str:
    """A fresh report secret for one lease of one attempt."""
    return f"{LEASE_SECRET_PREFIX}{secrets.token_urlsafe(32)}"


def matches_hash(secret: str, stored_hash: str) -> bool:
    """Whether `secret` is the one whose `hash_token` was stored (in constant time)."""
    return hmac.compare_digest(hash_token(secret), stored_hash)
