"""How the server's log lines look: text for a terminal, JSON lines for a log collector (``--log-format json``).

Everything goes through the standard :mod:`logging` module, one line per record on standard error: the start-up
line (``mita.server``, made from uvicorn's own "running on" record by :class:`Announce`), the access log
(``mita.access``), the application's own warnings (``mita.*``) and uvicorn's warnings and errors (its access log
is off: :mod:`.observe` writes ours). A record may carry structured ``fields`` (``extra={"fields": {...}}``): the
JSON format writes them as keys, the text format has them in its message already. The request being answered
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

from mita import __version__

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


class Announce(logging.Filter):
    """uvicorn's records, for Mita's log: its "Uvicorn running on <url>" (logged once the socket listens, by the
    one process that bound it) becomes the start-up line; its other news (process started, startup complete...)
    is dropped; its warnings and errors pass."""

    RUNNING = "Uvicorn running on %s://%s:%d"

    def __init__(self, database: str = "", workers: int = 1) -> None:
        super().__init__()
        self.database = database
        self.workers = workers

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if not (isinstance(record.msg, str) and record.msg.startswith(self.RUNNING)):
            return False
        if not (isinstance(record.args, tuple) and len(record.args) == 3):
            return False
        scheme, host, port = record.args
        url = f"{scheme}://[{host}]:{port}" if ":" in str(host) else f"{scheme}://{host}:{port}"
        record.name = "mita.server"
        record.msg = "listening on %s (database %s, %d worker%s, mita %s)"
        record.args = (url, self.database, self.workers, "" if self.workers == 1 else "s", __version__)
        record.fields = {"url": url, "database": self.database, "workers": self.workers, "version": __version__}
        return True


def config(log_format: str, *, database: str = "", workers: int = 1) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping (uvicorn applies it in the server process and in each
    worker): Mita's loggers at INFO, uvicorn's warnings and its start-up line (:class:`Announce`, saying
    ``database`` and ``workers``), all on standard error in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    stderr = {"class": "logging.StreamHandler", "formatter": "mita", "stream": "ext://sys.stderr"}
    announce = {"()": f"{__name__}.Announce", "database": database, "workers": workers}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mita": {"()": f"{__name__}.{formatter.__qualname__}"}},
        "filters": {"announce": announce},
        "handlers": {"mita": stderr, "uvicorn": {**stderr, "filters": ["announce"]}},
        "loggers": {
            "mita": {"handlers": ["mita"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["uvicorn"], "level": "INFO", "propagate": False},
        },
    }
