"""The import layers of docs/architecture.md, checked on the source text with ``ast``.

Static, so it sees every import, including those in functions and under ``TYPE_CHECKING``, and
needs no installed package. A rule names a folder, the modules it must not import (a name and
everything below it), optionally the only ``raftkv`` modules it may import, and whether the
module-level functions of ``random`` are banned (only the ``random.Random`` class may be used,
seeded: its hidden global instance and an unseeded ``Random()`` differ from run to run), and
whether loggers must be injected (no module-level ``getLogger``, no root-logger calls).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Source folder -> import name (docs/decisions.md §1: storage/ and cli/ install as raftkv_*).
IMPORT_NAMES = {"raftkv": "raftkv", "storage": "raftkv_storage", "cli": "raftkv_cli"}

IO_AND_CLOCKS = ("asyncio", "grpc", "lmdb", "socket", "threading", "time", "subprocess")


@dataclass(frozen=True)
class Rule:
    folder: str
    forbidden: tuple[str, ...]
    # If set, every import of a raftkv module must fall under one of these.
    allowed_raftkv: tuple[str, ...] | None = None
    deterministic: bool = False  # no module-level random functions, no dynamic imports
    injected_logger: bool = False  # no logger taken at import time; the embedder passes one
    # File (relative to ROOT) -> forbidden modules it may import all the same.
    exemptions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required: bool = True  # the folder must exist and hold Python files


RULES = {
    # The sans-I/O core: the standard library's pure parts and raftkv.errors only. Its logger
    # arrives in RaftConfig, so the embedder decides where the core's lines go.
    "raft": Rule(
        folder="raftkv/raft",
        forbidden=(
            *IO_AND_CLOCKS,
            "random",
            "os",
            "multiprocessing",
            "selectors",
            "secrets",
            "uuid",
            "raftkv_storage",
            "raftkv_cli",
        ),
        allowed_raftkv=("raftkv.raft", "raftkv.errors"),
        deterministic=True,
        injected_logger=True,
    ),
    # The driver core: every decision around a Ready, as events in and actions out, so the
    # simulator runs the code the server ships. Pure as the Raft core is; its logger is given.
    "driver": Rule(
        folder="raftkv/driver",
        forbidden=(
            *IO_AND_CLOCKS,
            "random",
            "os",
            "multiprocessing",
            "selectors",
            "secrets",
            "uuid",
            "raftkv_storage",
            "raftkv_cli",
        ),
        allowed_raftkv=("raftkv.driver", "raftkv.raft", "raftkv.kv", "raftkv.errors"),
        deterministic=True,
        injected_logger=True,
    ),
    # etcd's KV semantics, pure: applied on every member, so it must give the same result on
    # each, and it must not know about Raft or the server that runs it.
    "kv": Rule(
        folder="raftkv/kv",
        forbidden=(*IO_AND_CLOCKS, "raftkv_storage", "raftkv_cli"),
        allowed_raftkv=("raftkv.kv", "raftkv.errors"),
        deterministic=True,
    ),
    # Pure checkers and test support that the simulator and jepsen/ import: no I/O, no clock,
    # nothing above the core. mutation.py runs the simulator on a mutated copy of the package
    # in child processes; only tests import it.
    "testing": Rule(
        folder="raftkv/testing",
        forbidden=(*IO_AND_CLOCKS, "raftkv_storage", "raftkv_cli"),
        allowed_raftkv=("raftkv.testing", "raftkv.raft", "raftkv.errors"),
        deterministic=True,
        exemptions={"raftkv/testing/mutation.py": ("subprocess",)},
    ),
    # The deterministic simulator runs the production core; nothing in it may read a clock, a
    # socket or a thread. The `python -m raftkv.sim` front-end stands outside the simulated world:
    # it may read the wall clock to stop a batch of seeds at a time budget (each run is still a
    # pure function of its seed). raftkv.kv and the sans-I/O driver core (raftkv.driver) are
    # allowed so the simulator can run the production state machine and driver logic.
    "sim": Rule(
        folder="raftkv/sim",
        forbidden=(
            *IO_AND_CLOCKS,
            "raftkv.server",
            "raftkv.client",
            "raftkv_storage",
            "raftkv_cli",
        ),
        allowed_raftkv=(
            "raftkv.sim",
            "raftkv.raft",
            "raftkv.kv",
            "raftkv.driver",
            "raftkv.testing",
            "raftkv.errors",
        ),
        deterministic=True,
        exemptions={"raftkv/sim/__main__.py": ("time",)},
    ),
    # Nothing in the raftkv package reaches out to the outer folders.
    "raftkv": Rule(folder="raftkv", forbidden=("raftkv_storage", "raftkv_cli")),
    # The LMDB adapter sits beside the simulator, below the server and the CLI.
    "storage": Rule(
        folder="storage",
        forbidden=("raftkv.sim", "raftkv.testing", "raftkv.server", "raftkv.client", "raftkv_cli"),
        required=False,
    ),
    # The peer transport knows its member only as the PeerHandler it is given (as etcd's
    # rafthttp knows only its Raft interface): none of the node side, no storage.
    "peer": Rule(
        folder="raftkv/server/peer",
        forbidden=("lmdb", "raftkv_storage", "raftkv_cli"),
        allowed_raftkv=(
            "raftkv.server.peer",
            "raftkv.raft",
            "raftkv.pb.peer",
            "raftkv.driver.actions",
        ),
    ),
    # HTTP beside gRPC reaches its member through the NodeApi protocol and the gRPC server (its
    # gateway is a gRPC client of the member, as etcd's is): never the driver, the peer
    # transport, the Raft core or storage.
    "http": Rule(
        folder="raftkv/server/http",
        forbidden=("lmdb", "raftkv_storage", "raftkv_cli"),
        allowed_raftkv=(
            "raftkv.server.http",
            "raftkv.server.api",
            "raftkv.server.status",
            "raftkv.server.rpc_stats",
            "raftkv.server.driver_metrics",
            "raftkv.server.maintenance_service",
            "raftkv.pb",
            "raftkv.errors",
        ),
    ),
    # The client library never imports server code.
    "client": Rule(folder="raftkv/client", forbidden=("raftkv.server",), required=False),
    # jepsen/ is a black box: processes, sockets and the client API only.
    "jepsen": Rule(
        folder="jepsen",
        forbidden=("raftkv.raft", "raftkv.sim", "raftkv.server", "raftkv_storage", "raftkv_cli"),
        required=False,
    ),
}


def module_name(path: Path) -> str:
    """The import name of a source file, e.g. storage/env.py -> raftkv_storage.env."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = IMPORT_NAMES.get(parts[0], parts[0])
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """Yield (line, module imported from, [module.name for each imported name])."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base, [f"{base}.{a.name}" for a in node.names]


def _random_misuse(tree: ast.AST) -> Iterator[tuple[int, str]]:
    aliases: set[str] = set()  # names bound to the random module
    class_names = {"Random"}  # names bound to random.Random
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "random"}
        elif isinstance(node, ast.ImportFrom) and node.module == "random" and not node.level:
            for a in node.names:
                if a.name == "Random":
                    class_names.add(a.asname or a.name)
                else:
                    yield node.lineno, f"from random import {a.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr != "Random"
        ):
            yield node.lineno, f"{node.value.id}.{node.attr} (module-level random state)"
        if isinstance(node, ast.Call) and not node.args and not node.keywords:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in class_names or (isinstance(func, ast.Attribute) and name == "Random"):
                yield node.lineno, "Random() without a seed (seeded from the OS)"


def _dynamic_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("__import__", "import_module"):
                yield node.lineno, f"dynamic import {name}() (hidden from this check)"


_ROOT_LOGGER_CALLS = frozenset(
    ("basicConfig", "debug", "info", "warning", "error", "exception", "critical", "log")
)


def _shared_loggers(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """getLogger() outside a function (taken at import time, so not injectable) and calls on
    the root logger (``logging.info(...)``), which no embedder can redirect."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[int, str]]:
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(getattr(func, "value", None), "id", "")
            if name == "getLogger" and not in_function:
                yield node.lineno, "module-level logger (inject it, e.g. RaftConfig.logger)"
            elif owner == "logging" and name in _ROOT_LOGGER_CALLS:
                yield node.lineno, f"logging.{name}() uses the root logger"
        scopes = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        inside = in_function or isinstance(node, scopes)
        for child in ast.iter_child_nodes(node):
            yield from walk(child, inside)

    return walk(tree, False)


