"""raftkv's peer protocol (proto package ``raftkv.peer.v1``): Raft messages and snapshots."""
