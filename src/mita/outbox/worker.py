"""The dispatcher: claim due rows in small batches, send each through its channel's sender, settle them.

One batch: a claim (one short committed transaction: attempts + 1, leased until now + lease), the sends, and
the outcomes written back fenced by the claimed attempt number (:mod:`mita.outbox.queue`), at the end of the
batch and every ``flush_interval`` seconds on the way, so that a crash repeats little. While a batch is being
sent its unsettled rows' lease is renewed every third of a lease, and a long job (a campaign's generation)
renews it between its steps through :attr:`Message.keepalive`: no row lock is held for more than a claim.

A failed send is tried again after an exponential backoff with jitter (``backoff_base * 2**(attempts-1)``,
at most ``backoff_max``, of which a random half), after a receiver's ``Retry-After`` if longer; a permanent
refusal, or a failure on the ``max_attempts``-th try, parks the row ``dead``. A row whose worker died on its
last allowed attempt is parked ``dead`` when its lease ends, without another try.

Due and lease times are read from the clock the worker is given (the composition root's, as the rows were written
on); while its :class:`~mita.vend.clockcheck.ClockCheck` finds that clock off the database's, the worker claims
nothing (a row claimed early is sent early, a lease read late outlives its worker) and says so once a minute.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.exc import DBAPIError

from mita.vend.clockcheck import ClockCheck
from mita.vend.errors import is_disk_full, is_transient
from mita.vend.schema import outbox

from . import queue
from .queue import Claimed
from .senders import Interrupted, LeaseLost, Message, Sender, SendError

log = logging.getLogger("mita.outbox")


SKEW_LOG_INTERVAL = 60.0  # seconds between the warnings of a worker held back by its clock


def local_now() -> dt.datetime:
    """The utility's wall clock, without a time zone (a library default: ``mita worker`` passes the composition
    root's clock, the one the vending service writes the rows with)."""
    return dt.datetime.now()


@dataclass(frozen=True)
class Policy:
    """How hard and how often to try (seconds)."""

    max_attempts: int = 8
    lease: float = 60.0  # a claim holds its rows this long unless renewed: longer than any single send
    backoff_base: float = 30.0
    backoff_max: float = 3600.0
    flush_interval: float = 0.2  # outcomes are written at least this often within a batch

    def check(self) -> None:
        if not 1 <= self.max_attempts <= 1000:
            raise ValueError("max_attempts is 1..1000")
        if not 0 < self.lease <= 86400 or not 0 < self.backoff_base <= self.backoff_max <= 30 * 86400:
            raise ValueError("lease is 0..86400 s, and 0 < backoff_base <= backoff_max <= 30 days")


