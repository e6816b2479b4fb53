"""How the server's log lines look: text for a terminal, JSON lines for a log collector (``--log-format json``).

Everything goes through the standard :mod:`logging` module, one line per record on standard error: the start-up
line (``mita.server``, written by :mod:`.launch`), the access log
(``mita.access``), the application's own warnings (``mita.*``), uvicorn's warnings and errors (its access log
is off: :mod:`.observe` writes ours), and other libraries' warnings and errors (psycopg's, SQLAlchemy's pool's:
:class:`Foreign`) and Python's warnings (``py.warnings``), which would otherwise reach standard error raw. A
record may carry structured ``fields`` (``extra={"fields": {...}}``): the JSON format writes them as keys, the
text format has them in its message already. The request being answered
(:data:`REQUEST_ID`) is added to every record logged while it runs, whichever logger wrote it.

Times are UTC in RFC 3339 with milliseconds (``2026-01-31T08:00:00.123Z``): a line means the same wherever it is
read. JSON lines take a dozen lines of the standard library, so no formatter library is needed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from contextvars import ContextVar
from typing import Any

from mita.oneline import log_warnings

LOG_FORMATS = ("text", "json")

#: The id of the request being answered (set by :class:`mita.api.observe.Observe`; copied into the threads the
#: routes run in, like every context variable).
REQUEST_ID: ContextVar[str | None] = ContextVar("mita_request_id", default=None)


def utc_time(created: float) -> str:
    """``2026-01-31T08:00:00.123Z``: RFC 3339, UTC, milliseconds."""
    return dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message> [rid=<request id>]`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{utc_time(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        rid = REQUEST_ID.get()
        if rid is not None and record.name != "mita.access":  # the access line names it already
            line += f" rid={rid}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``pid``, the request id and the
    record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class UvicornNews(logging.Filter):
    """uvicorn's warnings and errors pass, and its word that a worker died (and is replaced); its other news
    (process started, startup complete, running on...) does not: the start-up line (:mod:`.launch`) says what
    matters once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or str(record.msg).startswith("Child process")


#: Loggers of libraries that deal with a broken connection themselves (SQLAlchemy's pool resets or discards it,
#: psycopg ignores an error in a rollback): at most a warning in Mita's log, whatever level they chose.
CONNECTION_LOGGERS = ("sqlalchemy.pool", "psycopg")


class Foreign(logging.Filter):
    """Other libraries' records, as one line in Mita's format: a traceback becomes its exceptions' class names
    (its text can hold a statement's parameters, as SQLAlchemy's errors print them, or a piece of a connection
    string libpq could not parse), and a connection pool's or driver's error about one connection, which it has
    dealt with, is a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a library's bad format: the handler reports it as usual
            return True
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            cause = exc.__cause__ or getattr(exc, "orig", None)
            message += f" ({type(exc).__name__}" + (f" from {type(cause).__name__}" if cause is not None else "") + ")"
        record.msg = " | ".join(part.strip() for part in message.splitlines() if part.strip())
        record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
        if record.levelno > logging.WARNING and any(
            record.name == name or record.name.startswith(name + ".") for name in CONNECTION_LOGGERS
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def foreign_records() -> Foreign:
    """The :class:`Foreign` filter, for :func:`config`; making it also sends Python's warnings to the log
    (``py.warnings``, one line each: :func:`mita.oneline.log_warnings`, which the workers call too) and makes
    records lean (:func:`lean_records`). ``dictConfig`` calls it in each process uvicorn starts: it has no other
    hook."""
    log_warnings()
    lean_records()
    return Foreign()


def lean_records() -> None:
    """Records without what neither format writes: the caller's file and line (a walk up the stack for every
    record), the thread's and the process's names (the JSON format reads the pid itself). These are the standard
    library's own switches (its logging HOWTO, "Optimization"); the access line is written for every request."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def config(log_format: str, *, on_start: dict[str, Any] | None = None) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping (uvicorn applies it in the server process and in each
    worker): Mita's loggers at INFO, uvicorn's and other libraries' warnings and errors (:class:`Foreign`) and
    Python's warnings, all on standard error in ``log_format``.
    ``on_start`` is the factory of a filter for uvicorn's records that sees its "running on" record (the
    start-up line of :mod:`.launch`)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    stderr = {"class": "logging.StreamHandler", "formatter": "mita", "stream": "ext://sys.stderr"}
    filters: dict[str, Any] = {"start": on_start} if on_start is not None else {}  # before the news filter drops it
    filters["news"] = {"()": f"{__name__}.UvicornNews"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mita": {"()": f"{__name__}.{formatter.__qualname__}"}},
        "filters": {**filters, "foreign": {"()": f"{__name__}.{foreign_records.__name__}"}},
        "handlers": {
            "mita": stderr,
            "uvicorn": {**stderr, "filters": list(filters)},
            "foreign": {**stderr, "filters": ["foreign"]},
        },
        "loggers": {
            "mita": {"handlers": ["mita"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["uvicorn"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["foreign"], "level": "WARNING"},  # else Python's last resort writes them raw
    }
