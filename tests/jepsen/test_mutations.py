"""Mutation proofs: each workload must catch the bug it exists for, planted in a copy of the server.

A mutation is a textual patch of a temporary copy of the installed ``raftkv`` package
(``raftkv.testing.mutation.mutated_copy``, as the simulator's mutation tests do); the harness
runs from the copy's folder, so the node processes it starts import the mutant. The
product code carries no switch for any of them. Run with ``pytest -m slow tests/jepsen``; each
run is kept to about a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raftkv.testing.mutation import Mutation, mutated_copy

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="partitions need root (netns+iptables)")

PARTIAL_TXN = Mutation(
    "partial_txn",
    "a transaction with several puts applies all but its last one (and says it succeeded)",
    "kv/mvcc.py",
    "            for op in t.success if ok else t.failure:\n"
    "                out.append(self._op(op, run))",
    "            ops = t.success if ok else t.failure\n"
    "            puts = [o for o in ops if isinstance(o, PutRequest)]\n"
    "            for op in ops:\n"
    "                if len(puts) > 1 and op is puts[-1]:\n"
    "                    continue\n"
    "                out.append(self._op(op, run))",
)

READ_WITHOUT_QUORUM = Mutation(
    "read_without_quorum",
    "a leader answers ReadIndex without confirming its leadership with a heartbeat quorum: a "
    "deposed leader serves stale reads until it notices",
    "raft/raft.py",
    "if vote_result(self.tracker.voters, dict.fromkeys(acks, True)) is not VoteResult.WON:\n"
    "            return",
    "pass",
)

COMMIT_WITHOUT_QUORUM = Mutation(
    "commit_without_quorum",
    "a leader commits (applies and acknowledges) an entry as soon as it has it itself: a "
    "deposed leader acknowledges writes no majority holds, which the new leader never sees",
    "raft/progress.py",
    "    return indexes[majority(len(indexes)) - 1]",
    "    return indexes[0]",
)

# (mutation, workload, nemesis, the anomaly kinds any one of which proves it was caught)
CASES = [
    (PARTIAL_TXN, "append", "partition", {"lost-append"}),
    (READ_WITHOUT_QUORUM, "register", "deposed-leader", {"nonlinearizable"}),
    (COMMIT_WITHOUT_QUORUM, "register", "deposed-leader", {"nonlinearizable"}),
]

# Short, frequent faults: each deposed leader is one chance, of a few hundred milliseconds
# (until it notices it lost its quorum), for a read it answers alone to miss a newer write.
RUN = ("--time-limit", "60", "--rate", "100", "--interval", "1.5", "--fault-duration", "2.5")


def run_mutant(tmp_path: Path, mutation: Mutation, *args: str) -> tuple[int, dict[str, Any], str]:
    mutant = mutated_copy(mutation, tmp_path / "mutant")
    # Run from the mutant's folder: ``python -m`` puts the working directory first on sys.path,
    # in the harness and in the node processes it starts (they inherit it), so the mutated
    # raftkv shadows the installed one; jepsen/ comes from the checkout, behind it.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONSAFEPATH", None)
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "jepsen", "test", "--results", str(results), *args],
        cwd=mutant,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    runs = sorted(results.iterdir()) if results.exists() else []
    assert runs, proc.stdout + proc.stderr
    verdict_file = runs[-1] / "verdict.json"
    assert verdict_file.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(verdict_file.read_text()), proc.stdout


def test_every_mutation_applies_to_the_current_server(tmp_path: Path) -> None:
    # Fast guard: if the server is refactored, the patches must be updated, not silently lost.
    for mutation, *_rest in CASES:
        mutated_copy(mutation, tmp_path / mutation.name)


@pytest.mark.slow
@needs_root
@pytest.mark.parametrize(
    ("mutation", "workload", "nemesis", "kinds"), CASES, ids=[c[0].name for c in CASES]
)
def test_workload_catches_mutation(
    tmp_path: Path, mutation: Mutation, workload: str, nemesis: str, kinds: set[str]
) -> None:
    code, verdict, out = run_mutant(
        tmp_path,
        mutation,
        *("--workload", workload, "--nemesis", nemesis),
        *RUN,
    )
    assert code == 1, f"{mutation.description}: not caught\n{out}"
    assert kinds & set(verdict["anomaly_types"]), verdict["anomaly_types"]
