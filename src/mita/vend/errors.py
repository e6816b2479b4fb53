"""Errors of the vending service: a stable code, a message, and the HTTP status it maps to."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError, DisconnectionError

from mita.sts import StsError

STATUS = {
    "not_found": 404,
    "conflict": 409,
    "in_progress": 409,
    "idempotency_conflict": 422,
    "key_change_required": 409,
    "forbidden": 403,
    "unauthorized": 401,
    "retry": 503,
    "database_unavailable": 503,
    "unsafe_database": 503,
    "schema_outdated": 503,
    "database_refused": 500,
    "credit_limit": 402,
    "reversal_window_closed": 409,
    "already_reversed": 409,
    "meter_blocked": 409,
    "no_pending_key": 409,
    "reversed": 409,
    "not_reversible": 409,
    "key_change_superseded": 409,
    "key_expired": 409,
    "key_credit_limit": 402,
}


class VendError(StsError):
    """A refused request. Nothing was changed when this is raised."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status or STATUS.get(code, 422)


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


def database_failure(
    exc: BaseException, retry_code: str = "database_unavailable", retry_hint: str = "retry later"
) -> VendError:
    """The typed error for a database failure, without its statement or parameters (they may hold secrets).

    Transient failures answer ``retry_code`` (503: try again; for a vend, with the same Idempotency-Key);
    deterministic refusals answer ``database_refused`` (500), naming the constraint when there is one.
    """
    if is_transient(exc):
        return VendError(retry_code, f"the database did not confirm the operation ({_driver_error(exc)}); {retry_hint}")
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    what = f" (constraint {constraint})" if constraint else ""
    return VendError("database_refused", f"the database refused the operation: {_driver_error(exc)}{what}")


def _driver_error(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return type(orig).__name__
