"""Plots without dependencies: a tiny PNG canvas (zlib + struct) and inline SVG for the HTML.

Latency over time (one point per op, coloured by outcome, log scale) with the nemesis windows
shaded, and throughput (completions per second, by outcome).
"""

from __future__ import annotations

import html
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jepsen.history import Op

__all__ = ["Canvas", "write_plots"]

RGB = tuple[int, int, int]
COLORS: dict[str, RGB] = {"ok": (40, 150, 60), "fail": (210, 50, 40), "info": (240, 160, 20)}
SHADE: RGB = (255, 222, 222)
SHADES: dict[str, RGB] = {
    "kill": (255, 215, 215),
    "pause": (220, 225, 255),
    "partition": (255, 240, 200),
}


class Canvas:
    """An RGB raster that encodes itself as PNG."""

    def __init__(self, width: int, height: int, bg: RGB = (255, 255, 255)) -> None:
        self.width = width
        self.height = height
        self.px = bytearray(bytes(bg) * (width * height))

    def set(self, x: int, y: int, c: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.px[i : i + 3] = bytes(c)

    def get(self, x: int, y: int) -> RGB:
        i = 3 * (y * self.width + x)
        return (self.px[i], self.px[i + 1], self.px[i + 2])

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: RGB) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        row = bytes(c) * (x1 - x0)
        for y in range(y0, y1):
            i = 3 * (y * self.width + x0)
            self.px[i : i + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, c: RGB) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.set(x0, y0, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def dot(self, x: int, y: int, c: RGB, r: int = 1) -> None:
        self.rect(x - r, y - r, x + r + 1, y + r + 1, c)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.px[3 * y * self.width : 3 * (y + 1) * self.width])
            for y in range(self.height)
        )

        def chunk(tag: bytes, data: bytes) -> bytes:
            body = tag + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b"")
        )


_W, _H, _M = 900, 300, 40  # size and margin


class _Scale:
    def __init__(self, t_max: float, y_min: float, y_max: float, log: bool) -> None:
        self.t_max = max(t_max, 1e-9)
        self.log = log
        self.y_min, self.y_max = (math.log10(y_min), math.log10(y_max)) if log else (y_min, y_max)
        if self.y_max <= self.y_min:
            self.y_max = self.y_min + 1

    def x(self, t: float) -> int:
        return int(_M + (_W - 2 * _M) * t / self.t_max)

    def y(self, v: float) -> int:
        if self.log:
            v = math.log10(max(v, 10**self.y_min))
        return int(_H - _M - (_H - 2 * _M) * (v - self.y_min) / (self.y_max - self.y_min))


def _series(ops: Sequence[Op]) -> tuple[list[tuple[float, float, str]], float]:
    pts = []
    t_max = 1.0
    for op in ops:
        if op.complete is None or op.status is None:
            continue
        pts.append((op.invoke, max(op.complete - op.invoke, 1e-4) * 1000, op.status))
        t_max = max(t_max, op.complete)
    return pts, t_max


def _throughput(ops: Sequence[Op], t_max: float) -> dict[str, list[int]]:
    n = int(t_max) + 1
    out = {s: [0] * n for s in COLORS}
    for op in ops:
        if op.complete is not None and op.status in out:
            out[op.status][min(n - 1, int(op.complete))] += 1
    return out


def _axes(c: Canvas) -> None:
    black = (0, 0, 0)
    c.line(_M, _H - _M, _W - _M, _H - _M, black)
    c.line(_M, _M, _M, _H - _M, black)


def latency_png(ops: Sequence[Op], windows: Sequence[dict[str, Any]]) -> bytes:
    pts, t_max = _series(ops)
    s = _Scale(t_max, 0.1, max([p[1] for p in pts] + [10.0]), log=True)
    c = Canvas(_W, _H)
    for w in windows:
        c.rect(s.x(w["start"]), _M, s.x(w["end"]) + 1, _H - _M, SHADES.get(w["kind"], SHADE))
    for decade in range(-1, 6):
        y = s.y(10.0**decade)
        if _M <= y <= _H - _M:
            c.line(_M, y, _W - _M, y, (225, 225, 225))
    _axes(c)
    for t, ms, st in pts:
        c.dot(s.x(t), s.y(ms), COLORS[st])
    return c.png()


