"""Limits and gRPC options of the peer links, shared by the sending and the receiving side.

The peer gRPC server should be created with :data:`PEER_SERVER_OPTIONS`, which matches the
message size limit and the keepalive pings of :data:`PEER_CHANNEL_OPTIONS`.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ACK_EVERY",
    "CLUSTER_ID_MISMATCH",
    "MAX_MESSAGE_BYTES",
    "PEER_CHANNEL_OPTIONS",
    "PEER_SERVER_OPTIONS",
    "SNAPSHOT_CHANNEL_OPTIONS",
]

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""gRPC message limit on peer links: a 4 MiB batch of large entries, or a snapshot chunk, fits."""

CLUSTER_ID_MISMATCH: Final = "etcdserver: cluster ID mismatch"
"""The status detail with which a receiver refuses a call from another cluster (etcd's text)."""

ACK_EVERY: Final = 8
"""The receiver acknowledges every this many batches even when the sender did not ask."""

_MESSAGE_SIZE_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

PEER_CHANNEL_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    *_MESSAGE_SIZE_OPTIONS,
    # A peer that vanished (power loss, partition) is noticed within ~15 s even on an idle link.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnect backoff must not outlast ours (its default grows to 120 s): a peer that
    # comes back is reached within about two seconds.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
"""Options of the channels GrpcTransport opens to its peers."""

PEER_SERVER_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    *_MESSAGE_SIZE_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Accept the clients' keepalive pings (every 10 s, also on a link with no data for a while);
    # gRPC's default policy answers pings more often than every 5 minutes with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # gRPC binds with SO_REUSEPORT by default: two members misconfigured with one peer port would
    # then share it silently, and on Linux even a port-0 bind may land on a port in use.
    ("grpc.so_reuseport", 0),
)
"""Options for the ``grpc.aio.server`` that serves :class:`~.service.PeerService`."""

# A snapshot goes over a connection of its own, so that megabytes of snapshot data never queue
# in front of heartbeats on the message stream (channels with equal options share connections).
SNAPSHOT_CHANNEL_OPTIONS: Final = (*PEER_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))
"""Options of the channel a snapshot send opens for itself."""
