"""raftkv_storage: the durable Raft log and the MVCC key space, on LMDB."""

from raftkv_storage.backend import LmdbBackend
from raftkv_storage.log import LmdbRaftLog

__all__ = ["LmdbBackend", "LmdbRaftLog"]
