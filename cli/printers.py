"""How the etcdctl-style commands (:mod:`raftkv_cli.ctl`) print results: etcdctl's ``simple``,
``json`` (etcd's JSON, base64 keys and values) and ``table`` output formats."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import click

from raftkv.client import (
    DeleteResult,
    Event,
    Header,
    KeyValue,
    MemberListResult,
    PutResult,
    RangeResult,
    StatusResult,
    TxnResult,
    WatchResponse,
)
from raftkv.client.types import OpResult

__all__ = [
    "b64",
    "header_json",
    "human_size",
    "kv_json",
    "op_json",
    "print_endpoint_status",
    "print_event_simple",
    "print_members",
    "print_op_simple",
    "print_range_simple",
    "print_txn_simple",
    "range_json",
    "table",
    "text",
    "txn_json",
    "watch_response_json",
]


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def header_json(h: Header) -> dict[str, int]:
    return {
        "cluster_id": h.cluster_id,
        "member_id": h.member_id,
        "revision": h.revision,
        "raft_term": h.raft_term,
    }


def kv_json(kv: KeyValue) -> dict[str, Any]:
    out: dict[str, Any] = {"key": b64(kv.key)}
    for name in ("create_revision", "mod_revision", "version"):
        if getattr(kv, name):
            out[name] = getattr(kv, name)
    if kv.value:
        out["value"] = b64(kv.value)
    if kv.lease:
        out["lease"] = kv.lease
    return out


def text(b: bytes) -> str:
    return b.decode(errors="replace")


def range_json(r: RangeResult) -> dict[str, Any]:
    out: dict[str, Any] = {"header": header_json(r.header)}
    if r.kvs:
        out["kvs"] = [kv_json(kv) for kv in r.kvs]
    if r.more:
        out["more"] = True
    out["count"] = r.count
    return out


def op_json(r: OpResult) -> dict[str, Any]:
    if isinstance(r, RangeResult):
        return {"Response": {"response_range": range_json(r)}}
    if isinstance(r, PutResult):
        return {"Response": {"response_put": {"header": header_json(r.header)}}}
    if isinstance(r, DeleteResult):
        return {
            "Response": {
                "response_delete_range": {"header": header_json(r.header), "deleted": r.deleted}
            }
        }
    return {"Response": {"response_txn": txn_json(r)}}


def txn_json(r: TxnResult) -> dict[str, Any]:
    out: dict[str, Any] = {"header": header_json(r.header)}
    if r.succeeded:
        out["succeeded"] = True
    out["responses"] = [op_json(x) for x in r.responses]
    return out


def print_range_simple(r: RangeResult, keys_only: bool = False) -> None:
    for kv in r.kvs:
        click.echo(text(kv.key))
        if not keys_only:
            click.echo(text(kv.value))
    if not r.kvs and r.count and not keys_only:
        click.echo(r.count)


def print_op_simple(r: OpResult) -> None:
    if isinstance(r, RangeResult):
        print_range_simple(r)
    elif isinstance(r, PutResult):
        click.echo("OK")
    elif isinstance(r, DeleteResult):
        click.echo(r.deleted)
    else:
        print_txn_simple(r)


def print_txn_simple(r: TxnResult) -> None:
    click.echo("SUCCESS" if r.succeeded else "FAILURE")
    for op in r.responses:
        click.echo()
        print_op_simple(op)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(r: Sequence[str]) -> str:
        return "|" + "|".join(f" {c:^{w}} " for c, w in zip(r, widths, strict=True)) + "|"

    return "\n".join([sep, line([h.upper() for h in headers]), sep, *(line(r) for r in cells), sep])


def print_event_simple(e: Event, prev: bool) -> None:
    click.echo(e.type.name)
    if prev and e.prev_kv is not None:
        click.echo(text(e.prev_kv.key))
        click.echo(text(e.prev_kv.value))
    click.echo(text(e.kv.key))
    click.echo(text(e.kv.value))


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def watch_response_json(resp: WatchResponse) -> dict[str, Any]:
    """One watch response as etcdctl's json output prints it."""
    d: dict[str, Any] = {"Header": header_json(resp.header), "Events": []}
    for e in resp.events:
        ev: dict[str, Any] = {"kv": kv_json(e.kv)}
        if e.type:
            ev["type"] = int(e.type)
        if e.prev_kv is not None:
            ev["prev_kv"] = kv_json(e.prev_kv)
        d["Events"].append(ev)
    return d


def print_members(r: MemberListResult, out: str, *, as_hex: bool) -> None:
    """``member list`` in the output format ``out`` (ids in hex in json with ``as_hex``)."""
    if out == "json":
        members = [
            {
                "ID": f"{m.id:x}" if as_hex else m.id,
                "name": m.name,
                "peerURLs": list(m.peer_urls),
                "clientURLs": list(m.client_urls),
                **({"isLearner": True} if m.is_learner else {}),
            }
            for m in r.members
        ]
        click.echo(json.dumps({"header": header_json(r.header), "members": members}))
        return
    rows = [
        (
            f"{m.id:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peer_urls),
            ",".join(m.client_urls),
            str(m.is_learner).lower(),
        )
        for m in r.members
    ]
    if out == "table":
        cols = ("ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER")
        click.echo(table(cols, rows))
    else:
        for row in rows:
            click.echo(", ".join(row))


def print_endpoint_status(statuses: Sequence[StatusResult], out: str) -> None:
    """``endpoint status`` of the endpoints that answered, in the output format ``out``."""
    if out == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "Endpoint": s.endpoint,
                        "Status": {
                            "header": header_json(s.header),
                            "version": s.version,
                            "dbSize": s.db_size,
                            "leader": s.leader,
                            "raftIndex": s.raft_index,
                            "raftTerm": s.raft_term,
                            "raftAppliedIndex": s.raft_applied_index,
                            "dbSizeInUse": s.db_size_in_use,
                            **({"errors": list(s.errors)} if s.errors else {}),
                        },
                    }
                    for s in statuses
                ]
            )
        )
        return
    rows = [
        (
            s.endpoint,
            f"{s.header.member_id:x}",
            s.version,
            human_size(s.db_size),
            str(s.header.member_id == s.leader).lower(),
            str(s.is_learner).lower(),
            s.raft_term,
            s.raft_index,
            s.raft_applied_index,
            ", ".join(s.errors),
        )
        for s in statuses
    ]
    if out == "table":
        cols = (
            "ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER",
            "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS",
        )  # fmt: skip
        click.echo(table(cols, rows))
    else:
        for row in rows:
            click.echo(", ".join(str(x) for x in row))
