"""etcd's txn compares (applyCompare / compareKV), evaluated against the MVCC key space."""

from __future__ import annotations

from raftkv.kv.backend import ReadTxn
from raftkv.kv.keys import unescape_key
from raftkv.kv.layout import kv_of, visible
from raftkv.kv.types import Compare, CompareResult, CompareTarget, KeyValue, TxnRequest

__all__ = ["compare_kv", "compare_path", "evaluate_compare"]


def compare_kv(c: Compare, kv: KeyValue) -> bool:
    if c.target == CompareTarget.VALUE:
        diff = (kv.value > c.value) - (kv.value < c.value)
    elif c.target == CompareTarget.VERSION:
        diff = kv.version - c.version
    elif c.target == CompareTarget.CREATE:
        diff = kv.create_revision - c.create_revision
    elif c.target == CompareTarget.MOD:
        diff = kv.mod_revision - c.mod_revision
    elif c.target == CompareTarget.LEASE:
        diff = kv.lease - c.lease
    else:
        diff = 0  # an unnamed target: etcd's compareKV compares nothing
    if c.result == CompareResult.EQUAL:
        return diff == 0
    if c.result == CompareResult.NOT_EQUAL:
        return diff != 0
    if c.result == CompareResult.GREATER:
        return diff > 0
    if c.result == CompareResult.LESS:
        return diff < 0
    return True  # an unnamed result: etcd's compareKV falls through to true


def evaluate_compare(txn: ReadTxn, c: Compare, rev: int) -> bool:
    """True if every key in the compare's range passes it (etcd's applyCompare)."""
    found = False
    for k_esc, hk, hv in visible(txn, c.key, c.range_end, rev):
        found = True
        if not compare_kv(c, kv_of(unescape_key(k_esc), hk, hv)):
            return False
    if not found:
        # A missing key compares as the zero KeyValue, except that VALUE always fails.
        return c.target != CompareTarget.VALUE and compare_kv(c, KeyValue(c.key))
    return True


def compare_path(txn: ReadTxn, req: TxnRequest, rev: int) -> list[bool]:
    """Every compare outcome, outer then nested in execution order, all read before writing."""
    path: list[bool] = []

    def walk(t: TxnRequest) -> None:
        ok = all(evaluate_compare(txn, c, rev) for c in t.compare)
        path.append(ok)
        for op in t.success if ok else t.failure:
            if isinstance(op, TxnRequest):
                walk(op)

    walk(req)
    return path