def throughput_png(ops: Sequence[Op], windows: Sequence[dict[str, Any]]) -> bytes:
    _pts, t_max = _series(ops)
    tp = _throughput(ops, t_max)
    s = _Scale(t_max, 0, max([max(v) for v in tp.values()] + [1]), log=False)
    c = Canvas(_W, _H)
    for w in windows:
        c.rect(s.x(w["start"]), _M, s.x(w["end"]) + 1, _H - _M, SHADES.get(w["kind"], SHADE))
    _axes(c)
    for st, counts in tp.items():
        for i in range(1, len(counts)):
            c.line(s.x(i - 0.5), s.y(counts[i - 1]), s.x(i + 0.5), s.y(counts[i]), COLORS[st])
    return c.png()


def _svg(ops: Sequence[Op], windows: Sequence[dict[str, Any]], kind: str) -> str:
    pts, t_max = _series(ops)
    tp: dict[str, list[int]] = {}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}">']
    if kind == "latency":
        s = _Scale(t_max, 0.1, max([p[1] for p in pts] + [10.0]), log=True)
    else:
        tp = _throughput(ops, t_max)
        s = _Scale(t_max, 0, max([max(v) for v in tp.values()] + [1]), log=False)
    for w in windows:
        r, g, b = SHADES.get(w["kind"], SHADE)
        x0, x1 = s.x(w["start"]), s.x(w["end"])
        parts.append(
            f'<rect x="{x0}" y="{_M}" width="{max(1, x1 - x0)}" height="{_H - 2 * _M}" '
            f'fill="rgb({r},{g},{b})"><title>{html.escape(w["kind"] + ": " + w["detail"])}'
            "</title></rect>"
        )
    parts.append(f'<line x1="{_M}" y1="{_H - _M}" x2="{_W - _M}" y2="{_H - _M}" stroke="black"/>')
    parts.append(f'<line x1="{_M}" y1="{_M}" x2="{_M}" y2="{_H - _M}" stroke="black"/>')
    for i in range(0, int(t_max) + 1, max(1, int(t_max) // 10)):
        parts.append(f'<text x="{s.x(i)}" y="{_H - _M + 15}" font-size="10">{i}s</text>')
    if kind == "latency":
        for decade in range(-1, 6):
            y = s.y(10.0**decade)
            if _M <= y <= _H - _M:
                parts.append(f'<text x="2" y="{y + 3}" font-size="10">{10.0**decade:g}ms</text>')
        for t, ms, st in pts:
            r, g, b = COLORS[st]
            parts.append(f'<circle cx="{s.x(t)}" cy="{s.y(ms)}" r="1.5" fill="rgb({r},{g},{b})"/>')
    else:
        for st, counts in tp.items():
            r, g, b = COLORS[st]
            coords = " ".join(f"{s.x(i + 0.5)},{s.y(v)}" for i, v in enumerate(counts))
            parts.append(f'<polyline points="{coords}" fill="none" stroke="rgb({r},{g},{b})"/>')
        top = int(s.y_max)
        parts.append(f'<text x="2" y="{_M + 3}" font-size="10">{top}/s</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_plots(
    out: Path, ops: Sequence[Op], windows: Sequence[dict[str, Any]], title: str, verdict: str
) -> None:
    (out / "latency.png").write_bytes(latency_png(ops, windows))
    (out / "throughput.png").write_bytes(throughput_png(ops, windows))
    legend = (
        " ".join(f'<span style="color:rgb{c}">&#9679; {s}</span>' for s, c in COLORS.items())
        + " &nbsp; "
        + " ".join(
            f'<span style="background:rgb{c}">&nbsp;{k}&nbsp;</span>' for k, c in SHADES.items()
        )
    )
    rows = "".join(
        f"<tr><td>{w['start']:.1f}</td><td>{w['end']:.1f}</td><td>{html.escape(w['kind'])}</td>"
        f"<td>{html.escape(w['detail'])}</td></tr>"
        for w in windows
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}} td{{padding:0 8px}}</style></head><body>
<h1>{html.escape(title)}</h1><pre>{html.escape(verdict)}</pre><p>{legend}</p>
<h2>Latency (log scale)</h2>{_svg(ops, windows, "latency")}
<h2>Throughput (completions per second)</h2>{_svg(ops, windows, "throughput")}
<p>PNG: <a href="latency.png">latency.png</a>, <a href="throughput.png">throughput.png</a></p>
<h2>Nemesis</h2><table><tr><th>start s</th><th>end s</th><th>kind</th><th>detail</th></tr>{rows}
</table></body></html>"""
    (out / "index.html").write_text(page)
