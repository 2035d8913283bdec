"""Limits of the agent gRPC server.

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
