"""bench/wire_latency.py pairs each request packet with the server's response on the same
connection, skipping PING acks and window updates, and reports per-port server times."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "wire_latency", ROOT / "bench" / "wire_latency.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wire_latency"] = module
    spec.loader.exec_module(module)
    return module


wire = load_tool()


def frame(t: float, src: int, dst: int, payload: int) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", src, dst, 0, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + 20 + payload, 0, 0, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    ether = b"\0" * 12 + b"\x08\x00"
    body = ether + ip + tcp + b"x" * payload
    sec = int(t)
    return struct.pack("<IIII", sec, round((t - sec) * 1e6), len(body), len(body)) + body


def capture(*frames: bytes) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(frames)


def test_requests_pair_with_the_next_real_response_on_their_connection() -> None:
    data = capture(
        frame(100.000, 40001, 2379, 1337),  # request on connection A
        frame(100.001, 40002, 22379, 1337),  # request on connection B
        frame(100.002, 2379, 40001, 17),  # a PING ack on A: not the response
        frame(100.010, 22379, 40002, 93),  # B's response after 9 ms
        frame(100.050, 2379, 40001, 93),  # A's response after 50 ms
        frame(100.051, 40001, 2379, 30),  # the client's ping + window update: not a request
        frame(100.060, 2379, 40001, 93),  # an unpaired server payload is ignored
    )
    report = wire.analyse(wire.packets(data), [2379, 22379], 1000)
    assert report.server_times[2379] == [pytest.approx(0.050)]
    assert report.server_times[22379] == [pytest.approx(0.009)]
    assert report.request_times == [pytest.approx(100.0), pytest.approx(100.001)]


def test_rate_in_flight_and_gaps() -> None:
    timed = []
    for i in range(11):  # a request every 10 ms, each answered 20 ms later
        t = 200 + i * 0.010
        timed += [
            (t, frame(t, 41000 + i, 2379, 1200)),
            (t + 0.020, frame(t + 0.020, 2379, 41000 + i, 90)),
        ]
    data = capture(*(f for _, f in sorted(timed)))
    report = wire.analyse(wire.packets(data), [2379], 1000)
    assert report.requests_per_s() == pytest.approx(100, rel=1e-3)
    assert report.in_flight() == pytest.approx(2.0, rel=1e-3)  # 100/s x 20 ms
    assert report.gap_share() == pytest.approx(1.0)  # every gap is 10 ms, over 2 ms


def test_a_file_that_is_not_a_pcap_is_refused() -> None:
    with pytest.raises(ValueError, match="pcap"):
        list(wire.packets(b"\0" * 64))


def test_the_command_line_prints_per_port_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cap.pcap"
    path.write_bytes(capture(frame(1.0, 40001, 2379, 1337), frame(1.030, 2379, 40001, 93)))
    wire.main([str(path), "--ports", "2379"])
    out = capsys.readouterr().out
    assert "port 2379: server time n=1 mean=30.0 ms" in out
