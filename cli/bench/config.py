"""What a ``raftkv bench`` run is asked to do: its options, their validation, its keys."""

from __future__ import annotations

from dataclasses import dataclass

import click

__all__ = ["EXIT_UNIMPLEMENTED", "WORKLOADS", "BenchConfig", "make_key", "prefix_end", "share"]

WORKLOADS = ("put", "range", "txn", "watch", "lease")
EXIT_UNIMPLEMENTED = 3  # the server lacks the workload's service: not a crash, and not a pass


@dataclass(frozen=True)
class BenchConfig:
    """One run: the options of ``raftkv bench <workload>``. Sent to the workers as JSON."""

    workload: str
    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    clients: int = 1
    conns: int = 1
    concurrency: int = 1
    key_size: int = 8
    val_size: int = 256
    key_space: int = 10_000
    sequential_keys: bool = False
    total: int = 0
    duration: float = 0.0
    rate: float = 0.0
    processes: int = 1
    consistency: str = "l"
    watchers: int = 100
    prefix: str = ""
    prefill: bool = False
    timeout: float = 10.0
    drain_timeout: float = 5.0
    progress: bool = True
    label: str = ""

    def check(self) -> None:
        if self.workload not in WORKLOADS:
            raise click.UsageError(f"unknown workload {self.workload!r}")
        if not self.endpoints:
            raise click.UsageError("--endpoints is empty")
        for name in ("clients", "conns", "concurrency", "key_space", "processes"):
            if getattr(self, name) < 1:
                raise click.UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.total <= 0 and self.duration <= 0:
            raise click.UsageError("give --total or --duration")
        if self.consistency not in ("l", "s"):
            raise click.UsageError("--consistency must be l or s")
        if self.workload == "watch" and self.watchers < 1:
            raise click.UsageError("--watchers must be at least 1")


def share(total: int, parts: int, i: int) -> int:
    """Part ``i`` of ``total`` split as evenly as possible into ``parts`` (for worker ``i``)."""
    return total // parts + (1 if i < total % parts else 0)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range or watch cover every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def make_key(cfg: BenchConfig, i: int) -> bytes:
    """Key number ``i`` of the key space: the prefix, then ``i`` zero-padded to ``--key-size``."""
    digits = max(len(str(cfg.key_space - 1)), cfg.key_size - len(cfg.prefix))
    return (cfg.prefix + str(i).zfill(digits)).encode()