def check_source(
    source: str, rule: Rule, module: str, is_package: bool = False, filename: str = "<string>"
) -> list[str]:
    """Every violation of ``rule`` in ``source``, as 'file:line: message' strings."""
    tree = ast.parse(source, filename=filename)
    exempt = rule.exemptions.get(filename, ())
    found: list[tuple[int, str]] = []
    for line, base, names in _imports(tree, module, is_package):
        for target in (base, *names):
            if _under(target, rule.forbidden) and not _under(target, exempt):
                found.append((line, f"imports {target}"))
                break
        if rule.allowed_raftkv is not None and _under(base, ("raftkv",)):
            allowed = rule.allowed_raftkv
            if not _under(base, allowed) and not (names and all(_under(n, allowed) for n in names)):
                found.append((line, f"imports {base} (allowed in raftkv: {', '.join(allowed)})"))
    if rule.deterministic:
        found += _random_misuse(tree)
        found += _dynamic_imports(tree)
    if rule.injected_logger:
        found += _shared_loggers(tree)
    return [f"{filename}:{line}: {message}" for line, message in sorted(set(found))]


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("name", sorted(RULES))
def test_layer_rule(name: str) -> None:
    rule = RULES[name]
    files = _sources(rule.folder)
    if not files:
        if rule.required:
            pytest.fail(f"{rule.folder}/ holds no Python files: did the layer move?")
        pytest.skip(f"{rule.folder}/ has no Python files yet")
    problems: list[str] = []
    for path in files:
        problems += check_source(
            path.read_text(encoding="utf-8"),
            rule,
            module_name(path),
            is_package=path.name == "__init__.py",
            filename=path.relative_to(ROOT).as_posix(),
        )
    assert not problems, f"layer rule {name!r} broken:\n" + "\n".join(problems)


