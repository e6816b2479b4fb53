"""The telemetry ingest: what meters publish over MQTT (``mita.telemetry``), stored once in the database.

``mita worker ingest`` runs :class:`IngestWorker` (``worker.py``: shared subscriptions, batches, acknowledgements
after commit, back-pressure, stopping). Beside it: ``batch.py`` (messages decoded and turned into rows, pure),
``meters.py`` (meter numbers to ids, cached), ``store.py`` (the writes: ``COPY`` on PostgreSQL, ``INSERT ... ON
CONFLICT`` elsewhere), ``partitions.py`` and ``months.py`` (the readings' monthly partitions and their
retention). Design and figures: ``docs/notes/ingest.md``.
"""

from __future__ import annotations

from .worker import Counts, IngestWorker, Options

__all__ = ["Counts", "IngestWorker", "Options"]
