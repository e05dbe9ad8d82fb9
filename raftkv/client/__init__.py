"""raftkv's Python client for etcd's v3 API (raftkv clusters and real etcd alike).

``Client`` (blocking) and ``AsyncClient`` (asyncio) have the same methods: ``get``/``range``,
``put``, ``delete``, ``txn`` (with the :class:`Txn` builder), ``compact``, ``member_list``,
``status`` and ``watch``. They fail over between endpoints, retry only what is safe, and raise
``OutcomeUnknown`` for a write that may or may not have been applied.
"""

from raftkv.client.aio import AsyncClient, AsyncWatch, connect
from raftkv.client.errors import (
    ClientError,
    ClientTimeout,
    EtcdError,
    OutcomeUnknown,
    Unavailable,
    WatchCanceled,
    WatchCompacted,
)
from raftkv.client.sync import Client, Watch
from raftkv.client.txn import (
    Compare,
    Txn,
    create_revision,
    delete,
    get,
    lease,
    mod_revision,
    prefix_end,
    put,
    value,
    version,
)
from raftkv.client.types import (
    CompactResult,
    DeleteResult,
    Event,
    EventType,
    Header,
    KeyValue,
    Member,
    MemberListResult,
    PutResult,
    RangeResult,
    StatusResult,
    TxnResult,
    WatchResponse,
)

__all__ = [
    "AsyncClient",
    "AsyncWatch",
    "Client",
    "ClientError",
    "ClientTimeout",
    "CompactResult",
    "Compare",
    "DeleteResult",
    "EtcdError",
    "Event",
    "EventType",
    "Header",
    "KeyValue",
    "Member",
    "MemberListResult",
    "OutcomeUnknown",
    "PutResult",
    "RangeResult",
    "StatusResult",
    "Txn",
    "TxnResult",
    "Unavailable",
    "Watch",
    "WatchCanceled",
    "WatchCompacted",
    "WatchResponse",
    "connect",
    "create_revision",
    "delete",
    "get",
    "lease",
    "mod_revision",
    "prefix_end",
    "put",
    "value",
    "version",
]
