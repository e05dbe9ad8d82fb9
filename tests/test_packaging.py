"""The wheel holds exactly raftkv, raftkv_storage and raftkv_cli (docs/decisions.md §1).

setuptools is given an explicit package list (``package-dir`` maps storage/ and cli/ to
``raftkv_storage`` and ``raftkv_cli``), so a new package directory that nobody adds to the list is
silently left out of the wheel. These tests build the wheel from a copy of the working tree and
compare it with the source folders.
"""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import raftkv

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> import name.
PACKAGE_ROOTS = {"raftkv": "raftkv", "storage": "raftkv_storage", "cli": "raftkv_cli"}
TOP_LEVEL = set(PACKAGE_ROOTS.values())

# Not copied into the build tree: VCS data, caches, earlier build output, local environments.
_SKIP_AT_ROOT = {".git", "build", "dist", ".venv", "venv", "results", "sim-failures"}
_SKIP_ANYWHERE = ("__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache")


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(shutil.ignore_patterns(*_SKIP_ANYWHERE)(directory, names))
    if Path(directory) == ROOT:
        skipped |= _SKIP_AT_ROOT & set(names)
    return skipped


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # Build from a copy: an in-tree build would reuse (and ship) stale files from build/lib.
    shutil.copytree(ROOT, src, ignore=_ignore, symlinks=True)
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp), "."]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout}\n{proc.stderr}"
    (path,) = tmp.glob("*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _listed_packages() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        packages: list[str] = tomllib.load(f)["tool"]["setuptools"]["packages"]
    return packages


def _import_name(directory: Path) -> str:
    folder, *rest = directory.relative_to(ROOT).parts
    return ".".join([PACKAGE_ROOTS[folder], *rest])


def _source_dirs() -> list[Path]:
    """Every directory under the package folders that holds Python source."""
    dirs = set()
    for folder in PACKAGE_ROOTS:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                dirs.add(path.parent)
    return sorted(dirs)


def test_every_source_directory_is_a_listed_package() -> None:
    listed = set(_listed_packages())
    for directory in _source_dirs():
        rel = directory.relative_to(ROOT)
        assert (directory / "__init__.py").exists(), (
            f"{rel}/ holds Python files but no __init__.py: setuptools would leave it out"
        )
        name = _import_name(directory)
        assert name in listed, f"{rel}/ is package {name!r}: add it to [tool.setuptools] packages"


def test_every_listed_package_exists() -> None:
    sources = {_import_name(d) for d in _source_dirs()}
    missing = [name for name in _listed_packages() if name not in sources]
    assert not missing, f"listed in pyproject but no such package directory: {missing}"


def test_wheel_holds_only_the_three_packages(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert dist_info == {f"raftkv-{raftkv.__version__}.dist-info"}
    assert tops - dist_info == TOP_LEVEL
    assert not tops & {"storage", "cli", "tests", "jepsen", "protos", "docs"}


def test_wheel_holds_every_source_module(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = []
    for directory in _source_dirs():
        target = _import_name(directory).replace(".", "/")
        for path in sorted(directory.glob("*.py*")):
            if path.suffix in (".py", ".pyi") and f"{target}/{path.name}" not in names:
                missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"source files missing from the wheel: {missing}"


def test_each_package_ships_py_typed(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for top in sorted(TOP_LEVEL):
        assert f"{top}/py.typed" in names, f"{top} does not ship py.typed"


def test_console_script_is_declared(wheel: zipfile.ZipFile) -> None:
    dist_info = f"raftkv-{raftkv.__version__}.dist-info"
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(f"{dist_info}/entry_points.txt").decode())
    assert entry_points["console_scripts"]["raftkv"].strip() == "raftkv_cli.main:main"


def test_console_script_target_runs() -> None:
    from raftkv_cli.main import main

    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert (result.exit_code, result.output) == (0, f"raftkv {raftkv.__version__}\n")
    # Not there yet: it must say so and fail, not pretend.
    assert runner.invoke(main, ["cluster", "up", "--help"]).exit_code == 0


def test_generic_names_are_not_importable() -> None:
    # Fails under plain `python -m pytest` from the repo root, which puts the cwd on sys.path:
    # run the `pytest` script, or set PYTHONSAFEPATH=1.
    assert importlib.util.find_spec("storage") is None
    assert importlib.util.find_spec("cli") is None
