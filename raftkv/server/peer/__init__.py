"""The peer transport over gRPC: Raft messages, snapshots and forwarded writes between members.

Single-purpose modules, as etcd's rafthttp:

- :mod:`.handler`: :class:`~.handler.PeerHandler`, everything the transport needs from its
  member (the node side), and :class:`~.handler.Refusal`, why a leader turned forwards down;
- :mod:`.options`: message limits and the gRPC channel and server options of peer links;
- :mod:`.sender`: :class:`~.sender.GrpcTransport`, per-peer streams, batching and backoff;
- :mod:`.snapshot_sender`: streaming the state machine's image to a follower;
- :mod:`.service`: :class:`~.service.PeerService`, the receiving servicer;
- :mod:`.snapshot_receiver`: receiving a snapshot into a file named by index and term, and
  :class:`~.snapshot_receiver.ReceivedSnapshots`, with which the member finds it;
- :mod:`.wire`: Raft core values <-> the peer protocol's protobuf messages.

Nothing here imports the node: the member passes itself in as the handler. This package
re-exports nothing, so importing :mod:`.handler` alone stays cheap (no gRPC).
"""
