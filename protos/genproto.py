"""Generate the Python modules for protos/**/*.proto into raftkv/pb/, or check they are current.

    python protos/genproto.py           regenerate raftkv/pb/**/*_pb2*.py{,i} in place
    python protos/genproto.py --check   regenerate into a temporary directory and compare

Each .proto's path under protos/ is its Python module path (protos/raftkv/pb/mvccpb/kv.proto
becomes raftkv.pb.mvccpb.kv_pb2), whatever its proto package is (docs/decisions.md §6).

Per .proto, protoc writes ``X_pb2.py`` (messages), ``X_pb2_grpc.py`` (services), and
mypy-protobuf writes the stubs ``X_pb2.pyi`` and ``X_pb2_grpc.pyi`` (with grpc.aio types). Both
generators are pinned exactly in pyproject's dev extra and their output is committed, so this
script refuses to run with other versions: the output would differ. Hand-written files in
raftkv/pb (the ``__init__.py`` files) are never touched, only required to exist.

Exit status: 0 when done or up to date, 1 when --check finds a difference, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT_PACKAGE = Path("raftkv", "pb")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
PINNED_GENERATORS = ("grpcio-tools", "mypy-protobuf")


class SetupError(Exception):
    """The environment cannot produce the committed output."""


def proto_files() -> list[Path]:
    """Every .proto under protos/raftkv/pb, relative to protos/, in a stable order."""
    files = sorted(
        p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.joinpath(OUTPUT_PACKAGE).rglob("*.proto")
    )
    if not files:
        raise SetupError(f"no .proto files under {PROTO_ROOT / OUTPUT_PACKAGE}")
    return files


def _pinned_versions() -> dict[str, str]:
    """The exact generator versions from pyproject's dev extra (``name==version``)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras: dict[str, list[str]] = tomllib.load(f)["project"]["optional-dependencies"]
    pins = {}
    for requirement in extras.get("dev", []):
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;]+)\s*", requirement)
        if match and match[1].lower() in PINNED_GENERATORS:
            pins[match[1].lower()] = match[2]
    return pins


def check_generator_versions() -> None:
    for name, wanted in sorted(_pinned_versions().items()):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SetupError(f"{name} is not installed: pip install '{name}=={wanted}'") from None
        if found != wanted:
            raise SetupError(
                f"{name} {found} is installed, but the committed code was generated with "
                f"{wanted}: pip install '{name}=={wanted}'"
            )


def _plugin(name: str) -> Path:
    """A protoc plugin installed as a console script next to this interpreter (or on PATH)."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, Path(sys.executable).parent / name):
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    if found is None:
        raise SetupError(f"protoc plugin {name!r} not found: pip install mypy-protobuf")
    return Path(found)


def generate(out_dir: Path) -> None:
    """Run protoc over every .proto, writing modules under ``out_dir``/raftkv/pb/.

    ``python -m grpc_tools.protoc`` adds the bundled well-known types to the include path.
    """
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "--proto_path=.",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        # mypy-protobuf's stubs replace protoc's own --pyi_out (both would write X_pb2.pyi).
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(p.as_posix() for p in proto_files()),
    ]
    # Run from protos/ so that nothing in the output depends on where the checkout lives.
    proc = subprocess.run(args, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(f"protoc failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")


def generated_files(root: Path) -> set[Path]:
    """Generated modules under ``root``/raftkv/pb, relative to ``root``."""
    base = root / OUTPUT_PACKAGE
    if not base.is_dir():
        return set()
    return {
        p.relative_to(root)
        for p in base.rglob("*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES) and "__pycache__" not in p.parts
    }


def missing_init_files(files: set[Path]) -> list[Path]:
    """Package directories (raftkv/pb and below) holding generated code but no __init__.py."""
    dirs = {OUTPUT_PACKAGE} | {f.parent for f in files}
    for d in list(dirs):
        dirs.update(p for p in d.parents if OUTPUT_PACKAGE in (p, *p.parents))
    return sorted(d / "__init__.py" for d in dirs if not (ROOT / d / "__init__.py").is_file())


def differences(fresh_root: Path) -> list[str]:
    """How the committed generated files differ from a fresh generation in ``fresh_root``."""
    fresh = generated_files(fresh_root)
    committed = generated_files(ROOT)
    problems = [f"missing (not generated yet): {p}" for p in sorted(fresh - committed)]
    problems += [f"stale (no .proto produces it): {p}" for p in sorted(committed - fresh)]
    problems += [
        f"out of date: {p}"
        for p in sorted(fresh & committed)
        if not filecmp.cmp(fresh_root / p, ROOT / p, shallow=False)
    ]
    problems += [f"missing hand-written package file: {p}" for p in missing_init_files(fresh)]
    return problems


def write(fresh_root: Path) -> list[Path]:
    """Replace the committed generated files with the fresh ones; returns what changed."""
    fresh = generated_files(fresh_root)
    changed = []
    for stale in sorted(generated_files(ROOT) - fresh):
        (ROOT / stale).unlink()
        changed.append(stale)
    for path in sorted(fresh):
        target = ROOT / path
        if target.is_file() and filecmp.cmp(fresh_root / path, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fresh_root / path, target)
        changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if raftkv/pb differs",
    )
    args = parser.parse_args(argv)
    try:
        check_generator_versions()
        with tempfile.TemporaryDirectory(prefix="genproto-") as tmp:
            generate(Path(tmp))
            if args.check:
                problems = differences(Path(tmp))
                if problems:
                    print("genproto: raftkv/pb does not match protos/:", file=sys.stderr)
                    for problem in problems:
                        print(f"  {problem}", file=sys.stderr)
                    print("Run `python protos/genproto.py` and commit the result.", file=sys.stderr)
                    return 1
                print(f"genproto: raftkv/pb is up to date ({len(proto_files())} .proto files)")
                return 0
            changed = write(Path(tmp))
    except SetupError as e:
        print(f"genproto: {e}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"genproto: wrote {path}")
    if not changed:
        print("genproto: raftkv/pb was already up to date")
    missing = missing_init_files(generated_files(ROOT))
    for path in missing:
        print(f"genproto: add a hand-written {path} (a package needs one)", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
