"""The checker's snapshot read from a SQLite file, so that the same invariants judge Mita's default database.

:mod:`.checker` reads PostgreSQL; its queries are plain SQL but for the audit trigger's lookup (``pg_trigger``).
Here the same queries run on one read-only SQLite connection (after ``PRAGMA integrity_check``: a corrupt file
fails before any invariant is asked), and SQLite's two append-only triggers stand for PostgreSQL's one.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

from . import checker
from .history import read

#: SQLite's triggers that together do what PostgreSQL's ``audit_no_change`` does.
APPEND_ONLY = frozenset({"audit_no_update", "audit_no_delete"})


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check``'s answer (``ok`` for a sound file), on its own read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))


def snapshot(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table the invariants read, in one read transaction of one connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN")
        db = {
            name: [dict(row) for row in conn.execute(sql)]
            for name, sql in checker.SNAPSHOT.items()
            if name != "triggers"
        }
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        db["triggers"] = [{"tgname": "audit_no_change"}] if names >= APPEND_ONLY else []
        conn.execute("COMMIT")
    finally:
        conn.close()
    return db


def check(history: Path, path: Path, vending_key: bytes, *, drained: bool = False) -> checker.Report:
    story = checker.load_history(history)
    return checker.Checker(story, snapshot(path), vending_key, drained).run()


def drain(path: Path, seconds: float) -> bool:
    """Wait until no outbox row is pending (or ``seconds`` pass); one short read connection at a time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute("SELECT count(*) FROM outbox WHERE status <> 'sent'").fetchone()
        if row is not None and row[0] == 0:
            return True
        time.sleep(0.2)
    return False


def answered_vends(history: Path) -> int:
    """How many distinct vends the history holds an answer for (what the database must hold at least)."""
    return len({r["value"]["vend_id"] for r in read(history) if r["type"] == "ok" and (r.get("value") or {})})
