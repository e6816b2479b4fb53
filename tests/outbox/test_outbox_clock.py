"""The outbox worker and its clock: it claims nothing while its clock is off the database's (a row claimed by a
clock ahead goes early, a lease it writes outlives it), says so once a minute, and goes on once put right; and it
says when the database's disk is full rather than "unreachable"."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from test_outbox import fill, rows, url_of, wait_for
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from cli_run import run
from mita import compose
from mita.outbox import Message, Worker, queue
from mita.vend.callers import local_now
from mita.vend.clockcheck import ClockCheck

pg_only = pytest.mark.parametrize("engine", ["postgresql"], indirect=True)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: Message) -> None:
        self.sent.append(message.dedupe_key)


class Moved:
    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> dt.datetime:
        return local_now() + dt.timedelta(seconds=self.offset)


def held(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "claiming nothing" in r.getMessage()]


@pg_only
def test_a_worker_on_a_skewed_clock_claims_nothing_until_it_is_put_right(
    engine: Engine,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = fill(engine, 5)
    clock = Moved(3 * 86400)  # 3 days ahead: every row would be due, and its lease written 3 days long
    check = ClockCheck(engine, clock, 120)
    check.measure()
    recorder = Recorder()
    worker = Worker(engine, {"webhook": recorder}, clock=clock, clockcheck=check, name="w")
    caplog.set_level(logging.WARNING, "mita.outbox")

    assert worker.run(once=True).claimed == 0
    thread = threading.Thread(target=worker.run, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # some 50 polls
        assert recorder.sent == [] and {(r.status, r.attempts) for r in rows(engine)} == {("pending", 0)}
        assert len(held(caplog)) == 1, held(caplog)  # one line a minute, not one a poll
        assert "w: this host's clock is +" in held(caplog)[0] and "120 s" in held(caplog)[0]
        clock.offset = 0  # put right; the next comparison lets the worker go
        check.measure()
        wait_for(lambda: len(recorder.sent) == 5, timeout=30, what="the rows to be sent")
    finally:
        worker.stopping.set()
        thread.join(10)
    assert sorted(recorder.sent) == sorted(keys)
    assert {(r.status, r.attempts) for r in rows(engine)} == {("sent", 1)}


@pg_only
def test_a_worker_in_range_claims_as_ever(engine: Engine) -> None:  # noqa: F811
    fill(engine, 3)
    check = ClockCheck(engine, Moved(60), 120)
    check.measure()
    recorder = Recorder()
    assert Worker(engine, {"webhook": recorder}, clock=Moved(60), clockcheck=check).run(once=True).sent == 3


@pg_only
def test_mita_worker_runs_on_compose_s_clock_and_a_one_shot_run_off_it_fails(
    engine: Engine,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``mita worker`` reads compose's clock (as ``reliability.clock_app`` moves it), not one of its own."""
    fill(engine, 2, "receipt")
    original = compose.build
    clock = Moved(3 * 86400)
    monkeypatch.setattr(compose, "build", lambda *a, **k: original(*a, **{**k, "clock": clock}))
    args = ["worker", "--once", "--database-url", url_of(engine)]
    result = run(args, env={"MITA_OUTBOX_SENDERS": "receipt=log"})
    assert result.exit_code == 1 and result.stderr.startswith("error[clock_skew]: this server's clock is +"), result
    assert {(r.status, r.attempts) for r in rows(engine)} == {("pending", 0)}
    status = json.loads(run(["worker", "--status", "--database-url", url_of(engine)]).stdout)
    assert status["due"] == 2 and status["oldest_due_s"] > 2 * 86400  # as read on compose's clock, 3 days on
    clock.offset = 0
    result = run(args, env={"MITA_OUTBOX_SENDERS": "receipt=log"})
    assert result.exit_code == 0 and json.loads(result.stdout.splitlines()[-1])["sent"] == 2, result


@pytest.mark.parametrize(
    "orig",
    [sqlite3.OperationalError("database or disk is full"), sqlite3.OperationalError("database is locked")],
    ids=["full", "locked"],
)
def test_the_worker_says_the_disk_is_full(
    orig: sqlite3.OperationalError, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def claim(*_: Any, **__: Any) -> list[queue.Claimed]:
        calls.append(1)
        if len(calls) == 2:
            worker.stopping.set()
        raise OperationalError("UPDATE outbox ...", {}, orig)

    monkeypatch.setattr(queue, "claim", claim)
    worker = Worker(None, {"webhook": Recorder()}, name="w")  # type: ignore[arg-type]  # never reached
    caplog.set_level(logging.WARNING, "mita.outbox")
    worker.run(poll_interval=0.01)
    lines = [r.getMessage() for r in caplog.records]
    full = "full" in str(orig)
    want = "w: the database's disk is full (OperationalError)" if full else "w: database unreachable"
    assert len(calls) == 2 and lines and all(line.startswith(want) for line in lines), lines
