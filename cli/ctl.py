"""etcdctl-style client commands built on :mod:`raftkv.client`.

``raftkv get|put|del|txn|watch|compact``, ``raftkv member list`` and ``raftkv endpoint status``.
Each takes ``--endpoints`` and ``-w simple|json|table`` (etcdctl's output formats: ``simple``
prints like etcdctl, ``json`` prints etcd's JSON with base64 keys and values), and etcdctl's
TLS options ``--cacert``, ``--cert`` and ``--key`` (or ``ETCDCTL_CACERT`` etc.); ``https://``
endpoints use TLS too.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from raftkv_cli.printers import (
    header_json,
    kv_json,
    print_endpoint_status,
    print_event_simple,
    print_members,
    print_range_simple,
    print_txn_simple,
    range_json,
    text,
    txn_json,
    watch_response_json,
)

from raftkv.client import (
    Client,
    ClientError,
    Compare,
    OutcomeUnknown,
    StatusResult,
    Txn,
    WatchCompacted,
    create_revision,
    delete,
    get,
    lease,
    mod_revision,
    put,
    value,
    version,
)
from raftkv.errors import ConfigError

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _common(f: F) -> F:
    opts = [
        click.option(
            "--endpoints",
            default="127.0.0.1:2379",
            show_default=True,
            envvar="ETCDCTL_ENDPOINTS",
            help="Comma-separated gRPC endpoints.",
        ),
        click.option(
            "-w",
            "--write-out",
            type=click.Choice(["simple", "json", "table"]),
            default="simple",
            show_default=True,
        ),
        click.option("--command-timeout", type=float, default=5.0, show_default=True),
        click.option(
            "--cacert",
            default=None,
            envvar="ETCDCTL_CACERT",
            help="CA bundle that signs the servers' certificates (uses TLS).",
        ),
        click.option(
            "--cert",
            default=None,
            envvar="ETCDCTL_CERT",
            help="Client certificate, for servers with --client-cert-auth (uses TLS).",
        ),
        click.option(
            "--key",
            "key_file",
            default=None,
            envvar="ETCDCTL_KEY",
            help="Key of the client certificate.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _client(kw: dict[str, Any]) -> Client:
    try:
        return Client(
            kw.pop("endpoints"),
            timeout_s=kw.pop("command_timeout"),
            ca_cert=kw.pop("cacert"),
            cert=kw.pop("cert"),
            key=kw.pop("key_file"),
        )
    except (ConfigError, OSError) as exc:  # --cert without --key, an unreadable file
        raise click.UsageError(str(exc)) from None


def _fail(exc: BaseException) -> NoReturn:
    if isinstance(exc, OutcomeUnknown):
        click.echo(f"Error: outcome unknown: {exc}", err=True)
        sys.exit(3)
    click.echo(f"Error: {exc}", err=True)
    sys.exit(1)


# -- get / put / del ------------------------------------------------------------------------------


@click.command("get")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True)
@click.option("--from-key", is_flag=True)
@click.option("--limit", type=int, default=0)
@click.option("--rev", type=int, default=0)
@click.option("--order", type=click.Choice(["ASCEND", "DESCEND"], case_sensitive=False))
@click.option(
    "--sort-by",
    type=click.Choice(["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"], case_sensitive=False),
)
@click.option("--keys-only", is_flag=True)
@click.option("--count-only", is_flag=True)
@click.option("--print-value-only", is_flag=True)
@click.option("--consistency", type=click.Choice(["l", "s"]), default="l", show_default=True)
@_common
def get_command(key: str, range_end: str | None, **kw: Any) -> None:
    """Get a key or a range of keys."""
    out = kw.pop("write_out")
    order = (kw.pop("order") or ("ASCEND" if kw["sort_by"] else "NONE")).lower()
    sort_by = (kw.pop("sort_by") or "key").lower()
    target = {"modify": "mod"}.get(sort_by, sort_by)
    with _client(kw) as c:
        try:
            r = c.get(
                key,
                range_end,
                prefix=kw["prefix"],
                from_key=kw["from_key"],
                limit=kw["limit"],
                revision=kw["rev"],
                sort_order=order,
                sort_target=target,
                keys_only=kw["keys_only"],
                count_only=kw["count_only"],
                serializable=kw["consistency"] == "s",
            )
        except ClientError as e:
            _fail(e)
    if out == "json":
        click.echo(json.dumps(range_json(r)))
    elif kw["count_only"]:
        click.echo(r.count)
    elif kw["print_value_only"]:
        for kv in r.kvs:
            click.echo(text(kv.value))
    else:
        print_range_simple(r, kw["keys_only"])


@click.command("put")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", "lease_id", default="0", help="Lease ID (hex).")
@click.option("--prev-kv", is_flag=True)
@click.option("--ignore-value", is_flag=True)
@click.option("--ignore-lease", is_flag=True)
@_common
def put_command(key: str, value: str | None, **kw: Any) -> None:
    """Put a key (the value is read from stdin when omitted)."""
    out = kw.pop("write_out")
    if value is None and not kw["ignore_value"]:
        value = sys.stdin.read()
    with _client(kw) as c:
        try:
            r = c.put(
                key,
                value or "",
                lease=int(kw["lease_id"], 16),
                prev_kv=kw["prev_kv"],
                ignore_value=kw["ignore_value"],
                ignore_lease=kw["ignore_lease"],
            )
        except ClientError as e:
            _fail(e)
    if out == "json":
        d: dict[str, Any] = {"header": header_json(r.header)}
        if r.prev_kv:
            d["prev_kv"] = kv_json(r.prev_kv)
        click.echo(json.dumps(d))
        return
    click.echo("OK")
    if r.prev_kv is not None:
        click.echo(text(r.prev_kv.key))
        click.echo(text(r.prev_kv.value))


@click.command("del")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True)
@click.option("--from-key", is_flag=True)
@click.option("--prev-kv", is_flag=True)
@_common
def del_command(key: str, range_end: str | None, **kw: Any) -> None:
    """Delete a key or a range of keys."""
    out = kw.pop("write_out")
    with _client(kw) as c:
        try:
            r = c.delete(
                key, range_end, prefix=kw["prefix"], from_key=kw["from_key"], prev_kv=kw["prev_kv"]
            )
        except ClientError as e:
            _fail(e)
    if out == "json":
        d: dict[str, Any] = {"header": header_json(r.header), "deleted": r.deleted}
        if r.prev_kvs:
            d["prev_kvs"] = [kv_json(kv) for kv in r.prev_kvs]
        click.echo(json.dumps(d))
        return
    click.echo(r.deleted)
    for kv in r.prev_kvs:
        click.echo(text(kv.key))
        click.echo(text(kv.value))


# -- txn ------------------------------------------------------------------------------------------

_CMP = re.compile(
    r'^\s*(\w+)\(\s*"((?:[^"\\]|\\.)*)"\s*\)\s*(=|==|!=|<|>)\s*"?((?:[^"\\]|\\.)*)"?\s*$'
)
_TARGETS: dict[str, Callable[..., Compare]] = {
    "ver": version,
    "version": version,
    "c": create_revision,
    "create": create_revision,
    "m": mod_revision,
    "mod": mod_revision,
    "val": value,
    "value": value,
    "lease": lease,
}


def parse_compare(line: str) -> Compare:
    """etcdctl's compare syntax: ``mod("key") > "3"``, ``value("k") = "v"``."""
    m = _CMP.match(line)
    if m is None or m.group(1) not in _TARGETS:
        raise click.BadParameter(f"malformed comparison: {line!r}")
    target, key, op, operand = m.groups()
    cmp = _TARGETS[target](key.encode())
    arg: int | bytes
    if target in ("val", "value"):
        arg = operand.encode()
    else:
        arg = int(operand, 16) if target == "lease" else int(operand)
    if op in ("=", "=="):
        return cmp == arg
    if op == "!=":
        return cmp != arg
    return cmp > arg if op == ">" else cmp < arg


