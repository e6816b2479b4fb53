"""``/metrics`` in the Prometheus text format: what the server counted, and what the database holds now.

Two kinds of figures:

* counted by every worker as requests are answered (:class:`Metrics`, fed by :mod:`.observe`): HTTP requests by
  route template and status, vends by kind and outcome with their latency, refusals by problem code;
* read from the database at scrape time (:class:`DatabaseCollector`): outbox depth, vending keys by status and
  the days left before the first one stops, campaigns by status and how far each open one got. Cheap queries
  (small tables, or counts over an index) under a short timeout; a failed read leaves these figures out and
  says so in ``mita_metrics_database_up``, it never fails the scrape.

With several worker processes (``mita serve --workers N``) each counts in its own files under
``PROMETHEUS_MULTIPROC_DIR`` (:func:`mita.api.launch.run` makes a fresh folder, and removes it after), and a
scrape answered by any worker adds them all up: prometheus_client's multiprocess mode. Without that variable
(one process, the tests) each application counts in its own registry.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from mita import __version__, sts
from mita.vend import schema
from mita.vend.keyring import ken_expiry
from mita.vend.lifecycles import CampaignStatus, KeyChangeStatus, KeyStatus, OutboxStatus, VendKind

log = logging.getLogger("mita.api")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable (it reads it at import)
DB_TIMEOUT_S = 2.0  # the longest a scrape waits on the database

#: The routes that issue tokens, and the kind of vend each makes.
VEND_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/vends"): VendKind.PURCHASE,
    ("POST", "/v1/meters/{drn}/engineering-tokens"): VendKind.ENGINEERING,
    ("POST", "/v1/meters/{drn}/key-change"): VendKind.KEY_CHANGE,
}

#: A token route's answer, as a vend outcome: 201 made, 200 the same vend again (an Idempotency-Key retry),
#: 4xx refused (the problem's code is counted in ``mita_refusals_total``), 5xx failed.
OUTCOMES = {201: "issued", 200: "replayed"}

# no ``_created`` series beside each counter: Prometheus does not need them
disable_created_metrics()  # type: ignore[no-untyped-call]

VEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def outcome(status: int) -> str:
    return OUTCOMES.get(status) or ("failed" if status >= 500 else "refused")


def multiprocess() -> bool:
    """Whether this process counts in shared files (prometheus_client decides the same way, at its import)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The counters one application feeds, and the scrape that reads them with the database's figures."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime]) -> None:
        # in multiprocess mode the values live in the shared files, and a scrape reads those (not a registry)
        self.registry = None if multiprocess() else CollectorRegistry()
        where: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter(
            "mita_http_requests", "HTTP requests answered, by route template and status",
            ["method", "route", "status"], **where,
        )  # fmt: skip
        self.vends = Counter(
            "mita_vends", "token requests answered, by vend kind and outcome", ["kind", "outcome"], **where
        )
        self.vend_seconds = Histogram(
            "mita_vend_duration_seconds", "time to answer a token request, by vend kind and outcome",
            ["kind", "outcome"], buckets=VEND_BUCKETS, **where,
        )  # fmt: skip
        self.refusals = Counter("mita_refusals", "problem answers (errors), by their code", ["code"], **where)
        self._series: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self.database = DatabaseCollector(engine, clock)
        self._static = [_BuildInfo(), self.database]
        if self.registry is not None:
            for collector in self._static:
                self.registry.register(collector)

    def observe(self, method: str, route: str, status: int, seconds: float, code: str | None) -> None:
        """Count one answered request (called by :class:`mita.api.observe.Observe`)."""
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[method, route, status] = self._series_of(method, route, status)
        requests, vends, vend_seconds = series
        requests.inc()
        if vends is not None and vend_seconds is not None:
            vends.inc()
            vend_seconds.observe(seconds)
        if code is not None:
            self.refusals.labels(code).inc()

    def _series_of(self, method: str, route: str, status: int) -> tuple[Any, Any, Any]:
        """A request's labelled series, looked up once per (method, route, status): ``labels()`` takes a lock and
        builds its key on every call, about half of what counting a request cost. The keys are route templates and
        statuses, so the few there are stay."""
        kind = VEND_ROUTES.get((method, route))
        if kind is None:
            return self.requests.labels(method, route, str(status)), None, None
        result = outcome(status)
        return (
            self.requests.labels(method, route, str(status)),
            self.vends.labels(kind, result),
            self.vend_seconds.labels(kind, result),
        )

    def exposition(self) -> bytes:
        """The Prometheus text: every worker's counters, and the database's figures read now."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            for collector in self._static:
                registry.register(collector)
        return generate_latest(registry)


class _BuildInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("mita_build_info", "the running Mita version (always 1)", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


# ---------------------------------------------------------------------- read at scrape time

#: What limits a statement's time, per dialect (run first in the scrape's transaction).
_TIMEOUT_SQL = {"postgresql": f"SET LOCAL statement_timeout = {int(DB_TIMEOUT_S * 1000)}"}
_WAITING = (OutboxStatus.PENDING, OutboxStatus.DEAD)


class DatabaseCollector(Collector):
    """Gauges read from the database when Prometheus scrapes; none (and ``mita_metrics_database_up 0``) if the
    database does not answer within :data:`DB_TIMEOUT_S`."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mita_metrics_database_up", "1 if this scrape read the database's figures, else 0")
        started = time.monotonic()
        try:
            families = list(self._read())
        except Exception as exc:  # the scrape still answers, with what the workers counted
            log.warning("metrics: database figures not read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        took = GaugeMetricFamily("mita_metrics_database_seconds", "time this scrape took to read the database")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _read(self) -> Iterator[Metric]:
        with self.engine.connect() as conn, _short_waits(conn):
            timeout = _TIMEOUT_SQL.get(conn.dialect.name)
            if timeout is not None:
                conn.exec_driver_sql(timeout)
            outbox = _counts(conn, schema.outbox.c.status, schema.outbox.c.status.in_(_WAITING))
            keys = _counts(conn, schema.vending_keys.c.status)
            campaigns = _counts(conn, schema.campaigns.c.status)
            k, g = schema.vending_keys, schema.supply_groups
            ends = conn.execute(
                select(k.c.issued_until, k.c.ken, g.c.base_date, g.c.kt)
                .join_from(k, g, g.c.id == k.c.supply_group_id)
                .where(k.c.status == KeyStatus.ACTIVE)
            ).all()
            c, kc = schema.campaigns, schema.key_changes  # index ix_key_changes_campaign (campaign_id, status)
            progress = conn.execute(
                select(c.c.name, kc.c.status, func.count())
                .join_from(c, kc, kc.c.campaign_id == c.c.id)
                .where(c.c.status != CampaignStatus.CLOSED)
                .group_by(c.c.name, kc.c.status)
            ).all()
            conn.rollback()
        yield _by_status("mita_outbox_messages", "outbox rows waiting to be sent (pending) or given up (dead)",
                         _WAITING, outbox)  # fmt: skip
        yield _by_status("mita_vending_keys", "vending keys by status", KeyStatus, keys)
        now = self.clock()
        days = [(end - now).total_seconds() / 86400 for row in ends for end in key_ends(*row)]
        if days:
            left = GaugeMetricFamily(
                "mita_vending_key_days_left",
                "days until the first active vending key stops issuing credit (issued-until date, KEN or base date; "
                "negative: already stopped)",
            )
            left.add_metric([], min(days))
            yield left
        yield _by_status("mita_campaigns", "key change campaigns by status", CampaignStatus, campaigns)
        meters = GaugeMetricFamily(
            "mita_campaign_meters",
            "meters of each campaign not closed, by how far their key change got (confirmed: done; the sum: total)",
            labels=["campaign", "status"],
        )
        seen: dict[str, dict[str, int]] = {}
        for name, status, count in progress:
            seen.setdefault(str(name), {})[str(status)] = int(count)
        for name, counts in sorted(seen.items()):
            for status in KeyChangeStatus:
                meters.add_metric([name, status.value], counts.get(status.value, 0))
        yield meters


def key_ends(issued_until: dt.datetime | None, ken: int, base_date: int, kt: int) -> list[dt.datetime]:
    """When an active key stops: its issued-until date, its KEN (key types other than 0) and its base date's end
    (the same ends :func:`mita.vend.keyring.expiry_warnings` warns of)."""
    ends = [sts.BaseDate(base_date).start + dt.timedelta(minutes=sts.tid.TID_MAX + 1)]
    if issued_until is not None:
        ends.append(issued_until)
    ken_end = ken_expiry(ken, base_date) if kt != 0 else None
    if ken_end is not None:
        ends.append(ken_end)
    return ends


def _counts(conn: Connection, status: Any, *where: Any) -> dict[str, int]:
    """Rows by status (of the rows ``where`` keeps)."""
    rows = conn.execute(select(status, func.count()).where(*where).group_by(status)).all()
    return {str(s): int(n) for s, n in rows}


def _by_status(name: str, doc: str, statuses: Any, counts: dict[Any, Any]) -> GaugeMetricFamily:
    """One gauge per status, every status present (0 when there is no row): a missing series is not a zero."""
    family = GaugeMetricFamily(name, doc, labels=["status"])
    for status in statuses:
        family.add_metric([str(status)], int(counts.get(str(status), 0)))
    return family


@contextmanager
def _short_waits(conn: Connection) -> Iterator[None]:
    """On SQLite, wait at most :data:`DB_TIMEOUT_S` for a lock (the pool's connections wait 30 s, for a vend)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw: Any = conn.connection.dbapi_connection  # not a statement: no transaction begins yet
    before = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute(f"PRAGMA busy_timeout={int(DB_TIMEOUT_S * 1000)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(before)}")
