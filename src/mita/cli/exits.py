"""The exit codes of every ``mita`` command: one table, :data:`TABLE`, here and nowhere else (``mita help
exit-codes`` and the epilog of ``mita --help`` print it; the README quotes it).

Every error is one line on standard error, ``error[<code>]: <message>`` (a usage error's code is ``usage``); never a
traceback and never a database driver's text. ``mita meter enter`` prints its JSON answer on standard output whatever
the meter did, and exits with the meter's class of rejection, so a script can branch without parsing.
"""

from __future__ import annotations

OK = 0
REFUSED = 1
USAGE = 2
DATABASE = 3
CHECK_FAILED = 4
TOKEN_INVALID = 10
TOKEN_OLD = 11
TOKEN_USED = 12
KEY_EXPIRED = 13
OVERFLOW = 14
LOCKED_OUT = 15
INTERRUPTED = 130

#: (code, name, meaning) for ``mita help exit-codes``.
TABLE: tuple[tuple[int, str, str], ...] = (
    (OK, "ok", "done; mita meter enter: the meter accepted the token"),
    (REFUSED, "refused", "a typed error: bad input, an unreadable key, a service's refusal"),
    (USAGE, "usage", "the command line is wrong: unknown option, missing argument, invalid choice"),
    (DATABASE, "database", "the database is missing, not migrated, unreachable, or refused the operation"),
    (CHECK_FAILED, "check_failed", "a check found differences: db check (schema drift), conformance (a case)"),
    (TOKEN_INVALID, "token_invalid", "meter enter: crc_error, format_error, range_error, unsupported, "
                                     "key_type_error, ddtk"),
    (TOKEN_OLD, "token_old", "meter enter: old (older than every TID the meter remembers)"),
    (TOKEN_USED, "token_used", "meter enter: used (entered before)"),
    (KEY_EXPIRED, "key_expired", "meter enter: key_expired"),
    (OVERFLOW, "overflow", "meter enter: overflow (the register would overflow)"),
    (LOCKED_OUT, "locked_out", "meter enter: locked_out (too many bad tokens)"),
    (INTERRUPTED, "interrupted", "stopped with Ctrl-C"),
)  # fmt: skip

#: What ``mita meter enter`` exits with, by the meter's result (:class:`mita.meter.model.Result` values).
METER_RESULTS: dict[str, int] = {
    "accept": OK,
    "kct_pending": OK,
    "key_changed": OK,
    "crc_error": TOKEN_INVALID,
    "format_error": TOKEN_INVALID,
    "range_error": TOKEN_INVALID,
    "unsupported": TOKEN_INVALID,
    "key_type_error": TOKEN_INVALID,
    "ddtk": TOKEN_INVALID,
    "old": TOKEN_OLD,
    "used": TOKEN_USED,
    "key_expired": KEY_EXPIRED,
    "overflow": OVERFLOW,
    "locked_out": LOCKED_OUT,
}

#: Error codes that mean the database, not the request: exit :data:`DATABASE`.
DATABASE_CODES = frozenset(
    {"database_missing", "schema_outdated", "database_unavailable", "database_refused", "database_error"}
)

#: Error codes that mean a check ran and found differences: exit :data:`CHECK_FAILED`.
CHECK_CODES = frozenset({"schema_drift", "conformance_failed", "disagreement"})


def for_error(code: str) -> int:
    """The exit code of a typed error with ``code``."""
    if code == "usage":
        return USAGE
    if code in DATABASE_CODES:
        return DATABASE
    if code in CHECK_CODES:
        return CHECK_FAILED
    return REFUSED


def for_meter_result(result: str) -> int:
    """The exit code of ``mita meter enter`` when the meter answered ``result``."""
    return METER_RESULTS.get(result, TOKEN_INVALID)


def describe() -> str:
    """The table as text, for ``mita help exit-codes`` and the epilog of ``mita --help``."""
    return "\n".join(f"  {code:>3}  {name:<14} {meaning}" for code, name, meaning in TABLE)
