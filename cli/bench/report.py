"""What a run reports: the progress line while it runs, and the report at the end."""

from __future__ import annotations

from typing import Any

from raftkv_cli.bench.config import BenchConfig
from raftkv_cli.bench.histogram import Histogram

__all__ = ["format_report", "latency_summary", "progress_line"]


def progress_line(cfg: BenchConfig, elapsed: float, ok: int, errs: int) -> str:
    """One line of progress: what is done so far, the rate, a bar toward --total or --duration."""
    what = "events" if cfg.workload == "watch" else "ok"
    rate = ok / elapsed if elapsed > 0 else 0.0
    bar = ""
    if cfg.total > 0 and cfg.workload != "watch":
        frac = min(1.0, (ok + errs) / cfg.total)
        bar = "[" + "#" * int(frac * 20) + "-" * (20 - int(frac * 20)) + f"] {frac:4.0%} "
    elif cfg.duration > 0:
        frac = min(1.0, elapsed / cfg.duration)
        bar = "[" + "#" * int(frac * 20) + "-" * (20 - int(frac * 20)) + f"] {frac:4.0%} "
    name = f"{cfg.label} " if cfg.label else ""
    return (
        f"{name}{cfg.workload} {bar}{elapsed:6.1f}s {ok:>9,} {what} {rate:>9,.0f}/s {errs:,} errors"
    )


def latency_summary(h: Histogram) -> dict[str, float]:
    """Min, mean, percentiles and max of ``h``, in milliseconds."""
    ms = 1000.0
    return {
        "min": h.min_us / ms,
        "mean": round(h.mean_us() / ms, 3),
        "p50": h.percentile(0.50) / ms,
        "p90": h.percentile(0.90) / ms,
        "p99": h.percentile(0.99) / ms,
        "p999": h.percentile(0.999) / ms,
        "max": h.max_us / ms,
    }


def format_report(r: dict[str, Any]) -> str:
    """The report as text, in the layout of etcd's ``tools/benchmark``."""
    c = r["config"]
    lines = [f"Workload: {r['workload']}  endpoints: {','.join(c['endpoints'])}"]
    if r["status"] == "unimplemented":
        lines.append(f"  the server does not implement it: UNIMPLEMENTED ({r['error']})")
        return "\n".join(lines)
    if r["status"] != "ok":
        lines.append(f"  failed: {r['error']}")
        return "\n".join(lines)
    lines += _summary_lines(r)
    lines += _distribution_lines(r)
    if r["errors"]:
        lines += ["", "Errors:"] + [f"  {k}: {v}" for k, v in sorted(r["errors"].items())]
    else:
        lines += ["", "Errors: none"]
    if r["workload"] == "watch":
        x, w = r["extra"], r["writes"]
        lines += [
            "",
            f"Watch: {x['writes_ok']} writes ({w['throughput']:,.1f}/s, p50 "
            f"{w['latency_ms']['p50']:.3f} ms, p99 {w['latency_ms']['p99']:.3f} ms) x "
            f"{c['watchers']} watchers = {x['expected']} events expected, {x['delivered']} "
            f"delivered, {x['missing']} missing, {x['out_of_order']} out of order",
        ]
    if r["workload"] == "txn":
        x = r["extra"]
        lines += ["", f"CAS: {x['cas_succeeded']} succeeded, {x['cas_conflicts']} conflicts"]
    return "\n".join(lines + _generator_lines(r))


def _summary_lines(r: dict[str, Any]) -> list[str]:
    c, lat, gen = r["config"], r["latency_ms"], r["generator"]
    what = "events delivered" if r["workload"] == "watch" else "requests ok"
    return [
        f"  {c['concurrency']} in flight, {c['conns']} conns, {c['clients']} clients, "
        f"{gen['processes']} processes"
        + (f", rate {c['rate']:g}/s" if c["rate"] else "")
        + (f", {c['watchers']} watchers" if r["workload"] == "watch" else "")
        + (f", consistency {c['consistency']}" if r["workload"] in ("range", "txn") else ""),
        "",
        "Summary:",
        f"  Total:\t{r['duration_s']:.4f} s" + ("  (interrupted)" if r["interrupted"] else ""),
        f"  {what}:\t{r['ok']}",
        f"  Throughput:\t{r['throughput']:,.1f} /s",
        f"  Slowest:\t{lat['max']:.3f} ms",
        f"  Fastest:\t{lat['min']:.3f} ms",
        f"  Average:\t{lat['mean']:.3f} ms",
    ]


def _distribution_lines(r: dict[str, Any]) -> list[str]:
    """The histogram as bars, then the percentiles."""
    lat, hist = r["latency_ms"], r["histogram_ms"]
    lines = ["", "Response time histogram (ms):"]
    top = max((cnt for _, cnt in hist), default=0)
    for upper, cnt in hist:
        bar = "∎" * (round(40 * cnt / top) if top else 0)
        lines.append(f"  {upper:10.3f} [{cnt}]\t|{bar}")
    lines += ["", "Latency distribution:"]
    for key, label in (("p50", "50%"), ("p90", "90%"), ("p99", "99%"), ("p999", "99.9%")):
        lines.append(f"  {label} in {lat[key]:.3f} ms")
    lines.append(f"  max   {lat['max']:.3f} ms")
    return lines


def _generator_lines(r: dict[str, Any]) -> list[str]:
    """The load generator's own CPU, and a warning when it may have been the bottleneck."""
    gen = r["generator"]
    lines = [
        "",
        f"Load generator: {gen['cpu_s']:.2f} CPU s over {r['duration_s']:.2f} s = "
        f"{gen['cpu_pct']:.0f}% of one core ({gen['cores']} cores here); "
        f"process tree incl. start-up {gen['cpu_tree_s']:.2f} CPU s",
    ]
    if gen["cpu_pct"] > 80 * gen["processes"]:
        lines.append(
            "  warning: the generator's processes were nearly saturated; the numbers may be "
            "its limit (try more --processes)"
        )
    return lines
