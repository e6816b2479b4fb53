"""A meter's commands leave the outbox in the order written (issue 16), on SQLite and PostgreSQL.

What must hold for an *ordered* channel (``headend``): a claim takes only a recipient's oldest pending row, so a
later row never goes while an earlier one of the same recipient is pending (due, leased to a worker that died,
or waiting out a backoff); a row that ends, sent or dead, lets the next one go; a recipient whose row is stuck
holds back no other recipient, and other channels are not ordered at all; many workers at once keep the order;
the rule is a probe of the partial index ``ix_outbox_open``. Senders here are recorders: what they were handed,
in the order they were handed it, is what a meter would have seen.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, select, text
from test_outbox import T0, Recorder, rows
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita import outbox
from mita.outbox import Message, Policy, SendError, Worker
from mita.outbox import queue as q
from mita.vend.remote import CHANNEL as HEADEND
from mita.vend.schema import outbox as outbox_table

LEASE = dt.timedelta(seconds=10)


def commands(db: Engine, plan: list[tuple[str, int]], channel: str = HEADEND) -> dict[str, list[int]]:
    """Queue, in this order, ``count`` rows for each ``(recipient, count)``; each recipient's row ids, in order."""
    made: dict[str, list[int]] = defaultdict(list)
    with db.begin() as conn:
        for recipient, count in plan:
            for _ in range(count):
                key = f"test:{channel}:{recipient}:{len(made[recipient])}"
                assert outbox.enqueue(conn, channel, recipient, key, {"n": len(made[recipient])}, T0)
                rid = conn.execute(select(outbox_table.c.id).where(outbox_table.c.dedupe_key == key)).scalar_one()
                made[recipient].append(int(rid))
    return dict(made)


