"""bench/apply_contention.py applies the same batches with the main thread idle and busy, and
reports per-transaction wall time, worker CPU and switches for each (a smoke test: the numbers
themselves are the benchmark's, not asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "apply_contention", ROOT / "bench" / "apply_contention.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["apply_contention"] = module
    spec.loader.exec_module(module)
    return module


tool = load_tool()


@pytest.mark.parametrize("busy", [False, True])
def test_each_mode_reports_per_transaction_numbers_and_cleans_up(
    tmp_path: Path, busy: bool
) -> None:
    entries = tool._entries(30)
    assert len({e.data for e in entries}) == 30  # distinct check-perf-like puts
    result = tool.run(entries, 10, tmp_path, busy)
    assert set(result) == {"wall_ms", "cpu_ms", "switches"}
    assert result["wall_ms"] > 0 and result["cpu_ms"] >= 0 and result["switches"] >= 0
    assert list(tmp_path.iterdir()) == []  # the key space it made is gone


def test_the_command_prints_both_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        sys, "argv", ["apply_contention.py", "--entries", "20", "--dir", str(tmp_path)]
    )
    tool.main()
    out = capsys.readouterr().out
    assert "20 puts in batches of 10" in out
    assert "main thread idle" in out and "main thread running Python" in out
