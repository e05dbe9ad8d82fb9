"""The log conformance suite, run against the reference MemoryStorage and LmdbRaftLog."""

from __future__ import annotations

from pathlib import Path

import pytest
import raftkv_storage.log
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


class TestLmdbRaftLogWithATinyTailContract(TestLmdbRaftLogContract):
    """The in-memory tail bounded to a few entries, so reads straddle it and LMDB."""

    @pytest.fixture(autouse=True)
    def _tiny_tail(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(raftkv_storage.log, "TAIL_MAX_ENTRIES", 5)
        monkeypatch.setattr(raftkv_storage.log, "TAIL_MAX_BYTES", 400)
