"""Logging set-up for the command line: the only place that configures handlers."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time


class _JsonFormatter(logging.Formatter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "member": self._name,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


# etcd's zap levels that Python names differently.
_LEVEL_ALIASES = {"warn": "warning", "dpanic": "critical", "panic": "critical", "fatal": "critical"}


def _handlers(outputs: str) -> list[logging.Handler]:
    """etcd's --log-outputs: ``default`` and ``stderr``, ``stdout``, or files (appended to)."""
    handlers: list[logging.Handler] = []
    for out in (o.strip() for o in outputs.split(",") if o.strip()):
        if out in ("default", "stderr", "/dev/stderr"):
            handlers.append(logging.StreamHandler(sys.stderr))
        elif out in ("stdout", "/dev/stdout"):
            handlers.append(logging.StreamHandler(sys.stdout))
        else:
            try:
                handlers.append(logging.FileHandler(out, encoding="utf-8"))
            except OSError as exc:
                raise SystemExit(f"raftkv: --log-outputs: cannot open {out}: {exc}") from None
    if not handlers:
        raise SystemExit("raftkv: --log-outputs names no output")
    return handlers


class _QuietShutdown(logging.Filter):
    """gRPC logs a servicer's cancellation at server stop as an unhandled error, traceback and
    all; that is how open streams end when a member stops, not a fault worth alarming about."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.name.startswith("grpc") and isinstance(error, asyncio.CancelledError))


def configure_logging(level: str, fmt: str, *, name: str, outputs: str = "default") -> None:
    numeric = logging.getLevelName(_LEVEL_ALIASES.get(level.lower(), level).upper())
    if not isinstance(numeric, int):
        raise SystemExit(f"raftkv: unknown --log-level {level!r}")
    if fmt == "json":
        formatter: logging.Formatter = _JsonFormatter(name)
    elif fmt == "text":
        formatter = logging.Formatter(f"%(asctime)s %(levelname)-7s {name} %(name)s: %(message)s")
    else:
        raise SystemExit(f"raftkv: unknown --log-format {fmt!r} (use text or json)")
    handlers = _handlers(outputs)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_QuietShutdown())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.WARNING)
    logging.getLogger("raftkv").setLevel(numeric)
