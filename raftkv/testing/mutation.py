"""Run the simulator against a mutated copy of the core, to prove the simulator bites.

A mutation is a textual patch applied to a temporary copy of the ``raftkv`` package; the
product code carries no switch for it. ``first_failing_seed`` runs seeds in small batches and
stops at the first failure, so a caught mutation costs only the seeds it takes to catch it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Mutation:
    name: str
    description: str
    path: str
    """File inside the raftkv package, e.g. ``raft/raft.py``."""
    original: str
    replacement: str


@dataclass(frozen=True, slots=True)
class MutationResult:
    mutation: Mutation
    caught: bool
    seeds_run: int
    first_failure: str


def mutated_copy(mutation: Mutation, workdir: Path) -> Path:
    """Copy the installed raftkv package into ``workdir`` and apply ``mutation`` to the copy."""
    # This file is raftkv/testing/mutation.py (resolved through the editable install's links),
    # so the package is two levels up; no import of the whole package needed.
    source = Path(__file__).resolve().parents[1]
    target = workdir / "raftkv"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / mutation.path
    text = path.read_text()
    count = text.count(mutation.original)
    if count != 1:
        raise ValueError(
            f"{mutation.name}: expected the original text once in {path}, found {count}"
        )
    path.write_text(text.replace(mutation.original, mutation.replacement))
    return workdir


def first_failing_seed(
    mutation: Mutation,
    *,
    max_seeds: int = 500,
    ticks: int = 2000,
    start: int = 1,
    batch: int = 25,
    jobs: int = 2,
) -> MutationResult:
    with tempfile.TemporaryDirectory(prefix=f"raftkv-mutant-{mutation.name}-") as tmp:
        root = mutated_copy(mutation, Path(tmp))
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONSAFEPATH="1")
        seeds_run = 0
        while seeds_run < max_seeds:
            n = min(batch, max_seeds - seeds_run)
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "raftkv.sim",
                    "--seeds",
                    str(n),
                    "--start",
                    str(start + seeds_run),
                    "--ticks",
                    str(ticks),
                    "--jobs",
                    str(jobs),
                    "--quiet",
                ],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if proc.returncode != 0:
                failures = re.findall(r"repro: python -m raftkv.sim --seed (\d+)", proc.stdout)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
                if not failures or not lines:
                    # A crash of the harness itself is not a caught mutation.
                    raise RuntimeError(f"{mutation.name}: simulator did not run:\n{proc.stderr}")
                first = min(int(s) for s in failures)
                return MutationResult(mutation, True, first - start + 1, lines[0])
            seeds_run += n
        return MutationResult(mutation, False, seeds_run, "")
