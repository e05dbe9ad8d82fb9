"""Black-box fault injection for raftkv (and any etcd v3 server): see jepsen/README.md.

Uses only processes, sockets and the client API; never the Raft core, simulator or storage.
"""