def parse_op(line: str) -> Any:
    """etcdctl's request syntax: ``put k v``, ``get k [end] [--prefix]``, ``del k [--prefix]``."""
    args = shlex.split(line)
    if not args:
        raise click.BadParameter("empty operation")
    verb, rest = args[0], args[1:]
    flags = {a for a in rest if a.startswith("--")}
    pos = [a for a in rest if not a.startswith("--")]
    if verb == "put" and len(pos) == 2:
        return put(pos[0], pos[1], prev_kv="--prev-kv" in flags)
    if verb == "get" and 1 <= len(pos) <= 2:
        return get(pos[0], pos[1] if len(pos) > 1 else None, prefix="--prefix" in flags)
    if verb in ("del", "delete") and 1 <= len(pos) <= 2:
        return delete(pos[0], pos[1] if len(pos) > 1 else None, prefix="--prefix" in flags)
    raise click.BadParameter(f"malformed operation: {line!r}")


def _read_block(interactive: bool, prompt: str) -> list[str]:
    if interactive:
        click.echo(prompt, err=True)
    lines = []
    for line in sys.stdin:
        if not line.strip():
            break
        lines.append(line.rstrip("\n"))
    return lines


@click.command("txn")
@click.option("-i", "--interactive", is_flag=True, help="Prompt for each part.")
@click.option("--compare", "compares", multiple=True, help='e.g. \'mod("k") > "0"\'')
@click.option("--success", "successes", multiple=True, help="e.g. 'put k v'")
@click.option("--failure", "failures", multiple=True, help="e.g. 'get k'")
@_common
def txn_command(
    interactive: bool,
    compares: tuple[str, ...],
    successes: tuple[str, ...],
    failures: tuple[str, ...],
    **kw: Any,
) -> None:
    """A transaction: compares, then success ops, then failure ops.

    Without flags, read like etcdctl from stdin: compare lines, a blank line, success
    requests, a blank line, failure requests.
    """
    out = kw.pop("write_out")
    if not (compares or successes or failures):
        compares = tuple(_read_block(interactive, "compares:"))
        successes = tuple(_read_block(interactive, "success requests (get, put, del):"))
        failures = tuple(_read_block(interactive, "failure requests (get, put, del):"))
    t = (
        Txn()
        .when(*(parse_compare(c) for c in compares))
        .then(*(parse_op(s) for s in successes))
        .otherwise(*(parse_op(f) for f in failures))
    )
    with _client(kw) as c:
        try:
            r = c.txn(t)
        except ClientError as e:
            _fail(e)
    if out == "json":
        click.echo(json.dumps(txn_json(r)))
    else:
        print_txn_simple(r)


