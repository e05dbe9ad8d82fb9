"""The simulator's tiny replicated key-value state machine.

Commands are ``put(key, value)`` and ``cas(key, expected, new)``, each tagged with a unique request
id, encoded deterministically as ASCII. ``expected`` may be absent ("the key must not exist").
Snapshots serialise the map in sorted key order, so equal states give equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.raft.types import Index

__all__ = ["Command", "KVStore", "decode_command", "encode_cas", "encode_put"]

_NONE = "-"


def _enc(value: int | None) -> str:
    return _NONE if value is None else str(value)


def _dec(text: str) -> int | None:
    return None if text == _NONE else int(text)


def encode_put(request_id: int, key: str, value: int) -> bytes:
    return f"p {request_id} {key} {value}".encode()


def encode_cas(request_id: int, key: str, expected: int | None, new: int) -> bytes:
    return f"c {request_id} {key} {_enc(expected)} {new}".encode()


@dataclass(frozen=True, slots=True)
class Command:
    kind: str  # "p" or "c"
    request_id: int
    key: str
    value: int
    expected: int | None = None


def decode_command(data: bytes) -> Command:
    parts = data.decode().split(" ")
    if parts[0] == "p" and len(parts) == 4:
        return Command("p", int(parts[1]), parts[2], int(parts[3]))
    if parts[0] == "c" and len(parts) == 5:
        return Command("c", int(parts[1]), parts[2], int(parts[4]), _dec(parts[3]))
    raise ValueError(f"bad command {data!r}")


class KVStore:
    """The state machine: a map, and the index of the last applied entry."""

    __slots__ = ("applied", "data")

    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.applied: Index = 0

    def apply(self, index: Index, payload: bytes) -> tuple[int, bool]:
        """Apply the entry at ``index``; returns (request id, success). Empty payloads (a
        leader's no-op) return request id 0. ``index`` must be ``applied + 1``."""
        if index != self.applied + 1:
            raise ValueError(f"apply index {index} does not follow applied {self.applied}")
        self.applied = index
        if not payload:
            return 0, True
        cmd = decode_command(payload)
        if cmd.kind == "p":
            self.data[cmd.key] = cmd.value
            return cmd.request_id, True
        if self.data.get(cmd.key) == cmd.expected:
            self.data[cmd.key] = cmd.value
            return cmd.request_id, True
        return cmd.request_id, False

    def get(self, key: str) -> int | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return "\n".join(f"{k}={v}" for k, v in sorted(self.data.items())).encode()

    @classmethod
    def restore(cls, index: Index, blob: bytes) -> KVStore:
        kv = cls()
        kv.applied = index
        if blob:
            for line in blob.decode().split("\n"):
                key, _, value = line.partition("=")
                kv.data[key] = int(value)
        return kv

    def digest(self) -> str:
        return f"{self.applied}:{self.snapshot().decode()}"