def backoff(attempts: int, policy: Policy, rnd: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempts``-th failed try: the exponential step, of which a random half
    (so that rows failed together spread out, and never sooner than half the step)."""
    step = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(max(attempts - 1, 0), 60))
    return step / 2 + rnd() * step / 2


@dataclass
class Counts:
    batches: int = 0
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    lost: int = 0  # outcomes not written: another worker had taken the row over

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Batch:
    """The rows of one claim not yet settled, the outcomes not yet written, and the lease's upkeep."""

    def __init__(self, worker: Worker, rows: list[Claimed]) -> None:
        self.w = worker
        self.open: dict[int, Claimed] = {r.id: r for r in rows}
        self.changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.counts = Counts(batches=1, claimed=len(rows))
        self.renewed = self.flushed = time.monotonic()

    def settle(self, row: Claimed, kind: str, **params: Any) -> None:
        del self.open[row.id]
        self.changes[kind].append({**row.token, **params})
        if time.monotonic() - self.flushed >= self.w.policy.flush_interval:
            self.flush()

    def forget(self, row: Claimed) -> None:
        self.open.pop(row.id, None)
        self.counts.lost += 1

    def flush(self) -> None:
        changes, self.changes = self.changes, defaultdict(list)
        self.flushed = time.monotonic()
        if not changes:
            return
        done = queue.settle(self.w.engine, changes)
        for kind, rows in changes.items():
            n = done.get(kind, 0)
            self.counts.lost += len(rows) - n
            if kind == "sent":
                self.counts.sent += n
            elif kind == "retry":
                self.counts.retried += n
            elif kind == "dead":
                self.counts.dead += n
            elif kind == "release":
                self.counts.released += n

    def keep(self) -> None:
        """Renew the lease of the unsettled rows if a third of it has passed."""
        if self.open and time.monotonic() - self.renewed >= self.w.policy.lease / 3:
            self.renew()

    def renew(self) -> None:
        rows = list(self.open.values())
        until = self.w.clock() + dt.timedelta(seconds=self.w.policy.lease)
        self.renewed = time.monotonic()
        done = queue.settle(self.w.engine, {"renew": [{**r.token, "k_next": until} for r in rows]}).get("renew", 0)
        if done == len(rows):
            return
        o = outbox.c
        with self.w.engine.connect() as conn:  # rare: find which leases were taken over
            kept = set(
                conn.execute(
                    select(o.id).where(
                        o.status == queue.PENDING, tuple_(o.id, o.attempts).in_([(r.id, r.attempts) for r in rows])
                    )
                ).scalars()
            )
        for r in rows:
            if r.id not in kept:
                log.warning("%s: lease on outbox row %s lost to another worker", self.w.name, r.id)
                self.forget(r)

    def keepalive(self, row: Claimed) -> None:
        self.keep()
        if row.id not in self.open:
            raise LeaseLost(f"outbox row {row.id}")


class Worker:
    """Dispatches the outbox rows of the channels it has senders for (``senders``: channel -> sender)."""

    def __init__(
        self,
        engine: Engine,
        senders: Mapping[str, Sender],
        *,
        batch_size: int = 100,
        policy: Policy | None = None,
        clock: Callable[[], dt.datetime] = local_now,
        stopping: threading.Event | None = None,
        rnd: Callable[[], float] = random.random,
        name: str | None = None,
        clockcheck: ClockCheck | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size is 1..10000")
        self.engine = engine
        self.senders = dict(senders)
        self.batch_size = batch_size
        self.policy = policy or Policy()
        self.policy.check()
        self.clock = clock
        self.stopping = stopping or threading.Event()
        self.rnd = rnd
        self.name = name or f"worker {os.getpid()}"
        self.clockcheck = clockcheck
        self._skew_logged = -SKEW_LOG_INTERVAL  # monotonic time of the last warning

    def run(self, *, once: bool = False, poll_interval: float = 1.0) -> Counts:
        """Dispatch until stopped (after the current batch), or with ``once`` until nothing is due."""
        total = Counts()
        failures = 0
        while not self.stopping.is_set():
            if self._held_by_clock():
                if once:
                    break
                self.stopping.wait(poll_interval)
                continue
            try:
                counts = self.run_batch()
            except DBAPIError as exc:
                if once or not is_transient(exc):
                    raise
                failures += 1
                wait = min(30.0, poll_interval * 2**failures)
                why = "the database's disk is full" if is_disk_full(exc) else "database unreachable"
                log.warning("%s: %s (%s); again in %.1f s", self.name, why, type(exc.orig).__name__, wait)
                self.stopping.wait(wait)
                continue
            failures = 0
            total.add(counts)
            if counts.claimed == 0:
                if once:
                    break
                self.stopping.wait(poll_interval)
        return total

    def _held_by_clock(self) -> bool:
        """Whether the clock check forbids claiming now (a warning at most once a :data:`SKEW_LOG_INTERVAL`)."""
        check = self.clockcheck
        verdict = check.verdict if check is not None else None
        if check is None or verdict is None or not check.skewed(verdict):
            return False
        if time.monotonic() - self._skew_logged >= SKEW_LOG_INTERVAL:
            self._skew_logged = time.monotonic()
            log.warning("%s: this host's clock is %+.0f s off the database's (at most %g s): claiming nothing until "
                        "it is put right", self.name, verdict.skew, check.max_skew)  # fmt: skip
        return True

    def run_batch(self) -> Counts:
        """Claim one batch, send it, settle it; its counts (claimed 0: nothing was due)."""
        started = time.monotonic()
        now = self.clock()
        lease_until = now + dt.timedelta(seconds=self.policy.lease)
        rows = queue.claim(self.engine, list(self.senders), self.batch_size, now, lease_until)
        if not rows:
            return Counts()
        batch = _Batch(self, rows)
        for row in rows:
            if row.id not in batch.open:  # its lease was lost while an earlier row was sent
                continue
            batch.keep()
            if row.id in batch.open:
                self._send(batch, row)
        batch.flush()
        c = batch.counts
        log.info(
            "%s: batch of %d: %d sent, %d retried, %d dead, %d released, %d lost, %.1f ms",
            self.name, c.claimed, c.sent, c.retried, c.dead, c.released, c.lost, (time.monotonic() - started) * 1000,
        )  # fmt: skip
        return c

    def _send(self, batch: _Batch, row: Claimed) -> None:
        if row.attempts > self.policy.max_attempts:  # its worker died during the last allowed try
            self._dead(batch, row, "lease expired on the last attempt")
            return
        message = Message(**{f.name: getattr(row, f.name) for f in fields(row)}, keepalive=lambda: batch.keepalive(row))
        try:
            self.senders[row.channel].send(message)
        except Interrupted:
            batch.settle(row, "release", k_next=self.clock())
        except LeaseLost:
            batch.forget(row)
        except SendError as exc:
            self._failed(batch, row, exc.reason, exc.permanent, exc.retry_after)
        except DBAPIError as exc:  # a job's database work: tried again (a fault that stays dies after the last)
            self._failed(batch, row, f"database: {type(exc.orig).__name__}", False, None)
        except Exception as exc:  # a sender's fault: its class only (a message could hold a secret)
            log.error("%s: %s failed with %s", self.name, row.dedupe_key, type(exc).__name__)
            self._failed(batch, row, type(exc).__name__, False, None)
        else:
            batch.settle(row, "sent", k_at=self.clock())

    def _failed(self, batch: _Batch, row: Claimed, reason: str, permanent: bool, retry_after: float | None) -> None:
        reason = reason[: queue.TEXT_MAX]
        if permanent or row.attempts >= self.policy.max_attempts:
            self._dead(batch, row, reason)
            return
        wait = backoff(row.attempts, self.policy, self.rnd)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.policy.backoff_max))
        batch.settle(row, "retry", k_next=self.clock() + dt.timedelta(seconds=wait), k_error=reason)

    def _dead(self, batch: _Batch, row: Claimed, reason: str) -> None:
        log.warning("%s: %s dead after %d attempts: %s", self.name, row.dedupe_key, row.attempts, reason)
        batch.settle(row, "dead", k_error=reason[: queue.TEXT_MAX])
