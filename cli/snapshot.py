"""``raftkv snapshot save|status|restore``: backups, as ``etcdctl snapshot`` takes them.

The file format is what Maintenance.Snapshot streams, byte for byte, so a file written by the
real ``etcdctl snapshot save`` against raftkv and one written by ``raftkv snapshot save`` are
the same: the state-machine image (raftkv.kv.state_machine's dump, self-delimiting and CRC-32
sealed), zero bytes up to a multiple of 512, then the sha256 of everything before it (etcd
appends that digest and etcdctl checks the size is 32 past a multiple of 512).

``restore`` seeds a new member's data directory, as ``etcdctl snapshot restore`` does: the key
space is the image (its revisions kept), its applied index is reset, and the Raft log starts as
a brand-new cluster's does (a snapshot at index 1 that names the new membership), so every
member restored from the same file with the same ``--initial-cluster`` starts from the same
state. The members are then started with ``--initial-cluster-state new``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import click
import grpc
from raftkv_storage.backend import LmdbBackend
from raftkv_storage.log import LmdbRaftLog

from raftkv.errors import ConfigError, CorruptionError
from raftkv.kv.image import ImageSummary, summarize
from raftkv.kv.state_machine import DEFAULT_QUOTA_BYTES, image_records, load_chunks
from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server.config import ServerConfig, parse_initial_cluster, parse_urls
from raftkv.server.driver import bootstrap_log
from raftkv.server.node import member_dir

__all__ = ["snapshot_group"]

DIGEST_BYTES = 32
PAGE_BYTES = 512
_READ_BYTES = 1 << 20
_PROGRESS_EVERY_S = 1.0
RESTORED_APPLIED_INDEX = 1
"""The applied index of a restored key space: the index of the new log's first snapshot."""


class SnapshotError(click.ClickException):
    """A clear failure: ``Error: ...`` on stderr, exit code 1 (as etcdctl exits)."""


# -- the file -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupFile:
    path: Path
    size: int
    has_digest: bool

    @property
    def image_bytes(self) -> int:
        return self.size - DIGEST_BYTES if self.has_digest else self.size


def open_backup(path: Path, *, skip_hash_check: bool = False) -> BackupFile:
    """Check a backup's sha256 (as etcdctl's restore does, unless told to skip it)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror}") from exc
    has_digest = size >= DIGEST_BYTES and (size - DIGEST_BYTES) % PAGE_BYTES == 0
    backup = BackupFile(path, size, has_digest)
    if skip_hash_check:
        return backup
    if not has_digest:
        raise SnapshotError(
            f"{path}: snapshot missing hash but --skip-hash-check=false "
            f"(its size, {size} bytes, is not 32 past a multiple of 512)"
        )
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in _read(f, backup.image_bytes):
            digest.update(chunk)
        stored = f.read(DIGEST_BYTES)
    if digest.digest() != stored:
        raise SnapshotError(f"{path}: expected sha256 {stored.hex()}, got {digest.hexdigest()}")
    return backup


def _read(f: BinaryIO, limit: int) -> Iterator[bytes]:
    left = limit
    while left > 0:
        chunk = f.read(min(_READ_BYTES, left))
        if not chunk:
            raise SnapshotError(f"{f.name}: file ended early")
        left -= len(chunk)
        yield chunk


def image_chunks(backup: BackupFile) -> Iterator[bytes]:
    with backup.path.open("rb") as f:
        yield from _read(f, backup.image_bytes)


def summary_of(backup: BackupFile) -> ImageSummary:
    try:
        return summarize(image_records(image_chunks(backup)))
    except CorruptionError as exc:
        raise SnapshotError(f"{backup.path}: not a raftkv snapshot, or damaged: {exc}") from exc


# -- save ---------------------------------------------------------------------------------------


class _Progress:
    """Progress on stderr, for saves that take long enough for someone to wonder."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._last = self.start
        self.shown = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        self.shown = True
        pct = 100 * done // total if total else 100
        click.echo(
            f"raftkv: {human_bytes(done)} of {human_bytes(total)} ({pct}%), "
            f"{now - self.start:.0f} s",
            err=True,
        )


