"""Start the HTTP API: what ``mita serve`` does once the schema is migrated.

The workers uvicorn starts are fresh processes (``factory=True`` with an import string), so everything they need
travels in the environment: the database URL as ``MITA_DATABASE_URL``, read by their :class:`~mita.settings.Settings`.
"""

from __future__ import annotations

import os


def run(*, host: str, port: int, workers: int, log_format: str, database_url: str) -> None:
    """Serve ``mita.api.app:app_from_env`` on ``host:port`` with ``workers`` processes until stopped."""
    import uvicorn  # only the serving process needs it

    os.environ["MITA_DATABASE_URL"] = database_url  # how the workers uvicorn starts learn it
    uvicorn.run("mita.api.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning")
