"""raftkv_storage: durable Raft log and MVCC key space on LMDB."""
