"""The raftkv command picks gRPC's classic poller before gRPC is imported (see raftkv_cli)."""

from __future__ import annotations

import os
import subprocess
import sys

from raftkv_cli import CLASSIC_POLLER_EXPERIMENTS

_PROBE = (
    "import os, sys, raftkv_cli, grpc; "
    "assert 'grpc' in sys.modules; "
    "print(repr(os.environ.get('GRPC_EXPERIMENTS')))"
)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_command_selects_the_classic_poller_and_grpc_knows_every_flag() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    done = _run(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(CLASSIC_POLLER_EXPERIMENTS)
    # gRPC names any experiment it does not know on stderr at import; none may be unknown.
    assert "Unknown experiment" not in done.stderr


def test_an_experiments_setting_from_the_environment_wins() -> None:
    done = _run({**os.environ, "GRPC_EXPERIMENTS": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr("")
