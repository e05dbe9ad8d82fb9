"""The members' names and client URLs, as they publish them through the log.

As etcd's member attributes: each member proposes its own record (name, client URLs) once it
starts, and every member records the ones that apply. The records are kept in ``members.json``
beside the data so that a restarted member knows its peers' client URLs before the log says so
again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from raftkv.driver import ATTRIBUTES_MAGIC
from raftkv.server.api import Member

__all__ = ["MemberAttributes"]

logger = logging.getLogger(__name__)


class MemberAttributes:
    def __init__(self, members: Sequence[Member], path: Path | None) -> None:
        self._members = {m.id: m for m in members}
        self._path = path
        self._load()

    def members(self) -> tuple[Member, ...]:
        return tuple(self._members.values())

    def publication(self, member_id: int) -> bytes | None:
        """The log entry in which ``member_id`` publishes its attributes (None: unknown)."""
        me = self._members.get(member_id)
        if me is None:
            return None
        record = {"id": me.id, "name": me.name, "client_urls": list(me.client_urls)}
        return ATTRIBUTES_MAGIC + json.dumps(record, sort_keys=True).encode()

    def record(self, data: bytes) -> None:
        """A member's published record applied (the entry's payload after the prefix)."""
        try:
            record = json.loads(data)
            member_id, name = int(record["id"]), str(record["name"])
            client_urls = tuple(str(u) for u in record["client_urls"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring malformed member attributes %r", data[:200])
            return
        current = self._members.get(member_id)
        if current is None or (current.name, current.client_urls) == (name, client_urls):
            return
        self._members[member_id] = dataclasses.replace(current, name=name, client_urls=client_urls)
        self._save()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            records = json.loads(self._path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s: %s", self._path, exc)
            return
        for record in records:
            self.record(json.dumps(record).encode())

    def _save(self) -> None:
        if self._path is None:
            return
        records = [
            {"id": m.id, "name": m.name, "client_urls": list(m.client_urls)}
            for m in self._members.values()
        ]
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, sort_keys=True))
        tmp.replace(self._path)
