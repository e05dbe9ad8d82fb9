"""Workloads by name; add a lock workload here once leases and locks exist."""

from __future__ import annotations

from jepsen.watch import WatchWorkload
from jepsen.workloads import Append, Register, SetWorkload, Workload

WORKLOADS: dict[str, type[Workload]] = {
    "register": Register,
    "append": Append,
    "set": SetWorkload,
    "watch": WatchWorkload,
}
