"""Start the HTTP API: what ``mita serve`` does once the schema is migrated.

uvicorn runs ``mita.api.app:app_from_env`` in ``workers`` processes. Each is a fresh interpreter, so what they
need travels in the environment: the database URL (``MITA_DATABASE_URL``, read by their settings) and, with more
than one worker, the folder where each counts its metrics (``PROMETHEUS_MULTIPROC_DIR``, a new temporary folder
for this run, removed at its end, so that a scrape answered by any worker adds up every worker's counts and
never a previous run's). Logging is configured in every process alike (:func:`mita.api.logs.config`): one
start-up line once the socket listens, then one access line per request, as text or JSON lines.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import logs
from .metrics import MULTIPROC_ENV

APP = "mita.api.app:app_from_env"


def shown_url(database_url: str) -> str:
    """The database URL as it may be printed: its password replaced by ``***``."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"  # never echoed: it may hold a password where the parser did not expect one


def run(*, host: str, port: int, workers: int, log_format: str, database_url: str) -> None:
    """Serve the API on ``host:port`` (port 0: a free one, named in the start-up line) until stopped.

    ``log_format`` is ``text`` or ``json`` (a ``ValueError`` otherwise, before anything starts).
    """
    import uvicorn  # only the serving process needs it

    log_config = logs.config(log_format, database=shown_url(database_url), workers=workers)
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
        )
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
