"""What TLS costs per put: raftkv and etcd, each plain and with TLS on both sides.

    python bench/tls_cost.py [--duration 8] [--in-flight 256] [--only raftkv|etcd]

A benchmark script, not a test: it prints numbers. For each server and mode it starts a fresh
three-member cluster on free loopback ports (heartbeat 100 ms, election timeout 1000 ms), with
TLS "https://" client and peer URLs, mutual TLS on both and certificates made by
``raftkv_cli.certs``, or plain "http://". It then keeps ``--in-flight`` Puts (8-byte keys from
10 000, 256-byte values) in flight on the leader over four connections for ``--duration``
seconds, after a one-second warm-up, and reports puts/s, latency, and the CPU the members used
per put (user + system time of the member processes from /proc, over the measured window). The
load generator is one Python process on the same machine; its own CPU is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from raftkv_cli.certs import CertFiles, make_ca, make_cert

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
CONNECTIONS = 4


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), proc(5) fields 14 and 15."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def member_argv(kind: str, name: str, urls: dict[str, tuple[int, int]], tls: bool) -> list[str]:
    scheme = "https" if tls else "http"
    client, peer = (f"{scheme}://127.0.0.1:{p}" for p in urls[name])
    cluster = ",".join(f"{n}={scheme}://127.0.0.1:{p[1]}" for n, p in urls.items())
    exe = [ETCD] if kind == "etcd" else [sys.executable, "-m", "raftkv_cli", "node"]
    return [
        *exe, "--name", name,
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster, "--initial-cluster-token", f"tls-cost-{kind}",
        "--initial-cluster-state", "new",
    ]  # fmt: skip


def tls_flags(server: CertFiles, peer: CertFiles) -> list[str]:
    return [
        "--cert-file", str(server.cert), "--key-file", str(server.key),
        "--trusted-ca-file", str(server.ca), "--client-cert-auth",
        "--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key),
        "--peer-trusted-ca-file", str(peer.ca), "--peer-client-cert-auth",
    ]  # fmt: skip


class Cluster:
    def __init__(self, kind: str, root: Path, certs: dict[str, CertFiles] | None) -> None:
        ports = free_ports(6)
        self.urls = {f"m{i}": (ports[2 * i], ports[2 * i + 1]) for i in range(3)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.certs = certs
        for name in self.urls:
            argv = member_argv(kind, name, self.urls, certs is not None)
            if certs is not None:
                argv += tls_flags(certs["server"], certs["peer"])
            argv += ["--data-dir", str(root / name)]
            log = (root / f"{name}.log").open("wb")
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def channel(self, port: int) -> grpc.aio.Channel:
        target = f"127.0.0.1:{port}"
        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        if self.certs is None:
            return grpc.aio.insecure_channel(target, options=options)
        c = self.certs["client"]
        creds = grpc.ssl_channel_credentials(
            c.ca.read_bytes(), c.key.read_bytes(), c.cert.read_bytes()
        )
        return grpc.aio.secure_channel(target, creds, options=options)

    async def leader_port(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for client_port, _ in self.urls.values():
                async with self.channel(client_port) as ch:
                    try:
                        st = await rpc_pb2_grpc.MaintenanceStub(ch).Status(
                            rpc_pb2.StatusRequest(), timeout=1
                        )
                    except grpc.aio.AioRpcError:
                        continue
                    if st.leader and st.leader == st.header.member_id:
                        return client_port
            await asyncio.sleep(0.2)
        raise RuntimeError("no leader")

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def load(
    cluster: Cluster, in_flight: int, warmup_s: float, duration_s: float
) -> dict[str, float]:
    port = await cluster.leader_port()
    channels = [cluster.channel(port) for _ in range(CONNECTIONS)]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    value = b"v" * 256
    rng = random.Random(1)
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.monotonic() + warmup_s + duration_s

    async def worker(i: int) -> None:
        nonlocal errors
        stub = stubs[i % CONNECTIONS]
        while time.monotonic() < stop_at:
            key = b"%08d" % rng.randrange(10_000)
            start = time.monotonic()
            try:
                await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if measuring:
                latencies.append(time.monotonic() - start)

    tasks = [asyncio.ensure_future(worker(i)) for i in range(in_flight)]
    await asyncio.sleep(warmup_s)
    measuring = True
    cpu0, own0, t0 = cluster.cpu(), time.process_time(), time.monotonic()
    await asyncio.sleep(duration_s)
    measuring = False
    cpu1, own1, t1 = cluster.cpu(), time.process_time(), time.monotonic()
    await asyncio.gather(*tasks)
    for ch in channels:
        await ch.close()
    latencies.sort()
    n = len(latencies)
    return {
        "puts_per_s": n / (t1 - t0),
        "p50_ms": 1000 * latencies[n // 2] if n else 0.0,
        "p99_ms": 1000 * latencies[int(n * 0.99)] if n else 0.0,
        "member_cpu_ms_per_put": 1000 * (cpu1 - cpu0) / n if n else 0.0,
        "member_cpu_cores": (cpu1 - cpu0) / (t1 - t0),
        "client_cpu_cores": (own1 - own0) / (t1 - t0),
        "errors": errors,
    }


def make_certs(root: Path) -> dict[str, CertFiles]:
    client_ca, peer_ca = make_ca(root, "client-ca"), make_ca(root, "peer-ca")
    return {
        "server": make_cert(client_ca, root, "server"),
        "client": make_cert(client_ca, root, "client"),
        "peer": make_cert(peer_ca, root, "peer"),
    }


def run_case(kind: str, tls: bool, args: argparse.Namespace, root: Path) -> dict[str, float]:
    case = root / f"{kind}-{'tls' if tls else 'plain'}"
    case.mkdir()
    cluster = Cluster(kind, case, make_certs(case / "certs") if tls else None)
    try:
        return asyncio.run(load(cluster, args.in_flight, 1.0, args.duration))
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--only", choices=("raftkv", "etcd"), default=None)
    args = parser.parse_args(argv)
    kinds = [args.only] if args.only else ["raftkv", "etcd"]
    print(
        f"{'server':8} {'mode':6} {'puts/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'member CPU ms/put':>18} {'member cores':>12} {'client cores':>12} {'errors':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="tls-cost-") as tmp:
        for kind in kinds:
            for tls in (False, True):
                r = run_case(kind, tls, args, Path(tmp))
                print(
                    f"{kind:8} {'tls' if tls else 'plain':6} {r['puts_per_s']:8.0f} "
                    f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['member_cpu_ms_per_put']:18.3f} "
                    f"{r['member_cpu_cores']:12.2f} {r['client_cpu_cores']:12.2f} "
                    f"{r['errors']:6.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