# -- the checker checks itself --------------------------------------------------------------------

BAD_CORE = """\
import time
from asyncio import Queue
import os.path
from raftkv.sim import cluster
from .. import testing
from ..server.driver import NodeDriver
from raftkv import __version__

def f():
    import threading
"""


def test_checker_catches_forbidden_core_imports() -> None:
    problems = check_source(BAD_CORE, RULES["raft"], "raftkv.raft.bad", filename="raft/bad.py")
    lines = sorted(int(p.split(":")[1]) for p in problems)
    assert lines == [1, 2, 3, 4, 5, 6, 7, 10], problems


def test_checker_catches_module_level_randomness() -> None:
    source = """\
import random
import random as rnd
from random import choice, Random as R
x = random.randint(1, 6)
f = rnd.shuffle
r1 = random.Random()
r2 = R()
sr = random.SystemRandom(1)
"""
    problems = check_source(source, RULES["sim"], "raftkv.sim.bad", filename="sim/bad.py")
    lines = sorted(int(p.split(":")[1]) for p in problems)
    assert lines == [3, 4, 5, 6, 7, 8], problems


def test_checker_catches_dynamic_imports() -> None:
    source = "import importlib\nm = importlib.import_module('socket')\nt = __import__('time')\n"
    problems = check_source(source, RULES["sim"], "raftkv.sim.bad", filename="sim/bad.py")
    assert len(problems) == 2, problems


def test_checker_accepts_what_the_layers_allow() -> None:
    core = """\
from __future__ import annotations
import dataclasses
from collections.abc import Sequence
from raftkv import errors
from raftkv.errors import InternalError
from . import types
from .types import Entry
"""
    assert check_source(core, RULES["raft"], "raftkv.raft.ok", filename="raft/ok.py") == []
    sim = """\
import random
from random import Random
import os
from raftkv.raft import RawNode
from raftkv.testing import linearizability
rng = random.Random(42)
other = Random(rng.getrandbits(64))
def make(seed: int) -> random.Random:
    return random.Random(seed)
"""
    assert check_source(sim, RULES["sim"], "raftkv.sim.ok", filename="sim/ok.py") == []


