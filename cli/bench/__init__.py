"""``raftkv bench``: a load generator for any etcd v3 API endpoints (raftkv or real etcd).

In the spirit of etcd's ``tools/benchmark``, with the same option names where it has them:

* ``put``: Put of a ``--val-size`` value on a key from a ``--key-space``;
* ``range``: Range of one key, linearizable (``--consistency l``) or serializable (``s``);
* ``txn``: compare-and-set: Range a key for its mod_revision, then
  ``Txn(compare: MOD(key) == rev, success: put)``; one operation is both calls;
* ``watch``: ``--watchers`` watch streams on one prefix while writers put unique keys under it at
  ``--rate``; the write carries its send time, so each delivered event gives a write-to-delivery
  latency; the report counts delivered against expected events (writes x watchers);
* ``lease``: LeaseKeepAlive round trips, one stream per in-flight request.

A server without the service a workload needs (UNIMPLEMENTED) is reported as such, with exit
code 3, not as a crash.

Load: ``--conns`` TCP connections (gRPC channels with a local subchannel pool, so they really
are separate), spread round-robin over ``--endpoints``; ``--clients`` stubs spread over the
connections; ``--concurrency`` requests in flight, each a coroutine looping over the clients.
``--processes`` splits all of these over worker processes (spawned before any gRPC is used), so
one Python process is not the bottleneck; their histograms are merged. Stop after ``--total``
operations or ``--duration`` seconds; ``--rate`` caps operations per second (0: unlimited).

The report: throughput, a latency histogram, p50/p90/p99/max, errors by gRPC status code, and
the CPU the load generator itself used (its processes' ``getrusage`` over the measured window,
and the whole process tree's), so a run where the generator was the bottleneck is visible.

The package: ``config`` (options, validation, keys), ``histogram``, ``worker`` (what every
workload runs on inside a worker process), ``workloads``, ``runner`` (the worker processes and
the merge of their reports), ``report`` (progress and the report) and ``commands`` (click).
``bench/compare.py``, outside the package, runs these workloads against etcd and raftkv side by
side.
"""

from __future__ import annotations

from raftkv_cli.bench.commands import bench_group
from raftkv_cli.bench.config import EXIT_UNIMPLEMENTED, WORKLOADS, BenchConfig, make_key
from raftkv_cli.bench.histogram import Histogram
from raftkv_cli.bench.report import format_report
from raftkv_cli.bench.runner import run_bench

__all__ = [
    "EXIT_UNIMPLEMENTED",
    "WORKLOADS",
    "BenchConfig",
    "Histogram",
    "bench_group",
    "format_report",
    "make_key",
    "run_bench",
]
