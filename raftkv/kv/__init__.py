"""raftkv.kv: etcd's KV semantics (MVCC, txns, compaction, watch history) over any backend.

Pure: the standard library and ``raftkv.errors`` only. ``raftkv_storage`` supplies the LMDB
backend; :class:`MemoryBackend` serves the simulator (each simulated member's state machine) and
the tests.
"""

from raftkv.kv.backend import KVBackend, MemoryBackend, ReadTxn, WriteTxn
from raftkv.kv.codec import Command, decode_command, encode_command
from raftkv.kv.errors import (
    CompactedRevisionError,
    DuplicateKeyError,
    FutureRevisionError,
    KVError,
    NoSpaceError,
)
from raftkv.kv.keys import prefix_end, validate_request
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.state_machine import ApplyResult, KVStateMachine
from raftkv.kv.types import (
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
)

__all__ = [
    "ApplyResult",
    "Command",
    "CompactedRevisionError",
    "CompactionRequest",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRangeRequest",
    "DuplicateKeyError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "KVBackend",
    "KVError",
    "KVStateMachine",
    "KeyValue",
    "MVCCStore",
    "MemoryBackend",
    "NoSpaceError",
    "PutRequest",
    "RangeRequest",
    "ReadTxn",
    "SortOrder",
    "SortTarget",
    "TxnRequest",
    "WriteTxn",
    "decode_command",
    "encode_command",
    "prefix_end",
    "validate_request",
]