def save_snapshot(endpoint: str, path: Path, dial_timeout_s: float) -> int:
    """Stream one member's snapshot into ``path`` (via ``path.part``); returns its size."""
    part = path.with_name(path.name + ".part")
    options = [("grpc.max_receive_message_length", 64 << 20)]
    progress = _Progress()
    with grpc.insecure_channel(endpoint, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=dial_timeout_s)
        except grpc.FutureTimeoutError:
            raise SnapshotError(f"cannot reach {endpoint} within {dial_timeout_s:g} s") from None
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        done = total = 0
        try:
            with part.open("wb") as f:
                for resp in stub.Snapshot(rpc_pb2.SnapshotRequest()):
                    f.write(resp.blob)
                    done += len(resp.blob)
                    total = total or done + resp.remaining_bytes
                    progress.update(done, total)
                f.flush()
                os.fsync(f.fileno())
        except grpc.RpcError as exc:
            part.unlink(missing_ok=True)
            raise SnapshotError(f"snapshot from {endpoint} failed: {exc.details()}") from exc
    try:
        open_backup(part)
    except SnapshotError:
        part.unlink(missing_ok=True)
        raise
    part.rename(path)
    if progress.shown:
        took = time.monotonic() - progress.start
        click.echo(f"raftkv: saved {human_bytes(done)} in {took:.1f} s", err=True)
    return done


# -- restore ------------------------------------------------------------------------------------


