"""The architecture is checked by machine: the import contracts in pyproject.toml (``lint-imports``) hold for the
tree as it is, and fail on a planted violation (so a green check means something)."""

from __future__ import annotations

import ast
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


#: The tables a payment channel owns. Everything else (vends, tokens, meters, customers, the ledger, the outbox)
#: a channel reaches through the vending service, the registry and the outbox's functions (issue 14).
CHANNEL_TABLES = frozenset({"payments", "payment_events", "pos_purchases", "sms_messages", "sms_inbound"})


def tables_named(package: Path) -> dict[str, set[str]]:
    """Each module's names imported from ``mita.vend.schema``, and any raw SQL it sends, by file."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "mita.vend.schema"
            for alias in node.names
        }
        raw = {
            "raw SQL"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in {"text", "exec_driver_sql"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
        }
        if names | raw:
            found[str(path.relative_to(package))] = names | raw
    return found


def test_channels_speak_sql_only_to_their_own_tables() -> None:
    found = tables_named(ROOT / "src" / "mita" / "channels")
    assert found, "the scan found no table at all: it is looking in the wrong place"
    strays = {module: names - CHANNEL_TABLES for module, names in found.items() if names - CHANNEL_TABLES}
    assert not strays, strays


def test_the_channel_scan_sees_a_vending_table_and_raw_sql(tmp_path: Path) -> None:
    (tmp_path / "planted.py").write_text(
        "from mita.vend.schema import payments, vends\nfrom sqlalchemy import text\nq = text('DELETE FROM tokens')\n"
    )
    assert tables_named(tmp_path) == {"planted.py": {"payments", "vends", "raw SQL"}}
