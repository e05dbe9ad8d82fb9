"""The PNG writer produces valid PNGs; partitions have the promised shapes."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from jepsen.history import Op
from jepsen.nemesis import partition_grudge
from jepsen.plot import Canvas, latency_png, throughput_png, write_plots


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert zlib.crc32(tag + body) == crc
        if tag == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 2)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    assert len(raw) == h * (1 + 3 * w)
    return w, h, raw


def test_canvas_roundtrip() -> None:
    c = Canvas(10, 4)
    c.rect(2, 1, 4, 3, (255, 0, 0))
    c.line(0, 0, 9, 3, (0, 0, 255))
    assert c.get(3, 2) == (255, 0, 0)
    assert c.get(0, 0) == (0, 0, 255)
    w, h, raw = decode_png(c.png())
    assert (w, h) == (10, 4)
    row2 = raw[2 * 31 : 3 * 31]
    assert row2[0] == 0 and row2[1 + 3 * 3 : 1 + 3 * 3 + 3] == b"\xff\x00\x00"


def _ops() -> list[Op]:
    ops = []
    for i in range(200):
        st = ["ok", "fail", "info"][i % 3]
        ops.append(
            Op(i, i % 4, "n1", "read", "k", None, i * 0.05, i * 0.05 + 0.01 * (i % 7 + 1), st)
        )
    return ops


def test_plots_are_valid_pngs(tmp_path) -> None:
    windows = [{"kind": "kill", "detail": "kill -9 n1", "start": 2.0, "end": 4.0}]
    for data in (latency_png(_ops(), windows), throughput_png(_ops(), windows)):
        w, h, _raw = decode_png(data)
        assert w > 100 and h > 100
    write_plots(tmp_path, _ops(), windows, "t", "VALID")
    page = (tmp_path / "index.html").read_text()
    assert "<svg" in page and "kill -9 n1" in page
    decode_png((tmp_path / "latency.png").read_bytes())


NAMES3 = ["n1", "n2", "n3"]
NAMES5 = ["n1", "n2", "n3", "n4", "n5"]


def reach(grudge, a, b) -> bool:
    return a not in grudge.get(b, set())


@pytest.mark.parametrize("names", [NAMES3, NAMES5])
def test_halves_and_isolate(names) -> None:
    g = partition_grudge("halves", names, random.Random(1), None)
    cut = {(a, b) for b, srcs in g.items() for a in srcs}
    assert cut and all((b, a) in cut for a, b in cut)  # symmetric
    g = partition_grudge("isolate-leader", names, random.Random(1), "n2")
    assert g["n2"] == set(names) - {"n2"}
    assert all(g[x] == {"n2"} for x in names if x != "n2")


@pytest.mark.parametrize("names", [NAMES3, NAMES5])
def test_bridge(names) -> None:
    g = partition_grudge("bridge", names, random.Random(2), None)
    bridges = [x for x in names if not g[x]]
    assert len(bridges) == 1
    assert all(not (g[x] & {bridges[0]}) for x in names)


def test_majorities_ring() -> None:
    g = partition_grudge("majorities-ring", NAMES5, random.Random(3), None)
    views = [frozenset(set(NAMES5) - g[x]) for x in NAMES5]
    assert all(len(v) == 3 for v in views)
    assert len(set(views)) == 5  # no two nodes see the same majority


@pytest.mark.parametrize("names", [NAMES3, NAMES5])
def test_leader_minority(names) -> None:
    g = partition_grudge("leader-minority", names, random.Random(4), "n3")
    minority = {x for x in names if "n3" not in g[x]}
    assert "n3" in minority and len(minority) == (len(names) - 1) // 2
    assert all(g[x] == set(names) - minority for x in minority)
