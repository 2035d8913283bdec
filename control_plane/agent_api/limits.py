"""Limits of the agent gRPC server (the brute-force lockout of agent tokens is
`control_plane.auth.throttle.AuthLockout`, keyed by `peer_address`).

A message over `MAX_MESSAGE_BYTES` is refused by gRPC itself with RESOURCE_EXHAUSTED before any
handler runs, so an oversized or garbage report costs the control plane no database work. The
agent's largest message is a Register or Heartbeat listing the attempts it runs (ids of a few
dozen bytes each): far below this.
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options for `grpc.aio.server(options=…)`."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def peer_address(peer: str) -> str:
    """The host of a gRPC peer string (`ipv4:10.0.0.7:5123`, `ipv6:[::1]:5123`), without the
    port, so the brute-force lockout counts an address however many connections it opens."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer  # unix sockets and the like: the whole string
