"""The log conformance suite, run against every DurableLog: the reference MemoryStorage, the
simulator's SimDisk and the production LmdbRaftLog."""

from __future__ import annotations

from pathlib import Path

import pytest
import raftkv_storage.log
from raftkv_storage.log import LmdbRaftLog

from raftkv.raft.storage import DurableLog, MemoryStorage
from raftkv.raft.types import ConfState
from raftkv.sim.chooser import SeededChooser
from raftkv.sim.disk import SimDisk
from raftkv.testing.contracts import LogStorageContract


class TestMemoryStorageContract(LogStorageContract):
    def make(self, tmp_path: Path) -> DurableLog:
        return MemoryStorage()


class TestSimDiskContract(LogStorageContract):
    """Reopening is a crash: the contract syncs first, so every write must survive it."""

    durable = True

    def make(self, tmp_path: Path) -> DurableLog:
        return SimDisk(ConfState())

    def reopen(self, storage: DurableLog, tmp_path: Path) -> DurableLog:
        assert isinstance(storage, SimDisk)
        assert storage.synced
        storage.crash(SeededChooser(0))
        return storage


class TestLmdbRaftLogContract(LogStorageContract):
    durable = True

    def make(self, tmp_path: Path) -> DurableLog:
        return LmdbRaftLog(tmp_path / "log", map_size_bytes=64 << 20)

    def reopen(self, storage: DurableLog, tmp_path: Path) -> DurableLog:
        assert isinstance(storage, LmdbRaftLog)
        storage.close()
        return LmdbRaftLog(tmp_path / "log", map_size_bytes=64 << 20)


class TestLmdbRaftLogWithATinyTailContract(TestLmdbRaftLogContract):
    """The in-memory tail bounded to a few entries, so reads straddle it and LMDB."""

    @pytest.fixture(autouse=True)
    def _tiny_tail(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(raftkv_storage.log, "TAIL_MAX_ENTRIES", 5)
        monkeypatch.setattr(raftkv_storage.log, "TAIL_MAX_BYTES", 400)
