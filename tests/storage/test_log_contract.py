"""The log conformance suite, run against the reference MemoryStorage and LmdbRaftLog."""

from __future__ import annotations

from pathlib import Path

from raftkv_storage.log import LmdbRaftLog

from raftkv.raft.storage import MemoryStorage
from raftkv.testing.contracts import LogStorageContract, WritableLog


class TestMemoryStorageContract(LogStorageContract):
    def make(self, tmp_path: Path) -> WritableLog:
        return MemoryStorage()


class TestLmdbRaftLogContract(LogStorageContract):
    durable = True

    def make(self, tmp_path: Path) -> WritableLog:
        return LmdbRaftLog(tmp_path / "log", map_size_bytes=64 << 20)

    def reopen(self, storage: WritableLog, tmp_path: Path) -> WritableLog:
        assert isinstance(storage, LmdbRaftLog)
        storage.close()
        return LmdbRaftLog(tmp_path / "log", map_size_bytes=64 << 20)
