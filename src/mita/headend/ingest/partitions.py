"""The readings' monthly partitions on PostgreSQL: made ahead, made on demand, dropped past the retention.

``readings`` is ``PARTITION BY RANGE (read_at)`` (migration 0008) with no default partition: a reading whose
month has no partition is refused by the database. So the ingest makes them:

* at start and once a day, this month and the next :data:`~.months.AHEAD` (a quiet fleet at midnight on the
  first of the month finds its partition there already);
* before a batch whose readings fall in a month it has not seen (a meter reporting from last month after an
  outage, a clock ahead), in a transaction of its own, before the batch's;
* once a day, the partitions of months before the retention (``readings_retention_months`` before the current
  one) are dropped: a ``DROP TABLE`` of a month is instant, where deleting its rows would take hours and bloat.

Each change runs under a transaction-level advisory lock, so workers on many machines making the same month at
once take turns (the second finds it made: ``IF NOT EXISTS``). Making or dropping a partition locks ``readings``
briefly (``ACCESS EXCLUSIVE``): it waits for the batches being written to commit, and the next ones wait for it.

On SQLite (demonstrations, tests) there are no partitions: the daily upkeep deletes the readings older than the
retention instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from sqlalchemy import Engine, delete, text

from mita.vend.schema import readings

from . import months

log = logging.getLogger("mita.headend.ingest")

#: The advisory lock's key: ASCII "mitapart".
LOCK_KEY = 0x6D69_7461_7061_7274
_LIST = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'readings' AND p.relnamespace = c.relnamespace "
    "AND pg_table_is_visible(p.oid)"
)


class Partitions:
    """What one worker knows of the partitions (``known``: months that exist), and the changes it makes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.partitioned = engine.dialect.name == "postgresql"
        self.known: set[int] = set()
        self.made: list[str] = []
        self.dropped: list[str] = []

    def refresh(self) -> set[int]:
        if not self.partitioned:
            return set()
        with self.engine.connect() as conn:
            found = {months.parse_name(name) for (name,) in conn.execute(_LIST)}
        self.known = {m for m in found if m is not None}
        return self.known

    def ensure(self, wanted: Iterable[int]) -> list[str]:
        """Make the partitions of ``wanted`` months that do not exist; their names."""
        if not self.partitioned:
            return []
        missing = sorted(set(wanted) - self.known)
        if not missing:
            return []
        made = []
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            exist = {months.parse_name(name) for (name,) in conn.execute(_LIST)}
            for month in missing:
                if month in exist:
                    continue
                low, high = _literal(months.start(month)), _literal(months.start(month + 1))
                conn.execute(text(f"CREATE TABLE IF NOT EXISTS {months.name(month)} PARTITION OF readings "
                                  f"FOR VALUES FROM ('{low}') TO ('{high}')"))  # fmt: skip
                made.append(months.name(month))
        self.known |= set(missing)
        if made:
            log.info("readings partitions made: %s", ", ".join(made))
            self.made.extend(made)
        return made

    def drop_before(self, first: int) -> list[str]:
        """Drop the partitions of the months before ``first`` (on SQLite: delete those readings); their names."""
        if not self.partitioned:
            with self.engine.begin() as conn:
                gone = conn.execute(delete(readings).where(readings.c.read_at < _utc(months.start(first)))).rowcount
            if gone:
                log.info("readings before %s deleted: %d", _literal(months.start(first)), gone)
            return []
        dropped = []
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            for (name,) in conn.execute(_LIST).all():
                month = months.parse_name(name)
                if month is not None and month < first:
                    conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
                    dropped.append(name)
        self.known = {m for m in self.known if m >= first}
        if dropped:
            log.info("readings partitions dropped (retention): %s", ", ".join(dropped))
            self.dropped.extend(dropped)
        return dropped


def _utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _literal(epoch: int) -> str:
    return _utc(epoch).strftime("%Y-%m-%d %H:%M:%S+00")
