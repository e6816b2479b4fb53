"""The clock check (mita.vend.clockcheck): a process whose clock strays from PostgreSQL's refuses to sell.

A jumped clock issues TIDs in the future and writes outbox rows due in the future (docs/reliability.md, R-14);
these tests move the process's clock (the composition root's, as ``reliability.clock_app`` does) and read the
verdict, on the shared server (only ``SELECT now()`` is sent there).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from mita import compose
from mita.settings import Settings
from mita.vend import database
from mita.vend.callers import local_now
from mita.vend.clockcheck import ClockCheck, database_clock
from mita.vend.errors import VendError
from vend_fixtures import PG_ADMIN_URL

TEN_MINUTES = 600


class Moved:
    """The utility's clock plus an offset the test sets (seconds)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> dt.datetime:
        return local_now() + dt.timedelta(seconds=self.offset)


@pytest.fixture
def pg() -> Iterator[Engine]:
    engine = database.make_engine(PG_ADMIN_URL, pool_size=1)
    yield engine
    engine.dispose()


def refused(check: ClockCheck) -> str | None:
    try:
        check.check()
    except VendError as exc:
        assert exc.code == "clock_skew"
        return str(exc)
    return None


def test_a_clock_ten_minutes_ahead_is_refused_and_one_in_range_is_not(pg: Engine) -> None:
    ahead = ClockCheck(pg, Moved(TEN_MINUTES), 120)
    assert refused(ahead) is None  # no verdict yet: nothing refused before the first comparison
    verdict = ahead.measure()
    assert verdict is not None and abs(verdict.skew - TEN_MINUTES) <= 2, verdict
    message = refused(ahead)
    assert message is not None and re.search(r"is \+(599|600|601) s off .* 120 s allowed", message), message

    behind = ClockCheck(pg, Moved(-TEN_MINUTES), 120)
    behind.measure()
    assert refused(behind) is not None  # back is as wrong as forward (TIDs ahead of the clock for that long)

    for offset in (0, 100, -100):  # within MITA_MAX_CLOCK_SKEW
        fine = ClockCheck(pg, Moved(offset), 120)
        verdict = fine.measure()
        assert verdict is not None and abs(verdict.skew - offset) <= 2, (offset, verdict)
        assert refused(fine) is None, offset


def test_the_database_s_time_zone_is_not_a_skew(pg: Engine) -> None:
    """The database's session may run in another zone (+14 h): its instant is compared, not its wall reading."""
    url = pg.url.render_as_string(hide_password=False)
    far = create_engine(url, poolclass=NullPool, connect_args={"options": "-c TimeZone=Pacific/Kiritimati"})
    try:
        check = ClockCheck(far, local_now, 120)
        verdict = check.measure()
        assert verdict is not None and abs(verdict.skew) <= 2, verdict
    finally:
        far.dispose()


def test_a_database_out_of_reach_keeps_the_last_verdict(pg: Engine) -> None:
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/postgres", poolclass=NullPool)
    try:
        for offset, skewed in ((TEN_MINUTES, True), (0, False)):
            check = ClockCheck(pg, Moved(offset), 120)
            kept = check.measure()
            check.database = database_clock(dead)
            assert check.measure() is None  # the comparison failed ...
            assert check.verdict is kept and check.skewed() is skewed  # ... and changed nothing
            assert (refused(check) is not None) is skewed
    finally:
        dead.dispose()


def test_the_thread_follows_a_jump_and_its_correction(pg: Engine) -> None:
    clock = Moved(0)
    check = ClockCheck(pg, clock, 120, interval=0.05)
    check.start()
    check.start()  # once per process: a second start adds no thread
    try:
        assert [t.name for t in threading.enumerate()].count("mita-clockcheck") == 1
        wait_until(lambda: check.verdict is not None, "a first verdict")
        assert refused(check) is None
        clock.offset = 3 * 86400  # the host's clock steps 3 days forward
        wait_until(check.skewed, "the jump to be seen")
        assert refused(check) is not None
        clock.offset = 0  # put right
        wait_until(lambda: not check.skewed(), "the correction to be seen")
        assert refused(check) is None
    finally:
        check.stop()
    assert "mita-clockcheck" not in [t.name for t in threading.enumerate()]


def test_sqlite_has_no_clock_of_its_own_so_the_check_always_passes(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = database.make_engine(f"sqlite:///{tmp_path_factory.mktemp('clock') / 'mita.db'}")
    try:
        check = ClockCheck(engine, Moved(10 * 365 * 86400), 120)
        assert not check.checked and check.measure() is None
        check.start()
        assert check._thread is None  # no thread runs for nothing
        assert refused(check) is None
    finally:
        engine.dispose()


def test_compose_hands_its_clock_and_the_setting_to_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_MAX_CLOCK_SKEW", "30")
    clock = Moved(60)
    runtime = compose.build(Settings(), database_url=PG_ADMIN_URL, clock=clock, pool_size=1)
    try:
        assert runtime.clockcheck.max_skew == 30 and runtime.clockcheck.clock is clock is runtime.clock
        assert runtime.clockcheck._thread is None  # built, not started: a one-shot command pays no thread
        runtime.clockcheck.measure()
        assert refused(runtime.clockcheck) is not None  # 60 s off, 30 allowed
        runtime.clockcheck.start()
    finally:
        runtime.close()  # stops the thread too
    assert runtime.clockcheck._thread is None


def test_the_setting_is_positive_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_clock_skew == 120
    monkeypatch.setenv("MITA_MAX_CLOCK_SKEW", "0")
    with pytest.raises(ValueError, match="max_clock_skew"):
        Settings()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
