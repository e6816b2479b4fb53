"""Is this process's clock the database's? Refuse to sell while it is not.

A vend takes its TID (the token's issue minute) from the process's clock, and an outbox row is due at that
clock's reading. A clock stepped forward (an NTP step, a VM restored from a snapshot, an operator's typo of a
year) issues TIDs in the future, which meters then hold as their last one: a year's jump uses up the key's TIDs
for good, and rows written meanwhile wait the length of the jump. The database's clock is the one every process
shares, so a process whose clock strays from it by more than ``MITA_MAX_CLOCK_SKEW`` stops selling (and its
outbox worker stops claiming) until the two agree again.

The comparison costs a round trip, so it is made on a background thread every few seconds (one per process), and
:meth:`ClockCheck.check` only reads its last verdict: the hot path pays an attribute read. A comparison that cannot
reach the database keeps the previous verdict (the request that needs the database is answered by its own error).
SQLite has no clock of its own (it is read from this same host): there the check always passes, and no thread runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from .errors import VendError

log = logging.getLogger("mita.vend")

INTERVAL = 5.0  # seconds between comparisons: a jump is refused within this (and a round trip)


@dataclass(frozen=True)
class Verdict:
    """The last comparison: the process's clock minus the database's (seconds) and when it was made (monotonic)."""

    skew: float
    at: float


def database_clock(engine: Engine) -> Callable[[], dt.datetime] | None:
    """A reader of the database's clock in this process's local time (no time zone, as the utility's clock), or
    None when the database has no clock of its own (SQLite)."""
    if engine.dialect.name != "postgresql":
        return None

    def now() -> dt.datetime:
        with engine.connect() as conn:
            at: dt.datetime = conn.execute(text("SELECT now()")).scalar_one()
        return at.astimezone().replace(tzinfo=None)  # as dt.datetime.now() would read at that instant

    return now


class ClockCheck:
    """The verdict on this process's clock, kept fresh by a daemon thread between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], dt.datetime],
        max_skew: float,
        *,
        interval: float = INTERVAL,
        database: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if max_skew <= 0 or interval <= 0:
            raise ValueError("max_skew and interval are positive seconds")
        self.clock, self.max_skew, self.interval = clock, max_skew, interval
        self.database = database if database is not None else database_clock(engine)
        self.verdict: Verdict | None = None  # none yet: nothing is refused before the first comparison
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def checked(self) -> bool:
        """Whether there is a clock to compare with (PostgreSQL): on SQLite every check passes."""
        return self.database is not None

    def measure(self) -> Verdict | None:
        """Compare the clocks now and keep the verdict; None (the old verdict kept) when the database is away."""
        if self.database is None:
            return None
        try:
            before = self.clock()
            theirs = self.database()
            after = self.clock()
        except DBAPIError as exc:
            log.debug("clock check: database not reachable (%s); verdict kept", type(exc.orig).__name__)
            return None
        ours = before + (after - before) / 2  # the database read its clock about halfway through
        verdict = Verdict((ours - theirs).total_seconds(), time.monotonic())
        if self.skewed(verdict) and not self.skewed(self.verdict):
            log.warning("this server's clock is %+.0f s off the database's: vends and the console refused until "
                        "it is put right", verdict.skew)  # fmt: skip
        elif self.skewed(self.verdict) and not self.skewed(verdict):
            log.warning("this server's clock agrees with the database's again (%+.0f s)", verdict.skew)
        self.verdict = verdict
        return verdict

    def skewed(self, verdict: Verdict | None = None) -> bool:
        """Whether ``verdict`` (default: the last one) puts the clocks further apart than allowed."""
        verdict = verdict if verdict is not None else self.verdict
        return verdict is not None and abs(verdict.skew) > self.max_skew

    def check(self, refused: str = "no vend") -> None:
        """Raise ``clock_skew`` if the last comparison found the clocks too far apart (a read: no round trip);
        ``refused`` says what waits until it is put right."""
        verdict = self.verdict
        if verdict is not None and abs(verdict.skew) > self.max_skew:
            raise VendError(
                "clock_skew",
                f"this server's clock is {verdict.skew:+.0f} s off the database's (at most {self.max_skew:g} s "
                f"allowed): {refused} until it is put right",
            )

    def start(self) -> None:
        """Compare on a daemon thread every :attr:`interval` seconds (once per process: a second start is a no-op;
        nothing runs on SQLite)."""
        with self._lock:
            if self.database is None or self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="mita-clockcheck", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.measure()
            except Exception as exc:  # the thread must outlive any one comparison (its class only: no secrets)
                log.error("clock check failed with %s; verdict kept", type(exc).__name__)
            self._stopping.wait(self.interval)