# -- watch ----------------------------------------------------------------------------------------


@click.command("watch")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True)
@click.option("--rev", type=int, default=0)
@click.option("--prev-kv", is_flag=True)
@click.option("--progress-notify", is_flag=True)
@_common
def watch_command(key: str, range_end: str | None, **kw: Any) -> None:
    """Watch a key or range; resumes on another member without losing events."""
    out = kw.pop("write_out")
    with _client(kw) as c:
        w = c.watch(
            key,
            range_end,
            prefix=kw["prefix"],
            start_revision=kw["rev"],
            prev_kv=kw["prev_kv"],
            progress_notify=kw["progress_notify"],
        )
        try:
            for resp in w:
                if out == "json":
                    click.echo(json.dumps(watch_response_json(resp)), nl=True)
                elif resp.is_progress_notify:
                    continue
                else:
                    for e in resp.events:
                        print_event_simple(e, kw["prev_kv"])
                sys.stdout.flush()
        except WatchCompacted as e:
            click.echo(f"watch was canceled ({e})", err=True)
            sys.exit(1)
        except ClientError as e:
            _fail(e)
        except KeyboardInterrupt:
            pass


# -- compact / member list / endpoint status -------------------------------------------------------


@click.command("compact")
@click.argument("revision", type=int)
@click.option("--physical", is_flag=True)
@_common
def compact_command(revision: int, physical: bool, **kw: Any) -> None:
    """Compact the history up to REVISION."""
    out = kw.pop("write_out")
    with _client(kw) as c:
        try:
            r = c.compact(revision, physical=physical)
        except ClientError as e:
            _fail(e)
    if out == "json":
        click.echo(json.dumps({"header": header_json(r.header)}))
    else:
        click.echo(f"compacted revision {revision}")


@click.group("member")
def member_group() -> None:
    """Cluster membership."""


@member_group.command("list")
@click.option("--hex", "as_hex", is_flag=True, help="Print ids in hex (json output).")
@_common
def member_list_command(as_hex: bool, **kw: Any) -> None:
    """List the cluster's members."""
    out = kw.pop("write_out")
    with _client(kw) as c:
        try:
            r = c.member_list()
        except ClientError as e:
            _fail(e)
    print_members(r, out, as_hex=as_hex)


@click.group("endpoint")
def endpoint_group() -> None:
    """Per-endpoint information."""


@endpoint_group.command("status")
@_common
def endpoint_status_command(**kw: Any) -> None:
    """Maintenance.Status of every endpoint."""
    out = kw.pop("write_out")
    failed = False
    statuses: list[StatusResult] = []
    with _client(kw) as c:
        for ep in c.endpoints:
            try:
                statuses.append(c.status(ep))
            except ClientError as e:
                click.echo(f"Failed to get the status of endpoint {ep} ({e})", err=True)
                failed = True
    print_endpoint_status(statuses, out)
    if failed:
        sys.exit(1)


COMMANDS: list[click.Command] = [
    get_command,
    put_command,
    del_command,
    txn_command,
    watch_command,
    compact_command,
    member_group,
    endpoint_group,
]