def by_recipient(sent: list[Message]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for m in sent:
        seen[m.recipient].append(m.id)
    return dict(seen)


def claim(db: Engine, at: dt.datetime, channels: tuple[str, ...] = (HEADEND,)) -> list[q.Claimed]:
    return q.claim(db, channels, 100, at, at + LEASE)


def test_a_claim_takes_each_recipients_oldest_pending_row_only(engine: Engine) -> None:  # noqa: F811
    ids = commands(engine, [("m1", 3), ("m2", 2), ("m1", 1)])
    hook = commands(engine, [("hook", 3)], channel="webhook")
    first = claim(engine, T0, (HEADEND, "webhook"))
    # the head of each meter's queue; the unordered channel's rows all at once, one recipient or not
    assert [c.id for c in first] == sorted([ids["m1"][0], ids["m2"][0], *hook["hook"]])
    # the heads are leased, not ended: nothing behind them goes, even once due again elsewhere
    assert claim(engine, T0 + dt.timedelta(seconds=1)) == []
    heads = [c for c in first if c.channel == HEADEND]
    q.settle(engine, {"sent": [{**c.token, "k_at": T0} for c in heads if c.recipient == "m1"]})
    assert [c.id for c in claim(engine, T0 + dt.timedelta(seconds=2))] == [ids["m1"][1]]


def test_a_dead_workers_head_holds_its_meter_back_until_the_lease_ends_then_goes_first(
    engine: Engine,  # noqa: F811
) -> None:
    ids = commands(engine, [("m1", 4), ("m2", 2)])
    clock = [T0]
    claim(engine, T0)  # a worker takes m1's and m2's first rows, and is killed before it sends or settles
    recorder = Recorder()
    w = Worker(engine, {HEADEND: recorder}, policy=Policy(lease=LEASE.total_seconds()), clock=lambda: clock[0])
    clock[0] += dt.timedelta(seconds=5)
    assert w.run_batch().claimed == 0  # before the lease ends: neither the heads nor what is behind them
    clock[0] += dt.timedelta(seconds=6)
    while w.run_batch().claimed:
        pass
    assert by_recipient(recorder.sent) == ids  # every row once, each meter's in the order written
    assert [m.attempts for m in recorder.sent if m.id in (ids["m1"][0], ids["m2"][0])] == [2, 2]
    assert {r.status for r in rows(engine)} == {"sent"}


def test_a_head_in_backoff_holds_back_its_meter_only_and_its_end_lets_the_next_go(
    engine: Engine,  # noqa: F811
) -> None:
    ids = commands(engine, [("dead", 3), ("live", 3)])
    (other,) = commands(engine, [("dead", 1)], channel="webhook")["dead"]  # another channel's: never deferred
    clock = [T0]

    class Meters:
        """``dead`` cannot be reached (retried twice, then refused for good); ``live`` takes everything."""

        def __init__(self) -> None:
            self.sent: list[Message] = []
            self.dead = [SendError("unreachable"), SendError("unreachable"), SendError("refused", permanent=True)]

        def send(self, message: Message) -> None:
            self.sent.append(message)
            if message.recipient == "dead" and self.dead:
                raise self.dead.pop(0)

    meters = Meters()
    policy = Policy(backoff_base=30, backoff_max=30, lease=10)
    w = Worker(engine, {HEADEND: meters}, policy=policy, clock=lambda: clock[0], rnd=lambda: 1.0)
    while w.run_batch().claimed:  # the live meter drains while the dead one's head waits out its backoff
        pass
    assert by_recipient(meters.sent) == {"dead": [ids["dead"][0]], "live": ids["live"]}
    # the rows behind the head are due no sooner than it is: claims meanwhile do not walk past them
    due = {r.id: r.next_attempt_at for r in rows(engine)}
    assert [due[i] for i in ids["dead"]] == [T0 + dt.timedelta(seconds=30)] * 3 and due[other] == T0
    clock[0] += dt.timedelta(seconds=30)  # the head's second try; nothing behind it goes meanwhile
    while w.run_batch().claimed:
        pass
    assert by_recipient(meters.sent)["dead"] == [ids["dead"][0]] * 2
    assert [r.status for r in rows(engine) if r.id in ids["dead"]] == ["pending"] * 3
    # its third try is refused for good (dead): the ones behind it go at once, in order, with no backoff of theirs
    clock[0] += dt.timedelta(seconds=30)
    while w.run_batch().claimed:
        pass
    assert by_recipient(meters.sent)["dead"] == [ids["dead"][0]] * 3 + ids["dead"][1:]
    head = next(r for r in rows(engine) if r.id == ids["dead"][0])
    assert (head.status, head.last_error) == ("dead", "refused")
    assert [r.status for r in rows(engine)].count("sent") == 5


def test_a_retry_that_lost_its_lease_defers_nothing(engine: Engine) -> None:  # noqa: F811
    ids = commands(engine, [("m1", 3)])
    (stale,) = claim(engine, T0)  # a worker takes the head, stalls past its lease; another takes it over
    (taken,) = claim(engine, T0 + LEASE + dt.timedelta(seconds=1))
    later = T0 + dt.timedelta(hours=1)
    assert q.settle(engine, {"retry": [{**stale.token, "k_next": later, "k_error": "late"}]}) == {"retry": 0}
    assert [r.next_attempt_at for r in rows(engine)][1:] == [T0, T0]  # the stale try wrote nothing, deferred none
    assert q.settle(engine, {"retry": [{**taken.token, "k_next": later, "k_error": "away"}]}) == {"retry": 1}
    assert [r.next_attempt_at for r in rows(engine)] == [later] * 3 and taken.id == ids["m1"][0]


def test_many_workers_at_once_keep_each_meters_order(engine: Engine) -> None:  # noqa: F811
    """Four dispatchers (threads: on PostgreSQL each claim is a transaction of its own, SKIP LOCKED; on SQLite
    BEGIN IMMEDIATE serialises them) over 8 meters' interleaved rows, one send in five failing once: each meter
    was handed its rows in the order written (a row's retries before the next row), every row sent once."""
    rnd = random.Random(16)
    plan = [(f"m{rnd.randrange(8)}", 1) for _ in range(120)]
    ids = commands(engine, plan)
    lock = threading.Lock()
    handed: list[Message] = []
    failed: set[int] = set()

    class Flaky:
        def send(self, message: Message) -> None:
            with lock:
                handed.append(message)
                fail = message.id not in failed and rnd.random() < 0.2
                if fail:
                    failed.add(message.id)
            if fail:
                raise SendError("broker away")

    policy = Policy(backoff_base=0.01, backoff_max=0.02, lease=30)
    stop = threading.Event()
    workers = [
        Worker(engine, {HEADEND: Flaky()}, batch_size=5, policy=policy, stopping=stop, name=f"w{i}") for i in range(4)
    ]
    errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            w.run(poll_interval=0.01)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=90)
        while any(r.status == "pending" for r in rows(engine)) and dt.datetime.now() < deadline:
            stop.wait(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert {r.status for r in rows(engine)} == {"sent"}
    assert failed, "no send failed: the retries were not exercised"
    for recipient, order in by_recipient(handed).items():
        assert order == sorted(order), f"{recipient} was handed {order}"
        assert list(dict.fromkeys(order)) == ids[recipient]


def test_the_oldest_open_row_rule_is_a_probe_of_the_partial_index(engine: Engine) -> None:  # noqa: F811
    commands(engine, [("m1", 2)])
    stmt = q._claim_statement((HEADEND,), (HEADEND,))
    params = {"now": T0, "limit": 100, "lease_until": T0 + LEASE}
    compiled = stmt.compile(dialect=engine.dialect)
    bound = compiled.construct_params(params)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # on a table this small only a plan without seqscans says it
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}", bound))
        else:  # qmark: the parameters by position, times as SQLite stores them
            values = tuple(
                str(v) if isinstance(v, dt.datetime) else v for v in (bound[k] for k in compiled.positiontup or ())
            )
            found = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values).all()
            plan = "\n".join(str(r[-1]) for r in found)
        conn.rollback()
    assert "ix_outbox_open" in plan, plan
    names: list[Any] = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            names = list(conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_outbox_open'")))
        else:
            names = list(conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ix_outbox_open'")))
    (definition,) = names
    assert "pending" in str(definition[0]) and "recipient" in str(definition[0])
