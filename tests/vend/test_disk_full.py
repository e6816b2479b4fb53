"""A full disk is its own answer (``disk_full``, 503 with Retry-After, one warning in the log), not a "retry" that
tells the operator nothing: PostgreSQL's DiskFull (SQLSTATE 53100) and SQLite's SQLITE_FULL alike."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from mita.api.problems import refusal
from mita.vend.errors import database_failure, is_disk_full, is_transient


def sqlite_full(path: Path) -> DBAPIError:
    """The error SQLite itself raises when its file cannot grow (capped at a few pages: no full disk needed)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x BLOB)"))
        with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
            conn.execute(text("PRAGMA max_page_count = 3"))
            conn.execute(text("INSERT INTO t VALUES (zeroblob(100000))"))
        return caught.value
    finally:
        engine.dispose()


def test_sqlite_s_own_full_error_is_disk_full(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exc = sqlite_full(tmp_path / "small.db")
    assert isinstance(exc.orig, sqlite3.OperationalError) and exc.orig.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert is_disk_full(exc) and is_transient(exc)  # transient: the worker keeps trying, room may be made
    caplog.set_level(logging.WARNING, "mita.vend")
    failure = database_failure(exc, "retry", "retry with the same Idempotency-Key")
    assert failure.code == "disk_full"
    assert str(failure) == "the database's disk is full (OperationalError); retry with the same Idempotency-Key"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "the database's disk is full (OperationalError): writes refused until there is room")
    ]
    answer = refusal(failure)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"


def test_postgres_s_disk_full_is_disk_full_and_its_other_resource_errors_are_not() -> None:
    full = OperationalError("INSERT INTO vends ...", {}, psycopg.errors.DiskFull("could not extend file"))
    assert is_disk_full(full) and database_failure(full).code == "disk_full"
    for other in (psycopg.errors.OutOfMemory("out of memory"), psycopg.errors.TooManyConnections("too many")):
        wrapped = OperationalError("SELECT 1", {}, other)
        assert not is_disk_full(wrapped) and database_failure(wrapped, "retry").code == "retry"
    locked = OperationalError("UPDATE meters ...", {}, sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(locked) and database_failure(locked).code == "database_unavailable"
