"""Client operation histories for the linearizability checker.

A :class:`History` records what clients *observed*: when each operation was invoked, and whether it
completed ``ok`` (it took effect; a read returned ``output``), ``fail`` (it definitely did not take
effect, for example a cas whose compare failed) or ``info`` (the outcome is unknown: the op may take
effect at any moment after its invocation, or never). Each finished operation is folded into one
immutable :class:`Op`, which is what :mod:`raftkv.testing.linearizability` consumes.

Times are logical and supplied by the caller (for example a global step counter). Op ``A``
precedes op ``B`` in real time iff ``A.complete_time < B.invoke_time`` (strictly); ops whose
intervals touch at a single instant are concurrent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["History", "Op", "OpKind", "Status"]

OpKind = Literal["read", "write", "cas"]
Status = Literal["ok", "fail", "info"]

_KINDS: dict[str, OpKind] = {"read": "read", "write": "write", "cas": "cas"}
_STATUSES: dict[str, Status] = {"ok": "ok", "fail": "fail", "info": "info"}


@dataclass(frozen=True, slots=True)
class Op:
    """One completed client operation (invoke + completion folded together).

    - ``value``: write: the value written (``None`` deletes the key); cas: the NEW value;
      read: ``None``.
    - ``expected``: cas: the value compared against (``None`` = "key absent"); otherwise ``None``.
    - ``output``: a read with status ``ok``: the value read (``None`` = key absent); else ``None``.
    - ``status``: ``ok``: took effect (a cas: its compare succeeded); ``fail``: definitely did NOT
      take effect (including a cas whose compare failed); ``info``: unknown.
    - ``complete_time``: ``None`` for info ops, which are treated as completing at +infinity.
    """

    process: int
    kind: OpKind
    key: str
    value: int | None
    expected: int | None
    output: int | None
    status: Status
    invoke_time: int
    complete_time: int | None


@dataclass(slots=True)
class _Record:
    """A possibly still-open operation inside a :class:`History`."""

    process: int
    kind: OpKind
    key: str
    value: int | None
    expected: int | None
    invoke_time: int
    status: Status | None = None
    output: int | None = None
    complete_time: int | None = None

    def to_op(self) -> Op:
        assert self.status is not None
        return Op(
            process=self.process,
            kind=self.kind,
            key=self.key,
            value=self.value,
            expected=self.expected,
            output=self.output,
            status=self.status,
            invoke_time=self.invoke_time,
            complete_time=self.complete_time,
        )


class History:
    """A mutable recorder of client operations.

    A process has at most one operation outstanding; ``invoke`` raises :class:`ValueError`
    otherwise. Once an op is completed (``ok``, ``fail`` or ``info``) the process may invoke
    another one. Call :meth:`finish` before checking: :meth:`ops` returns only completed ops.
    """

    __slots__ = ("_open", "_records")

    def __init__(self) -> None:
        self._records: list[_Record] = []
        self._open: dict[int, int] = {}  # process -> handle of its outstanding op

    def __len__(self) -> int:
        return len(self._records)

    def invoke(
        self,
        process: int,
        kind: OpKind,
        key: str,
        value: int | None = None,
        expected: int | None = None,
        *,
        time: int,
    ) -> int:
        """Record the invocation of an op; returns a handle for ``ok``/``fail``/``info``."""
        if kind not in _KINDS:
            raise ValueError(f"unknown op kind {kind!r}")
        if kind == "read" and (value is not None or expected is not None):
            raise ValueError("a read takes no value or expected")
        if kind == "write" and expected is not None:
            raise ValueError("a write takes no expected value (use kind='cas')")
        if process in self._open:
            raise ValueError(f"process {process} already has op {self._open[process]} outstanding")
        handle = len(self._records)
        self._records.append(_Record(process, kind, key, value, expected, time))
        self._open[process] = handle
        return handle

    def _close(self, handle: int, time: int | None, output: int | None = None) -> _Record:
        if not 0 <= handle < len(self._records):
            raise ValueError(f"unknown op handle {handle}")
        rec = self._records[handle]
        if rec.kind != "read" and output is not None:
            raise ValueError(f"only a read has an output (op {handle} is a {rec.kind})")
        if rec.status is not None:
            raise ValueError(f"op {handle} already completed with status {rec.status!r}")
        if time is not None and time < rec.invoke_time:
            raise ValueError(
                f"op {handle} completes at {time}, before its invocation at {rec.invoke_time}"
            )
        del self._open[rec.process]
        return rec

    def ok(self, handle: int, time: int, output: int | None = None) -> None:
        """The op took effect. For a read, ``output`` is the value read (``None``: absent)."""
        rec = self._close(handle, time, output)
        rec.status = "ok"
        rec.output = output
        rec.complete_time = time

    def fail(self, handle: int, time: int) -> None:
        """The op definitely did not take effect."""
        rec = self._close(handle, time)
        rec.status = "fail"
        rec.complete_time = time

    def info(self, handle: int, time: int | None = None) -> None:
        """The outcome is unknown. The op is treated as completing at +infinity whatever ``time``
        is (it may still take effect later, e.g. from a message in flight); ``time`` is only
        checked against the invocation time."""
        rec = self._close(handle, time)
        rec.status = "info"

    def finish(self, time: int) -> None:
        """End of the run: every op still open becomes ``info``."""
        for handle in sorted(self._open.values()):
            self.info(handle, None)
        del time  # accepted for symmetry with the other completions

    def ops(self) -> list[Op]:
        """Completed ops, in invoke order (by ``invoke_time``, ties by invocation order)."""
        done = [rec for rec in self._records if rec.status is not None]
        done.sort(key=lambda rec: rec.invoke_time)  # stable: ties keep recording order
        return [rec.to_op() for rec in done]

    def to_jsonl(self) -> str:
        """One JSON object per op (open ops have ``"status": null``), in recording order."""
        lines = [
            json.dumps(
                {
                    "process": rec.process,
                    "kind": rec.kind,
                    "key": rec.key,
                    "value": rec.value,
                    "expected": rec.expected,
                    "output": rec.output,
                    "status": rec.status,
                    "invoke_time": rec.invoke_time,
                    "complete_time": rec.complete_time,
                },
                separators=(",", ":"),
            )
            for rec in self._records
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_jsonl(cls, text: str) -> History:
        """Inverse of :meth:`to_jsonl`. Blank lines are ignored."""
        history = cls()
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = _record_from_json(json.loads(line))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"line {lineno}: {exc}") from exc
            handle = len(history._records)
            if rec.status is None:
                if rec.process in history._open:
                    raise ValueError(
                        f"line {lineno}: process {rec.process} has two ops outstanding"
                    )
                history._open[rec.process] = handle
            history._records.append(rec)
        return history


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int(obj: dict[str, Any], name: str) -> int:
    x = obj.get(name)
    if not _is_int(x):
        raise ValueError(f"field {name!r} must be an integer, got {x!r}")
    assert isinstance(x, int)
    return x


def _opt_int(obj: dict[str, Any], name: str) -> int | None:
    x = obj.get(name)
    if x is None:
        return None
    return _int(obj, name)


def _record_from_json(obj: object) -> _Record:
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    kind = _KINDS.get(str(obj.get("kind")))
    if kind is None:
        raise ValueError(f"bad kind {obj.get('kind')!r}")
    key = obj.get("key")
    if not isinstance(key, str):
        raise ValueError(f"bad key {key!r}")
    raw_status = obj.get("status")
    status: Status | None = None
    if raw_status is not None:
        status = _STATUSES.get(str(raw_status))
        if status is None:
            raise ValueError(f"bad status {raw_status!r}")
    return _Record(
        process=_int(obj, "process"),
        kind=kind,
        key=key,
        value=_opt_int(obj, "value"),
        expected=_opt_int(obj, "expected"),
        invoke_time=_int(obj, "invoke_time"),
        status=status,
        output=_opt_int(obj, "output"),
        complete_time=_opt_int(obj, "complete_time"),
    )