def restore_snapshot(backup: BackupFile, config: ServerConfig) -> ImageSummary:
    """Seed ``config.data_dir`` from ``backup`` for a member of a new cluster."""
    target = config.data_dir
    if target.exists():
        raise SnapshotError(f"data-dir {str(target)!r} exists")
    summary = summary_of(backup)  # checks the image whole before anything is written
    staging = target.with_name(target.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    staged = dataclasses.replace(config, data_dir=staging)
    directory = member_dir(staged)
    # Room for the image however large it is: the quota is the member's own flag.
    map_size = max(DEFAULT_QUOTA_BYTES, 2 * backup.size) + (64 << 20)
    try:
        with LmdbBackend(directory / "kv", map_size_bytes=map_size) as backend:
            load_chunks(backend, image_chunks(backup), padded=True, applied=RESTORED_APPLIED_INDEX)
        with LmdbRaftLog(directory / "raft") as raft_log:
            bootstrap_log(raft_log, list(config.member_ids().values()))
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


# -- output ---------------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    """go-humanize's Bytes, as etcdctl prints sizes: 20 kB, 1.2 MB."""
    if n < 10:
        return f"{n} B"
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    exp = 0
    value = float(n)
    while value >= 1000 and exp < len(units) - 1:
        value /= 1000
        exp += 1
    value = int(value * 10 + 0.5) / 10
    return f"{value:.0f} {units[exp]}" if value >= 10 else f"{value:.1f} {units[exp]}"


def format_status(summary: ImageSummary, size: int, write_out: str) -> str:
    fields = (f"{summary.hash:x}", summary.revision, summary.total_keys, human_bytes(size))
    if write_out == "json":
        return (
            f'{{"hash":{summary.hash},"revision":{summary.revision},'
            f'"totalKey":{summary.total_keys},"totalSize":{size}}}'
        )
    if write_out == "fields":
        return "\n".join(
            [
                f'"Hash" : {summary.hash}',
                f'"Revision" : {summary.revision}',
                f'"Keys" : {summary.total_keys}',
                f'"Size" : {size}',
            ]
        )
    if write_out == "table":
        headers = ("HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE")
        cells = [str(f) for f in fields]
        widths = [max(len(h), len(c)) for h, c in zip(headers, cells, strict=True)]
        sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        head = "|" + "|".join(f" {h:^{w}} " for h, w in zip(headers, widths, strict=True)) + "|"
        row = "|" + "|".join(f" {c:>{w}} " for c, w in zip(cells, widths, strict=True))
        return "\n".join([sep, head, sep, row + "|", sep])
    return ", ".join(str(f) for f in fields)


# -- click commands -------------------------------------------------------------------------------


@click.group("snapshot")
def snapshot_group() -> None:
    """Save, inspect and restore backups (as etcdctl snapshot save|status|restore)."""


@snapshot_group.command("save")
@click.argument("filename", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--endpoints",
    default="127.0.0.1:2379",
    show_default=True,
    envvar="ETCDCTL_ENDPOINTS",
    help="The ONE member to take the snapshot from (any member: followers serve it too).",
)
@click.option("--dial-timeout", type=float, default=2.0, show_default=True, help="Seconds.")
def save_command(filename: Path, endpoints: str, dial_timeout: float) -> None:
    """Stream a member's snapshot into FILENAME, checked with its sha256."""
    names = [e.strip().split("://", 1)[-1] for e in endpoints.split(",") if e.strip()]
    if len(names) != 1:
        raise click.UsageError(
            f"snapshot must be requested to one selected node, not multiple {names}"
        )
    save_snapshot(names[0], filename, dial_timeout)
    click.echo(f"Snapshot saved at {filename}")


@snapshot_group.command("status")
@click.argument("filename", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-w",
    "--write-out",
    type=click.Choice(["simple", "json", "table", "fields"]),
    default="simple",
    show_default=True,
)
def status_command(filename: Path, write_out: str) -> None:
    """Print a backup's hash, revision, total keys and size (its sha256 is checked first)."""
    backup = open_backup(filename)
    click.echo(format_status(summary_of(backup), backup.size, write_out))


@snapshot_group.command("restore")
@click.argument("filename", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", default=None, help="Data directory to create [default: NAME.etcd].")
@click.option("--wal-dir", default=None, help="Refused: raftkv keeps its log in --data-dir.")
@click.option("--name", default="default", show_default=True, help="This member's name.")
@click.option("--initial-cluster", default="default=http://localhost:2380", show_default=True)
@click.option("--initial-cluster-token", default="etcd-cluster", show_default=True)
@click.option("--initial-advertise-peer-urls", default="http://localhost:2380", show_default=True)
@click.option("--skip-hash-check", is_flag=True, help="Do not check the file's sha256.")
def restore_command(
    filename: Path,
    data_dir: str | None,
    wal_dir: str | None,
    name: str,
    initial_cluster: str,
    initial_cluster_token: str,
    initial_advertise_peer_urls: str,
    skip_hash_check: bool,
) -> None:
    """Seed a new member's data directory from FILENAME, for a new cluster."""
    if wal_dir is not None:
        raise click.UsageError(
            "--wal-dir is not supported: raftkv keeps its Raft log in --data-dir"
        )
    try:
        config = ServerConfig(
            name=name,
            data_dir=Path(data_dir or f"{name}.etcd"),
            initial_cluster=parse_initial_cluster(initial_cluster),
            initial_cluster_token=initial_cluster_token,
            initial_advertise_peer_urls=parse_urls(
                initial_advertise_peer_urls, "initial-advertise-peer-urls"
            ),
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    backup = open_backup(filename, skip_hash_check=skip_hash_check)
    started = time.monotonic()
    summary = restore_snapshot(backup, config)
    click.echo(
        f"raftkv: restored {filename} (revision {summary.revision}, {summary.total_keys} "
        f"records) into {config.data_dir} as member {name} ({config.member_id:x}) of a new "
        f"cluster ({config.cluster_id:x}) in {time.monotonic() - started:.1f} s"
    )
