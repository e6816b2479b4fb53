"""The architecture is checked by machine: the import contracts in pyproject.toml (``lint-imports``) hold for the
tree as it is, and fail on a planted violation (so a green check means something)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with this project's contracts over the package in ``tree/src``."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(
        [LINT, "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def copy_of_the_tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "mita", tmp_path / "src" / "mita", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_import_contracts(tmp_path: Path) -> None:
    result = lint(copy_of_the_tree(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_a_planted_violation_breaks_a_contract(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    (tree / "src" / "mita" / "sts" / "planted.py").write_text("from mita.vend import database  # noqa\n")
    (tree / "src" / "mita" / "meter" / "planted.py").write_text("import sqlalchemy  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "mita.sts is not allowed to import mita.vend" in result.stdout
    assert "mita.meter.planted -> sqlalchemy" in result.stdout
