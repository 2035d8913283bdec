"""Bearer tokens: random, shown once, stored only as their SHA-256.

The prefix tells a token's kind at a glance (and to secret scanners): `ffu_` for users and
service accounts, `ffa_` for cluster agents.
"""

from __future__ import annotations

import hashlib
import secrets

USER_TOKEN_PREFIX = "ffu_"
AGENT_TOKEN_PREFIX = "ffa_"


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_user_token() -> str:
    return f"{USER_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"


def new_agent_token() -> str:
    return f"{AGENT_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
