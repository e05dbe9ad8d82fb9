"""Server time per request, seen on the wire, from a packet capture of the client ports.

A load generator's latency mixes its own queueing with the server's. This reads a capture
(``tcpdump -i lo -s 200 -w cap.pcap 'tcp and (port 2379 or port 22379 or port 32379)'``) and,
for each connection, pairs a request packet (a client-to-server TCP payload of at least
``--min-request-bytes``, e.g. a put with a 256 B key and a 1 KiB value) with the server's next
payload of more than 20 bytes on that connection (the response; 17-byte PING acks and 13-byte
WINDOW_UPDATEs are skipped). It prints, per server port, the server time distribution, and for
all ports the request rate, the mean number in flight at the servers (Little's law) and how
evenly requests were issued (the share of time in gaps over 2 ms between requests).

It assumes at most one request in flight per connection, as etcdctl's check perf and
benchmark clients do. Usage: ``python bench/wire_latency.py cap.pcap --ports 2379,22379,32379``
"""

from __future__ import annotations

import argparse
import itertools
import struct
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = ["Report", "analyse", "packets"]

_PCAP_US = 0xA1B2C3D4
_PCAP_NS = 0xA1B23C4D
_LINK_HEADER = {1: 14, 113: 16, 276: 20, 101: 0}  # Ethernet, Linux SLL, SLL2, raw IP
_RESPONSE_MIN_BYTES = 21


@dataclass(frozen=True, slots=True)
class Packet:
    time: float
    src_port: int
    dst_port: int
    payload_bytes: int


@dataclass(slots=True)
class Report:
    server_times: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    request_times: list[float] = field(default_factory=list)

    def requests_per_s(self) -> float:
        span = self.request_times[-1] - self.request_times[0] if self.request_times else 0.0
        return (len(self.request_times) - 1) / span if span > 0 else 0.0

    def in_flight(self) -> float:
        times = [t for ts in self.server_times.values() for t in ts]
        return self.requests_per_s() * (sum(times) / len(times)) if times else 0.0

    def gap_share(self, over_s: float = 0.002) -> float:
        ts = self.request_times
        span = ts[-1] - ts[0] if len(ts) > 1 else 0.0
        gaps = sum(b - a for a, b in itertools.pairwise(ts) if b - a > over_s)
        return gaps / span if span > 0 else 0.0


def packets(data: bytes) -> Iterator[Packet]:
    """TCP packets with a payload, from a classic pcap file's bytes."""
    magic = struct.unpack_from("<I", data)[0]
    if magic not in (_PCAP_US, _PCAP_NS):
        raise ValueError("not a little-endian classic pcap file (use tcpdump -w)")
    scale = 1e-9 if magic == _PCAP_NS else 1e-6
    link = struct.unpack_from("<I", data, 20)[0]
    if link not in _LINK_HEADER:
        raise ValueError(f"unsupported link type {link}")
    skip = _LINK_HEADER[link]
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = frame[skip:]
        if len(ip) < 20:
            continue
        if ip[0] >> 4 == 4:
            header, total, proto = (ip[0] & 15) * 4, struct.unpack_from(">H", ip, 2)[0], ip[9]
            ip_payload = total - header
        elif ip[0] >> 4 == 6 and len(ip) >= 40:
            header, ip_payload, proto = 40, struct.unpack_from(">H", ip, 4)[0], ip[6]
        else:
            continue
        tcp = ip[header:]
        if proto != 6 or len(tcp) < 20:
            continue
        src, dst = struct.unpack_from(">HH", tcp)
        payload = ip_payload - (tcp[12] >> 4) * 4
        if payload > 0:
            yield Packet(sec + frac * scale, src, dst, payload)


def analyse(pkts: Iterator[Packet], ports: Sequence[int], min_request_bytes: int) -> Report:
    servers = set(ports)
    report = Report()
    waiting: dict[tuple[int, int], float] = {}  # (client port, server port) -> request time
    for p in pkts:
        if p.dst_port in servers and p.payload_bytes >= min_request_bytes:
            waiting[(p.src_port, p.dst_port)] = p.time
            report.request_times.append(p.time)
        elif p.src_port in servers and p.payload_bytes >= _RESPONSE_MIN_BYTES:
            sent = waiting.pop((p.dst_port, p.src_port), None)
            if sent is not None:
                report.server_times[p.src_port].append(p.time - sent)
    return report


def _summary(times: list[float]) -> str:
    ts = sorted(times)
    n = len(ts)

    def at(q: float) -> float:
        return ts[min(n - 1, int(q * n))] * 1000

    mean = sum(ts) / n * 1000
    return (
        f"n={n} mean={mean:.1f} ms p50={at(0.5):.1f} p90={at(0.9):.1f} "
        f"p99={at(0.99):.1f} max={ts[-1] * 1000:.1f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture")
    parser.add_argument("--ports", default="2379,22379,32379", help="server ports, comma-separated")
    parser.add_argument("--min-request-bytes", type=int, default=1000)
    args = parser.parse_args(argv)
    with open(args.capture, "rb") as f:
        data = f.read()
    ports = [int(p) for p in args.ports.split(",")]
    report = analyse(packets(data), ports, args.min_request_bytes)
    if not report.request_times:
        raise SystemExit("no requests found: check --ports and --min-request-bytes")
    for port in ports:
        if report.server_times.get(port):
            print(f"port {port}: server time {_summary(report.server_times[port])}")
    everything = [t for ts in report.server_times.values() for t in ts]
    print(f"all ports: server time {_summary(everything)}")
    print(
        f"requests {report.requests_per_s():.0f}/s, in flight at the servers "
        f"{report.in_flight():.1f}, time in gaps over 2 ms between requests "
        f"{100 * report.gap_share():.0f}%"
    )


if __name__ == "__main__":
    main()
