"""Errors of the vending service: a stable code and a message; and which database failures are worth a retry."""

from __future__ import annotations

import logging
import sqlite3

import psycopg
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mita.sts import StsError

log = logging.getLogger("mita.vend")

#: PostgreSQL's SQLSTATE for "disk full" (class 53, insufficient resources): a table, an index or a temporary
#: file could not grow. Its WAL failing to grow is no error but a PANIC: the connection is lost, not typed.
DISK_FULL_SQLSTATE = "53100"


class VendError(StsError):
    """A refused request, with a stable code (the HTTP shell maps codes to statuses: ``mita.api.codes``).
    Nothing was changed when this is raised."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_transient(exc: BaseException) -> bool:
    """Whether a database failure may pass if the same request is tried again.

    Only a lost or refused connection, a lock or statement timeout, and a serialisation failure or
    deadlock (all ``OperationalError`` in psycopg and SQLite, or a disconnect SQLAlchemy noticed) are.
    A constraint, type or syntax error fails the same way every time: retrying it only hides a fault.
    """
    if isinstance(exc, DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or exc.orig is None or is_transient(exc.orig)
    if isinstance(exc, psycopg.Error):
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return type(exc).__name__ in ("OperationalError", "InterfaceError")  # sqlite3's, and any DB-API driver's


def is_disk_full(exc: BaseException) -> bool:
    """Whether the database failed for want of disk space: PostgreSQL's ``DiskFull`` (SQLSTATE 53100) or SQLite's
    ``SQLITE_FULL`` ("database or disk is full"). Both are transient (room may be made), but an operator must act,
    which a plain "retry" does not tell them."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(orig, psycopg.Error):
        return orig.sqlstate == DISK_FULL_SQLSTATE
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)  # the extended code; its low byte is the primary one
        return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "database or disk is full" in str(orig)
    return False


def database_failure(
    exc: BaseException, retry_code: str = "database_unavailable", retry_hint: str = "retry later"
) -> VendError:
    """The typed error for a database failure, without its statement or parameters (they may hold secrets).

    A full disk answers ``disk_full`` (503, and one warning in the log: the operator must make room); other
    transient failures answer ``retry_code`` (503: try again; for a vend, with the same Idempotency-Key), and so
    does a pool with no connection free in time; deterministic refusals answer ``database_refused`` (500), naming
    the constraint when there is one.

    The message is the client's ``detail``, so it says what the client needs to know: with no statement running,
    a connection that could not be made ("could not connect") is told apart from one lost at a commit, whose
    outcome is unknown: a vend may have been committed, and only a retry with the same Idempotency-Key says.
    """
    if isinstance(exc, PoolTimeout):  # SQLAlchemy's own, no driver error: every connection was busy
        return VendError(retry_code, f"no database connection was free in time; {retry_hint}")
    if is_disk_full(exc):
        log.warning("the database's disk is full (%s): writes refused until there is room", _driver_error(exc))
        return VendError("disk_full", f"the database's disk is full ({_driver_error(exc)}); {retry_hint}")
    if is_transient(exc):
        driver = _driver_error(exc)
        if isinstance(exc, DBAPIError) and exc.statement is None:  # no statement: the connection itself failed
            lost = "the connection to the database was lost before it confirmed"  # at a commit: outcome unknown
            what = lost if _lost(exc) else "could not connect to the database"
            return VendError(retry_code, f"{what} ({driver}); {retry_hint}")
        return VendError(retry_code, f"the database did not confirm the operation ({driver}); {retry_hint}")
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    what = f" (constraint {constraint})" if constraint else ""
    return VendError("database_refused", f"the database refused the operation: {_driver_error(exc)}{what}")


def _lost(exc: DBAPIError) -> bool:
    """Whether an established connection was lost (SQLAlchemy invalidated it), not a connection attempt that
    failed: psycopg gives the attempt's error its ``pgconn``, which a lost connection's error lacks."""
    return exc.connection_invalidated and not (isinstance(exc.orig, psycopg.Error) and exc.orig.pgconn is not None)


def _driver_error(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return type(orig).__name__