def test_exemption_applies_to_the_named_file_only() -> None:
    rule = RULES["sim"]
    assert (
        check_source("import time\n", rule, "raftkv.sim", filename="raftkv/sim/__main__.py") == []
    )
    assert check_source("import time\n", rule, "raftkv.sim.x", filename="raftkv/sim/x.py") != []


def test_client_and_jepsen_rules() -> None:
    bad_client = "from raftkv.server import app\n"
    assert check_source(bad_client, RULES["client"], "raftkv.client.c") != []
    bad_jepsen = "from raftkv_storage import env\nimport raftkv.sim\nfrom raftkv.raft import x\n"
    assert len(check_source(bad_jepsen, RULES["jepsen"], "jepsen.nemesis")) == 3
    good_jepsen = "from raftkv.client import Client\nfrom raftkv.testing import linearizability\n"
    assert check_source(good_jepsen, RULES["jepsen"], "jepsen.workload") == []


def test_peer_rule_keeps_the_transport_off_the_node_side() -> None:
    rule = RULES["peer"]
    bad = "from raftkv.server.driver import NodeDriver\nfrom ..node import start_node\n"
    assert len(check_source(bad, rule, "raftkv.server.peer.sender")) == 2
    good = (
        "from raftkv.pb.peer import peer_pb2\n"
        "from raftkv.raft.messages import Message\n"
        "from raftkv.server.peer.handler import PeerHandler\n"
        "from .wire import message_to_pb\n"
    )
    assert check_source(good, rule, "raftkv.server.peer.sender") == []


def test_module_names_follow_the_package_mapping() -> None:
    assert module_name(ROOT / "storage" / "env.py") == "raftkv_storage.env"
    assert module_name(ROOT / "cli" / "__init__.py") == "raftkv_cli"
    assert module_name(ROOT / "raftkv" / "raft" / "rawnode.py") == "raftkv.raft.rawnode"


def test_checker_catches_shared_loggers_in_the_core() -> None:
    source = """\
import logging
logger = logging.getLogger(__name__)
from logging import getLogger
log = getLogger("raftkv.raft")
class Node:
    log = logging.getLogger("x")
    def __init__(self, logger=None):
        self.logger = logger or logging.getLogger("raftkv.raft")
        logging.info("root")
        f = lambda: logging.getLogger("ok")
"""
    problems = check_source(source, RULES["raft"], "raftkv.raft.bad", filename="raft/bad.py")
    lines = sorted(int(p.split(":")[1]) for p in problems)
    assert lines == [2, 4, 6, 9], problems


def test_kv_testing_and_sim_rules() -> None:
    bad_kv = "from raftkv.raft.types import Entry\nimport time\nfrom raftkv.pb import x\n"
    assert len(check_source(bad_kv, RULES["kv"], "raftkv.kv.bad")) == 3
    good_kv = "from raftkv.errors import CorruptionError\nfrom raftkv.kv.types import Request\n"
    assert check_source(good_kv, RULES["kv"], "raftkv.kv.ok") == []
    bad_testing = "import asyncio\nfrom raftkv.server.api import NodeApi\nfrom raftkv.kv import x\n"
    assert len(check_source(bad_testing, RULES["testing"], "raftkv.testing.bad")) == 3
    good_testing = "from raftkv.raft.storage import DurableLog\nfrom .history import Op\n"
    assert check_source(good_testing, RULES["testing"], "raftkv.testing.ok") == []
    good_sim = "from raftkv.kv import KVStateMachine\nfrom raftkv.driver import core\n"
    assert check_source(good_sim, RULES["sim"], "raftkv.sim.ok") == []
    bad_sim = "from raftkv.server import fake_node\nfrom raftkv import __version__\n"
    problems = check_source(bad_sim, RULES["sim"], "raftkv.sim.bad")
    assert {int(p.split(":")[1]) for p in problems} == {1, 2}, problems
