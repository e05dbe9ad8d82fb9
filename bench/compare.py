"""etcd and raftkv side by side: ``python bench/compare.py [--duration 10] [--out bench/results]``.

The same as ``raftkv bench compare``: starts a three-member etcd (Debian's etcd-server) and a
three-member raftkv on free loopback ports below 32768, runs the same workloads against each
with ``raftkv bench``'s load generator (put at 1 and 256 in flight, range linearizable and
serializable at 256, txn compare-and-set at 64, watch fan-out, lease keep-alive), then
``etcdctl check perf --load=s`` and ``m`` against each; prints the raftkv/etcd ratios, writes
JSON and markdown to ``--out``, and stops every member it started, also on Ctrl-C or failure.
The implementation lives in ``raftkv_cli.bench`` so the installed ``raftkv`` has it too.
"""

from __future__ import annotations

from raftkv_cli.bench import compare_main

if __name__ == "__main__":
    compare_main()
