"""bench/apply_contention.py, run as a user runs it: it applies the same batches with the main
thread idle and busy and prints per-transaction wall time, worker CPU and switches for each (a
smoke test: the numbers are the benchmark's, not asserted), leaving nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "apply_contention.py"
LINE = re.compile(
    r"main thread (idle|running Python)\s+wall\s+([\d.]+) ms\s+worker CPU\s+([\d.]+) ms\s+"
    r"voluntary switches\s+([\d.]+)"
)


def test_it_reports_both_modes_per_transaction_and_cleans_up(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--entries", "30", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "30 puts in batches of 10" in done.stdout
    rows = LINE.findall(done.stdout)
    assert [mode for mode, *_ in rows] == ["idle", "running Python"]
    assert all(float(wall) > 0 for _, wall, _, _ in rows)
    assert list(tmp_path.iterdir()) == []  # the key spaces it made are gone
