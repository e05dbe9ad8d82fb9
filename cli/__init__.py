"""raftkv_cli: the raftkv command line.

gRPC reads its experiment flags once, when ``grpc`` is first imported, so the choice below is
made here, before any module of the command imports it. Every raftkv process (members, the
``cluster`` supervisor, ``bench``, the etcdctl-like commands) runs gRPC's classic epoll poller
instead of its EventEngine thread pool: with EventEngine every completion hops from an I/O
thread to the grpc.aio poller thread to the event loop. On a 2-core machine running a 3-member
cluster under ``etcdctl check perf --load=m`` the classic poller gave 25-35% fewer context
switches and about 10% more throughput (docs/performance.md). A ``GRPC_EXPERIMENTS`` already in
the environment wins, so ``GRPC_EXPERIMENTS=`` (empty) restores gRPC's defaults.
"""

import os as _os

CLASSIC_POLLER_EXPERIMENTS = ",".join(
    "-" + name
    for name in (
        "event_engine_client",
        "event_engine_listener",
        "event_engine_callback_cq",
        "event_engine_for_all_other_endpoints",
    )
)
_os.environ.setdefault("GRPC_EXPERIMENTS", CLASSIC_POLLER_EXPERIMENTS)
