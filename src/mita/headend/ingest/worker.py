"""The ingest worker: MQTT v5 shared subscriptions in, batches committed, then acknowledged.

One process holds one persistent MQTT session (:mod:`mita.headend.mqttclient`: a stable client id, ``clean_start``
false, a session expiry) subscribed at QoS 1 to the shared subscriptions ``$share/<group>/mita/v1/+/readings``,
``.../events`` and ``.../status``: the broker hands each message to one member of the group, so N workers on N
machines split the stream with no coordinator, and one more worker is one more member.

**Exactly once, from at-least-once.** Messages are acknowledged by hand (paho's ``manual_ack``): the PUBACK of a
message leaves only after the transaction holding it committed. A worker killed at any moment (SIGKILL, a lost
machine) has acknowledged only what is stored; the broker keeps the rest in the worker's session and sends it
again when the same client id reconnects. What is sent again and was stored already (the worker died between
its commit and its PUBACKs) is recognised by its key, (meter, time, seq) for readings and events, and stored
once (:mod:`.store`). A message of an earlier connection is not acknowledged on a later one (its packet id means
nothing there): the broker sends it again and it is stored once.

**Back-pressure.** The worker's CONNECT carries a Receive Maximum (default twice the batch size): the broker
sends at most that many QoS 1 messages not yet acknowledged. Since acknowledgements wait for commits, a slow or
unreachable database stops the flow at the broker, which keeps the session's queue (Mosquitto's
``max_queued_messages`` bounds it: set it to 0, no bound, or large enough for the longest outage to ride out,
and size the broker's disk and memory for it). The worker's memory holds at most Receive Maximum messages.
A transient database failure (a lost connection, a deadlock, a timeout) is retried with backoff, the batch kept;
a batch the database refuses for good is split, and a message the database refuses on its own is counted
(``db_refused``) and acknowledged, so that one bad message never holds the stream.

**Refusals.** A message that cannot be read (topic or payload: :class:`~mita.telemetry.errors.TelemetryError`
codes) or names an unknown meter is counted by code, logged once a minute per code (the topic and the code,
never the payload), and acknowledged: it would be as unreadable the next time. A reading older than the
retention is dropped and counted (``too_old``), as is one from a clock more than a year ahead (``too_new``).

**Stopping.** ``stopping`` (SIGTERM, SIGINT in ``mita worker ingest``) ends the loop after the batch in hand is
committed and acknowledged; the session is closed with a DISCONNECT, and messages received but not yet in a batch
stay in the session for the next start. ``idle_exit`` ends it after that many seconds without a message (tests,
benchmarks).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from paho.mqtt.client import MQTTMessage
from sqlalchemy import Engine

from mita.headend.mqttclient import DEFAULT_SESSION_EXPIRY, BrokerUrl, Session
from mita.telemetry import topics
from mita.telemetry.errors import TelemetryError
from mita.vend.errors import is_transient

from . import batch as batches
from .batch import Message
from .meters import MeterCache
from .months import Window
from .partitions import Partitions
from .store import Written, store_for

log = logging.getLogger("mita.headend.ingest")

KINDS = (topics.Kind.READINGS, topics.Kind.EVENTS, topics.Kind.STATUS)
DAY = 86_400.0


@dataclass(frozen=True)
class Options:
    client_id: str
    group: str = "mita-ingest"
    batch_size: int = 500  # messages
    max_delay: float = 0.1  # seconds from a batch's first message to its write
    receive_maximum: int | None = None  # None: twice the batch size
    session_expiry: int = DEFAULT_SESSION_EXPIRY
    retention_months: int = 24
    idle_exit: float | None = None
    upkeep_every: float = DAY
    connect_timeout: float = 30.0
    unknown_ttl: float = 60.0

    @property
    def window(self) -> int:
        return min(65_535, self.receive_maximum or 2 * self.batch_size)


@dataclass
class Counts(Written):
    """What a worker did: its batches' :class:`Written` summed, and its own counts; printed as JSON when it stops."""

    messages: int = 0
    batches: int = 0
    repeats_in_batch: int = 0
    staged_batches: int = 0  # batches that met a reading stored before, and took the staged path
    not_acked: int = 0  # messages of an earlier connection: the broker sends them again
    db_retries: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # messages, by code
    dropped: Counter[str] = field(default_factory=Counter)  # readings, by reason
    partitions_made: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    meter_lookups: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the process's, all threads (the MQTT thread's decoding included)
    first_batch_at: float | None = None  # the clock's time the first batch was taken (benchmarks: a drain's span)
    last_commit_at: float | None = None  # ... and the last one committed

    def add(self, written: Written) -> None:
        for name in Written.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(written, name))

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["refused"], out["dropped"] = dict(self.refused), dict(self.dropped)
        out["seconds"] = round(self.seconds, 3)
        return out


