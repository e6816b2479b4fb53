"""Start the HTTP API: what ``mita serve`` does once the schema is migrated.

uvicorn runs ``mita.api.app:app_from_env`` in ``workers`` processes. Each is a fresh interpreter, so what they
need travels in the environment: the database URL (``MITA_DATABASE_URL``, read by their settings) and, with more
than one worker, the folder where each counts its metrics (``PROMETHEUS_MULTIPROC_DIR``, a new temporary folder
for this run, removed at its end, so that a scrape answered by any worker adds up every worker's counts and
never a previous run's). Logging is configured in every process alike (:func:`mita.api.logs.config`): one
start-up line once the server accepts connections, then one access line per request, as text or JSON lines.

The start-up line waits for the socket to take a connection: uvicorn names its address as soon as it has bound it
(with several workers, before any of them listens), so :class:`Announce` takes that address from uvicorn's record
and says "listening" only once a connection to it succeeds.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mita import __version__

from . import logs
from .metrics import MULTIPROC_ENV

APP = "mita.api.app:app_from_env"
RUNNING = "Uvicorn running on %s://%s:%d"  # uvicorn's record once its socket is bound (stable since 2019)
WORKER_HEALTHCHECK_S = 30
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # where to knock for "any address"

server_log = logging.getLogger("mita.server")


def shown_url(database_url: str) -> str:
    """The database URL as it may be printed: its password replaced by ``***``."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"  # never echoed: it may hold a password where the parser did not expect one


class Announce(logging.Filter):
    """Sees uvicorn's records (a filter of its log handler): the "running on" one starts a thread that writes the
    start-up line once the address takes connections; that record itself is not written."""

    def __init__(self, database: str = "", workers: int = 1) -> None:
        super().__init__()
        self.database = database
        self.workers = workers

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(RUNNING)):
            return True
        if isinstance(record.args, tuple) and len(record.args) == 3:
            scheme, host, port = record.args
            args = (str(scheme), str(host), int(port))  # type: ignore[call-overload]
            threading.Thread(target=self.announce, args=args, name="mita-announce", daemon=True).start()
        return False

    def announce(self, scheme: str, host: str, port: int) -> None:
        knock = WILDCARDS.get(host, host)
        while True:  # a daemon thread: it ends with the server if no worker ever listens
            try:
                socket.create_connection((knock, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        many = "" if self.workers == 1 else "s"
        fields = {"url": url, "database": self.database, "workers": self.workers, "version": __version__}
        server_log.info(
            "listening on %s (database %s, %d worker%s, mita %s)", url, self.database, self.workers, many,
            __version__, extra={"fields": fields},
        )  # fmt: skip


def run(*, host: str, port: int, workers: int, log_format: str, database_url: str) -> None:
    """Serve the API on ``host:port`` (port 0: a free one, named in the start-up line) until stopped.

    ``log_format`` is ``text`` or ``json`` (a ``ValueError`` otherwise, before anything starts).
    """
    import uvicorn  # only the serving process needs it

    on_start = {"()": f"{__name__}.Announce", "database": shown_url(database_url), "workers": workers}
    log_config = logs.config(log_format, on_start=on_start)
    os.environ["MITA_DATABASE_URL"] = database_url
    metrics_dir = tempfile.mkdtemp(prefix="mita-metrics-") if workers > 1 else None
    if metrics_dir is not None:
        os.environ[MULTIPROC_ENV] = metrics_dir
    else:
        os.environ.pop(MULTIPROC_ENV, None)  # one process counts in memory
    try:
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=log_config,
            access_log=False,  # mita.api.observe writes the access log, with request ids
            # uvicorn kills a worker that does not answer its health check in time (5 s by default): on a busy
            # machine a worker still importing misses it, and is killed and restarted before it ever serves
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        )
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
