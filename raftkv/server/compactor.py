"""Automatic compaction of the key-value history, as etcd 3.4's ``--auto-compaction-*`` does.

The compactor runs in every member and acts only while its member leads (etcd pauses it on
followers). It compacts with an ordinary Compaction proposal, the path ``etcdctl compact``
takes, so the compaction is replicated and applied by every member at the same log index.

Periodic mode (``--auto-compaction-retention`` is a duration; a bare number means hours) keeps
the history of the last retention period. As etcd 3.4's ``Periodic``: it samples the current
revision every tenth of the compaction interval (the retention, at most one hour), waits one
whole retention before the first compaction, then compacts every interval to the oldest
revision sampled within the retention window (so ``1h`` compacts hourly to the revision of an
hour ago; ``30s`` compacts every 30 s). A failed compaction is retried at the next sample.

Revision mode (the retention is a number of revisions) compacts to ``current - retention``
every five minutes, as etcd 3.4's ``Revision`` does, skipping a revision already compacted to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raftkv.errors import ConfigError, RaftKVError
from raftkv.kv.errors import CompactedRevisionError
from raftkv.kv.types import CompactionRequest
from raftkv.server.api import NodeApi

__all__ = ["AutoCompaction", "Compactor", "parse_auto_compaction"]

logger = logging.getLogger(__name__)

PERIODIC = "periodic"
REVISION = "revision"
REVISION_CHECK_INTERVAL_S = 300.0
"""etcd 3.4's revision compactor looks every five minutes."""
_HOUR_S = 3600.0
_RETRY_DIVISOR = 10

_GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNITS_LONGEST_FIRST = sorted(_GO_UNITS_S, key=len, reverse=True)  # "ms" before "m"


@dataclass(frozen=True, slots=True)
class AutoCompaction:
    mode: str
    retention: float
    """Periodic: seconds of history to keep. Revision: revisions to keep. 0: off."""

    @property
    def enabled(self) -> bool:
        return self.retention > 0


def _go_duration_s(text: str) -> float:
    """Go's ``time.ParseDuration`` for the forms etcd users write: ``1h30m``, ``90s``, ``1.5h``."""
    rest, total = text, 0.0
    if not rest:
        raise ValueError(text)
    while rest:
        number = ""
        while rest and (rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        unit = next((u for u in _UNITS_LONGEST_FIRST if rest.startswith(u)), None)
        if not number or unit is None:
            raise ValueError(text)
        total += float(number) * _GO_UNITS_S[unit]
        rest = rest[len(unit) :]
    return total


def parse_auto_compaction(mode: str, retention: str) -> AutoCompaction:
    """etcd's ``parseCompactionRetention``: a bare integer is hours (periodic) or revisions
    (revision); otherwise a Go duration, which only periodic mode can use."""
    if mode not in (PERIODIC, REVISION):
        raise ConfigError(f"--auto-compaction-mode: {mode!r} is neither 'periodic' nor 'revision'")
    text = retention.strip()
    if text.isdigit():
        count = int(text)
        return AutoCompaction(mode, count * _HOUR_S if mode == PERIODIC else float(count))
    if mode == REVISION:
        raise ConfigError(
            f"--auto-compaction-retention: {retention!r} is not a number of revisions "
            "(revision mode keeps the last N revisions)"
        )
    try:
        seconds = _go_duration_s(text)
    except ValueError:
        raise ConfigError(
            f"--auto-compaction-retention: {retention!r} is neither a number of hours nor a "
            "duration such as 30m or 1h"
        ) from None
    return AutoCompaction(mode, seconds)


class Compactor:
    """One member's automatic compactor; ``run()`` until cancelled."""

    def __init__(
        self,
        node: NodeApi,
        policy: AutoCompaction,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        revision_check_interval_s: float = REVISION_CHECK_INTERVAL_S,
    ) -> None:
        self._node = node
        self._policy = policy
        self._timeout_s = timeout_s
        self._clock = clock
        self._sleep = sleep
        self._revision_interval_s = revision_check_interval_s
        self.compactions = 0
        """Compactions this member proposed that succeeded (for tests)."""

    def _leading(self) -> bool:
        return self._node.status().leader == self._node.member_id

    async def run(self) -> None:
        if not self._policy.enabled:
            return
        if self._policy.mode == PERIODIC:
            await self._run_periodic()
        else:
            await self._run_revision()

    async def _run_periodic(self) -> None:
        period = self._policy.retention
        interval = min(period, _HOUR_S)
        retry = interval / _RETRY_DIVISOR
        keep = int(period / retry) + 1
        revs: list[int] = []
        last_success = self._clock()
        base = period  # the first compaction waits a whole retention
        last_rev = 0
        while True:
            revs = [*revs, self._node.store.current_revision()][-keep:]
            await self._sleep(retry)
            if not self._leading() or self._clock() - last_success < base:
                continue
            base = interval
            rev = revs[0]
            if rev == last_rev:
                continue
            if await self._compact(rev, f"compact-period {period:g}s"):
                last_rev, last_success = rev, self._clock()

    async def _run_revision(self) -> None:
        keep = int(self._policy.retention)
        last_rev = 0
        while True:
            await self._sleep(self._revision_interval_s)
            if not self._leading():
                continue
            rev = self._node.store.current_revision() - keep
            if rev <= 0 or rev == last_rev:
                continue
            if await self._compact(rev, f"revision-compaction-retention {keep}"):
                last_rev = rev

    async def _compact(self, rev: int, why: str) -> bool:
        """Propose a compaction to ``rev``; True if it is done (or was done already)."""
        if rev <= self._node.store.compacted_revision():
            return True
        started = self._clock()
        logger.info("starting auto compaction at revision %d (%s)", rev, why)
        try:
            await self._node.propose(CompactionRequest(rev), timeout_s=self._timeout_s)
        except CompactedRevisionError:
            return True
        except RaftKVError as exc:
            logger.warning("failed auto compaction at revision %d: %s; will retry", rev, exc)
            return False
        self.compactions += 1
        took = self._clock() - started
        logger.info("completed auto compaction at revision %d (%.3f s)", rev, took)
        return True