class _Refused(Exception):
    """A message the database refuses on its own: counted and acknowledged."""


class IngestWorker:
    """One ingest process's loop (see the module's docstring). ``clock`` is Unix seconds (the receipt times, the
    retention window, the alarms' time); ``stopping`` ends it after the batch in hand."""

    def __init__(
        self,
        engine: Engine,
        broker: BrokerUrl | str,
        options: Options,
        *,
        clock: Callable[[], float] = time.time,
        stopping: threading.Event | None = None,
    ) -> None:
        self.engine, self.options, self.clock = engine, options, clock
        self.stopping = stopping or threading.Event()
        self.store = store_for(engine.dialect.name)
        self.meters = MeterCache(clock, options.unknown_ttl)
        self.partitions = Partitions(engine)
        self.counts = Counts()
        self.pending: list[Message] = []  # received, not yet in a batch
        self._first = 0.0  # when the first of them arrived (monotonic)
        self._open = False  # the session is open: pauses pump its network loop
        self._said: dict[str, float] = {}  # refusal code -> when it was last logged
        self.session = Session(
            broker,
            options.client_id,
            session_expiry=options.session_expiry,
            receive_maximum=options.window,
            manual_ack=True,
            on_connect=self._subscribe,
            on_message=self._received,
        )

    # ------------------------------------------------------------------ the network's callbacks

    def _subscribe(self, _session_present: bool) -> None:
        self.session.subscribe([topics.subscription(kind, self.options.group) for kind in KINDS], qos=1)

    def _received(self, message: MQTTMessage) -> None:
        """Decode and keep for the next batch. Never raises: a message left without an answer would hold a slot
        of the Receive Maximum until the session ends."""
        received, generation = int(self.clock()), self.session.generation
        try:
            payload = message.payload
            drn, body = batches.decode(message.topic, payload if isinstance(payload, bytes) else bytes(payload))
            item = Message(message.mid, message.qos, generation, received, drn, body)
        except TelemetryError as exc:
            item = Message(message.mid, message.qos, generation, received, "", None, exc.code)
        except Exception:  # a topic that is not UTF-8, a decoder's bug: refused, not fatal
            item = Message(message.mid, message.qos, generation, received, "", None, "bad_message")
        if not self.pending:
            self._first = time.monotonic()
        self.pending.append(item)

    # ------------------------------------------------------------------ the loop

    def run(self) -> Counts:
        """Until ``stopping`` (or ``idle_exit``): one thread takes turns at the network (paho's loop, run here by
        :meth:`Session.pump`, decoding as messages arrive) and the database (a batch written, then acknowledged).
        One thread, not two: a network thread and a database thread of one process wait for each other's
        interpreter lock at every system call (up to 5 ms each), which cost more than the turns do."""
        started = time.monotonic()
        self._upkeep(required=True)
        next_upkeep = time.monotonic() + self.options.upkeep_every
        size, delay = self.options.batch_size, self.options.max_delay
        self.session.open()
        self._open = True
        try:
            self.session.wait_connected(self.options.connect_timeout)
            log.info("ingest %s: group %s, batches of %d (%g s), Receive Maximum %d", self.options.client_id,
                     self.options.group, size, delay, self.options.window)  # fmt: skip
            last_message = time.monotonic()
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= next_upkeep:  # before the batches: under a steady stream there is always a batch
                    done = self._upkeep()
                    next_upkeep = time.monotonic() + (self.options.upkeep_every if done else 3600.0)
                if self.pending and (len(self.pending) >= size or now - self._first >= delay):
                    items, self.pending = self.pending[:size], self.pending[size:]
                    self._first = now  # the rest (a read brings up to a burst) waits no longer than a new batch
                    if not self._handle(items):
                        break  # stopping during a database outage: the batch stays with the broker
                    last_message = time.monotonic()
                    continue
                if self.pending:
                    self.session.pump(max(0.0, self._first + delay - now))
                else:
                    if self.options.idle_exit is not None and now - last_message >= self.options.idle_exit:
                        break
                    self.session.pump(0.2)
                    if self.pending:
                        last_message = time.monotonic()
        finally:
            self._open = False
            self.session.stop()
            self.counts.seconds = time.monotonic() - started
            self.counts.cpu_seconds = round(time.process_time(), 3)
            self.counts.meter_lookups = self.meters.lookups
            self.counts.partitions_made = list(self.partitions.made)
            self.counts.partitions_dropped = list(self.partitions.dropped)
        return self.counts

    def _pause(self, seconds: float) -> bool:
        """Wait (the network loop kept turning, so pings go out and the connection holds); False when
        ``stopping`` was set meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.stopping.is_set():
                return False
            if self._open:
                self.session.pump(min(left, 0.2))
            else:
                self.stopping.wait(min(left, 0.2))
        return not self.stopping.is_set()

    def _handle(self, items: list[Message]) -> bool:
        """Write and acknowledge a batch; False when stopping cut a retry short (nothing acknowledged)."""
        if self.counts.first_batch_at is None:
            self.counts.first_batch_at = self.clock()
        if not self._write_retrying(items):
            return False
        self.counts.last_commit_at = self.clock()
        generation = self.session.generation
        mids = [item.mid for item in items if item.qos and item.generation == generation]
        self.session.ack_many(mids)  # QoS 1: the subscriptions' QoS caps what the broker sends
        stale = sum(item.generation != generation for item in items)
        self.counts.messages += len(items)
        self.counts.batches += 1
        self.counts.not_acked += stale
        return True

    def _write_retrying(self, items: list[Message]) -> bool:
        delay = 0.25
        while True:
            try:
                self._write(items)
                return True
            except Exception as exc:
                if not is_transient(exc):
                    self._split(items, exc)
                    return True
                self.counts.db_retries += 1
                log.warning("ingest: database unavailable (%s); batch of %d kept, retry in %g s",
                            type(getattr(exc, "orig", None) or exc).__name__, len(items), delay)  # fmt: skip
                if not self._pause(delay):
                    return False
                delay = min(delay * 2, 10.0)

    def _split(self, items: list[Message], exc: Exception) -> None:
        """A batch the database refused for good: each message alone, and those refused alone are counted."""
        kind = type(getattr(exc, "orig", None) or exc).__name__
        if len(items) == 1:
            self.counts.refused["db_refused"] += 1
            log.error("ingest: the database refused a message from meter %s (%s); acknowledged, not stored",
                      items[0].drn or "?", kind)  # fmt: skip
            return
        log.warning("ingest: the database refused a batch of %d (%s): writing its messages one by one",
                    len(items), kind)  # fmt: skip
        for item in items:
            self._write_retrying([item])

    def _write(self, items: list[Message]) -> None:
        """One batch, one transaction (a second one when a reading was stored before: the staged path)."""
        now = self.clock()
        window = Window.at(int(now), self.options.retention_months)
        ids = self.meters.ids(self.engine, batches.drns(items))
        batch = batches.assemble(items, ids, window)
        if batch.months - self.partitions.known:
            self.partitions.ensure(batch.months)
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        if batch:
            try:
                with self.engine.begin() as conn:
                    written = self.store.write(conn, batch, at)
            except psycopg.errors.UniqueViolation:  # a reading stored before: a redelivery
                self.counts.staged_batches += 1
                with self.engine.begin() as conn:
                    written = self.store.write(conn, batch, at, staged=True)
            self.counts.add(written)
        self.counts.refused.update(batch.refused)
        self.counts.dropped.update(batch.dropped)
        self.counts.repeats_in_batch += batch.repeats
        if batch.refused:
            self._tell(batch.refused)

    def _tell(self, refused: Counter[str]) -> None:
        """A line per refusal code at most once a minute, with the total so far (never a payload)."""
        now = time.monotonic()
        for code in refused:
            if now - self._said.get(code, -1e18) >= 60:
                self._said[code] = now
                log.warning("ingest: messages refused (%s): %d so far, acknowledged and not stored", code,
                            self.counts.refused[code])  # fmt: skip

    def _upkeep(self, required: bool = False) -> bool:
        """The partitions of this month and the next two made; those past the retention dropped. Retried while
        the database is unavailable; ``required`` (at start) raises when it stays so, later a failure is logged
        and the upkeep tried again within the hour (the months ahead leave time). Whether it was done."""
        window = Window.at(int(self.clock()), self.options.retention_months)
        delay = 0.25
        for attempt in range(8):
            try:
                self.partitions.refresh()
                self.partitions.ensure(window.ahead())
                self.partitions.drop_before(window.first)
                return True
            except Exception as exc:
                if required and (not is_transient(exc) or attempt == 7):
                    raise
                if not is_transient(exc) or attempt == 7:
                    log.error("ingest: partition upkeep failed (%s); tried again later", type(exc).__name__)
                    return False
                log.warning("ingest: partition upkeep: database unavailable, retry in %g s", delay)
                if not self._pause(delay):
                    return False
                delay = min(delay * 2, 10.0)
        return False
