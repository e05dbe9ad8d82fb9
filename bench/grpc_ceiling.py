"""The Python gRPC ceiling: a no-op grpc.aio KV server under ``raftkv bench``'s load generator.

    python bench/grpc_ceiling.py [--duration 5] [--concurrency 1,64,256] [--processes 1,2]

Starts, in its own process, a grpc.aio server whose KV.Put and KV.Range answer an empty
response at once (no Raft, no storage, no protobuf work beyond gRPC's own), then runs the same
load generator as ``raftkv bench put`` against it at each concurrency and generator process
count, and prints calls/s, p50/p99 and the CPU of the server and of the generator. Whatever a
real server does per request comes on top of this. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import grpc
from raftkv_cli.bench import BenchConfig, run_bench
from raftkv_cli.localcluster import free_ports

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc


class NoopKV(rpc_pb2_grpc.KVServicer):
    async def Put(self, request: Any, context: Any) -> rpc_pb2.PutResponse:  # noqa: N802
        return rpc_pb2.PutResponse()

    async def Range(self, request: Any, context: Any) -> rpc_pb2.RangeResponse:  # noqa: N802
        return rpc_pb2.RangeResponse()


async def serve(port: int) -> None:
    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(NoopKV(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,64,256")
    ap.add_argument("--processes", default="1,2")
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        print(
            f"no-op grpc.aio KV server on 127.0.0.1:{port}, grpcio {grpc.__version__}, "
            f"{os.cpu_count()} cores"
        )
        print(
            "| in flight | generator processes | calls/s | p50 ms | p99 ms | server CPU % "
            "| generator CPU % |"
        )
        print("|--:|--:|--:|--:|--:|--:|--:|")
        for conc in (int(c) for c in args.concurrency.split(",")):
            for procs in (int(p) for p in args.processes.split(",")):
                if procs > conc:
                    continue
                s0, t0 = cpu_of(server.pid), time.monotonic()
                r = run_bench(
                    BenchConfig(
                        workload="put",
                        endpoints=(f"127.0.0.1:{port}",),
                        concurrency=conc,
                        processes=procs,
                        conns=procs,
                        clients=procs,
                        duration=args.duration,
                        progress=False,
                    )
                )
                server_pct = 100 * (cpu_of(server.pid) - s0) / (time.monotonic() - t0)
                lat = r["latency_ms"]
                print(
                    f"| {conc} | {procs} | {r['throughput']:,.0f} | {lat['p50']:.3f} | "
                    f"{lat['p99']:.3f} | {server_pct:.0f} | {r['generator']['cpu_pct']:.0f} |",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
