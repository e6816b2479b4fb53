"""The vend on the event loop (``Purchases.vend_async``, PostgreSQL only) against the thread's vend.

It must make the same rows as :meth:`Purchases.vend`, hand every case it does not take (a cold cache, a replay,
a sale needing another statement) back with nothing of its own left in the database, refuse as ``vend`` refuses,
and keep TIDs unique when many vends on one meter wait for its lock and for the pool's connections.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import empty_database
from mita import sts
from mita.vend import apikeys, database, hotpath, registry, sample
from mita.vend.errors import VendError
from mita.vend.service import Caller, VendingService

pytestmark = pytest.mark.postgres
METERS = 3


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[VendingService, Caller, list[str]]]:
    """A utility on a fresh PostgreSQL database: meters with customers, a vendor's API key; a small pool (2), so
    that the event loop's pool has its least, 4 connections, and concurrent vends wait for them."""
    os.environ.setdefault("MITA_MASTER_KEY", secrets.token_hex(32))
    with empty_database("postgresql", tmp_path) as url:
        database.upgrade(url)
        engine = database.make_engine(url, pool_size=2)
        sample.create_group_and_tariff(engine, "Async")
        reg = registry.Registry(engine)
        drns = []
        for i in range(METERS):
            drn = sample.meter_number(f"47{i:08d}")
            reg.create_customer(registry.SYSTEM, account=f"A{i}", name=f"A {i}", debt=10_000, debt_rate="0.1")
            reg.create_meter(registry.SYSTEM, drn=drn, sgc=sample.SGC, customer=f"A{i}", tariff="domestic")
            drns.append(drn)
        vendor = reg.create_vendor(registry.SYSTEM, "async shop")
        _, key = reg.create_api_key("till", "vendor", int(vendor["id"]))
        svc = VendingService(engine)
        try:
            yield svc, apikeys.authenticate(engine, key), drns
        finally:
            engine.dispose()


def _scalar(svc: VendingService, sql: str, **params: Any) -> Any:
    with svc.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _claims(svc: VendingService, key: str) -> int:
    return int(_scalar(svc, "SELECT count(*) FROM idempotency WHERE key = :k", k=key))


def test_a_cold_process_hands_over_and_a_warm_one_vends_as_the_thread_does(shop: Any) -> None:
    svc, caller, drns = shop
    body = {"meter": drns[0], "amount": 5000}
    assert asyncio.run(svc.purchases.vend_async(caller, "cold", body)) is None  # tariff and key not cached yet
    assert _claims(svc, "cold") == 0  # its claim went with its rollback
    by_thread = svc.vend(caller, "cold", body).body  # ... and the thread's path fills the caches
    issued = asyncio.run(svc.purchases.vend_async(caller, "warm", body))
    assert issued is not None and not issued.replayed
    by_loop = issued.body
    assert by_loop.keys() == by_thread.keys() and by_loop["receipt"].keys() == by_thread["receipt"].keys()
    assert by_loop["tokens"][0]["tid"] > by_thread["tokens"][0]["tid"]
    assert svc.vend(caller, "warm", body).body == by_loop  # the stored answer is the one given
    vend_id = by_loop["id"]
    assert _scalar(svc, "SELECT count(*) FROM tokens WHERE vend_id = :v", v=vend_id) == len(by_loop["tokens"])
    debit = _scalar(svc, "SELECT sum(debit) - sum(credit) FROM ledger WHERE vend_id = :v", v=vend_id)
    assert debit == 0  # balanced
    assert _scalar(svc, "SELECT count(*) FROM outbox WHERE vend_id = :v", v=vend_id) == 1
    assert _scalar(svc, "SELECT count(*) FROM audit WHERE entity_id = :v", v=vend_id) == 1
    last = _scalar(svc, "SELECT last_tid FROM meters WHERE drn = :d", d=drns[0])
    assert last == by_loop["tokens"][-1]["tid"]
    assert _scalar(svc, "SELECT purchases FROM meter_months WHERE meter_id = (SELECT id FROM meters WHERE drn = :d)",
                   d=drns[0]) == 2  # fmt: skip


def test_a_replay_and_a_sale_needing_sql_go_to_the_thread_leaving_nothing(shop: Any) -> None:
    svc, caller, drns = shop
    body = {"meter": drns[1], "amount": 4000}
    svc.vend(caller, "warm-up", body)
    first = asyncio.run(svc.purchases.vend_async(caller, "k1", body))
    assert first is not None
    assert asyncio.run(svc.purchases.vend_async(caller, "k1", body)) is None  # not claimed: the thread replays
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None and pool.busy == 0 and pool.idle  # the failed claim's connection is back, rolled back
    replay = svc.vend(caller, "k1", body)
    assert replay.replayed and replay.body == first.body
    with svc.engine.begin() as conn:  # a vendor on credit: charging it is a statement the loop's path leaves
        conn.execute(text("UPDATE vendors SET credit_limit = 10000000"))
    assert asyncio.run(svc.purchases.vend_async(caller, "k2", body)) is None
    assert _claims(svc, "k2") == 0
    assert svc.vend(caller, "k2", body).body["meter"] == drns[1]  # the meter's lock was let go


def test_the_same_key_twice_at_once_makes_one_vend_and_hands_the_other_over(shop: Any) -> None:
    """The second claim of a key in flight waits for the first's transaction, then fails on the key: handed over
    to the thread's path, which replays the vend the first made."""
    svc, caller, drns = shop
    for drn in drns:
        svc.vend(caller, f"warm-{drn}", {"meter": drn, "amount": 3000})

    async def twice() -> list[Any]:
        jobs = [svc.purchases.vend_async(caller, "twice", {"meter": drn, "amount": 3000}) for drn in drns[:2]]
        return await asyncio.gather(*jobs)

    issued = asyncio.run(twice())
    made = [i for i in issued if i is not None]
    assert len(made) == 1 and issued.count(None) == 1
    assert _claims(svc, "twice") == 1
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None and pool.busy == 0 and pool.idle
    again = svc.vend(caller, "twice", {"meter": made[0].body["meter"], "amount": 3000})
    assert again.replayed and again.body == made[0].body


def test_a_refusal_is_raised_and_rolled_back(shop: Any) -> None:
    svc, caller, drns = shop
    svc.vend(caller, "warm-up", {"meter": drns[2], "amount": 4000})
    with svc.engine.begin() as conn:
        conn.execute(text("UPDATE meters SET status = 'blocked' WHERE drn = :d"), {"d": drns[2]})
    with pytest.raises(VendError) as refused:
        asyncio.run(svc.purchases.vend_async(caller, "blocked", {"meter": drns[2], "amount": 4000}))
    assert refused.value.code == "meter_blocked"
    assert _claims(svc, "blocked") == 0
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None and pool.busy == 0 and pool.idle  # its connection is back, idle
    with pytest.raises(sts.StsError) as wrong:
        asyncio.run(svc.purchases.vend_async(caller, "bad", {"meter": "12345678901", "amount": 1}))
    assert wrong.value.code == "check_digit_error"  # refused before any database work, as vend refuses


def test_concurrent_vends_wait_for_the_lock_and_the_pool_and_never_share_a_tid(shop: Any) -> None:
    svc, caller, drns = shop
    for drn in drns:
        svc.vend(caller, f"warm-{drn}", {"meter": drn, "amount": 3000})

    async def many() -> list[Any]:
        jobs = [
            svc.purchases.vend_async(caller, f"c{i}", {"meter": drns[i % METERS], "amount": 3000 + i})
            for i in range(24)
        ]
        return await asyncio.gather(*jobs)

    issued = asyncio.run(many())
    assert all(i is not None for i in issued)  # none handed over: they waited for the pool's 4 connections
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None and pool.size == 4 and pool.busy == 0 and len(pool.idle) <= 4
    tids = [(i.body["meter"], t["tid"]) for i in issued for t in i.body["tokens"]]
    assert len(set(tids)) == len(tids)
    dup = _scalar(svc, "SELECT count(*) FROM (SELECT meter_id, tid FROM tokens GROUP BY 1, 2 HAVING count(*) > 1) d")
    assert dup == 0
    assert _scalar(svc, "SELECT count(*) FROM idempotency WHERE key LIKE 'c%' AND status_code = 201") == 24
    assert _scalar(svc, "SELECT sum(purchases) FROM meter_months") == 24 + METERS


def test_dispose_closes_the_idle_connections(shop: Any) -> None:
    svc, caller, drns = shop
    svc.vend(caller, "warm-up", {"meter": drns[0], "amount": 3000})
    assert asyncio.run(svc.purchases.vend_async(caller, "one", {"meter": drns[0], "amount": 3000})) is not None
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None
    conns = list(pool.idle)
    assert conns
    svc.engine.dispose()
    assert all(c.closed for c in conns) and hotpath.AsyncPool.of(svc.engine) is not pool


@pytest.mark.parametrize("setting", ["synchronous_commit", "fsync"])
def test_a_durability_setting_turned_off_after_start_is_refused_on_both_paths(shop: Any, setting: str) -> None:
    """Finding 3: the vend reads the session's settings in its own claim statement, so a setting that changed
    after the start-up check (here for the database's new sessions; fsync, a server-wide setting, as the
    session would report it) refuses the vend, 503 ``unsafe_database``, with nothing of it left."""
    svc, caller, drns = shop
    body = {"meter": drns[0], "amount": 3000}
    svc.vend(caller, "before", body)  # both paths warm: caches filled, the durable setting passes
    assert asyncio.run(svc.purchases.vend_async(caller, "before-loop", body)) is not None
    real = hotpath.check_durable
    if setting == "synchronous_commit":
        name = svc.engine.url.database
        with svc.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                f'ALTER DATABASE "{name}" SET synchronous_commit = off'
            )
        svc.engine.dispose()  # the pools' sessions end; new ones take the database's setting
        checked = real
    else:  # fsync cannot be set per database: the row the statement returned, as a server with fsync off gives it

        def checked(locked: dict[str, Any]) -> None:
            real({**locked, "fsync": "off"})

    hotpath.check_durable = checked
    try:
        for path, key in (("thread", "after"), ("loop", "after-loop")):
            with pytest.raises(VendError) as refused:
                if path == "thread":
                    svc.vend(caller, key, body)
                else:
                    asyncio.run(svc.purchases.vend_async(caller, key, body))
            assert refused.value.code == "unsafe_database" and setting in refused.value.message
            assert _claims(svc, key) == 0  # rolled back: a retry later vends
    finally:
        hotpath.check_durable = real
    vends = _scalar(svc, "SELECT count(*) FROM vends")
    assert vends == 2


def test_a_failed_write_is_raised_typed_and_its_connection_comes_back_clean(shop: Any) -> None:
    """The write message's error comes back from libpq as psycopg's typed error (here a constraint's, named), the
    vend's transaction is rolled back with its claim, and the connection is idle again for the next vend."""
    svc, caller, drns = shop
    body = {"meter": drns[1], "amount": 3000}
    svc.vend(caller, "warm", body)
    with svc.engine.begin() as conn:  # every ledger line refused from now on
        conn.execute(text("ALTER TABLE ledger ADD CONSTRAINT no_lines CHECK (debit < 0) NOT VALID"))
    with pytest.raises(VendError) as refused:
        asyncio.run(svc.purchases.vend_async(caller, "refused", body))
    assert refused.value.code == "database_refused" and "no_lines" in refused.value.message
    assert _claims(svc, "refused") == 0
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None and pool.busy == 0 and len(pool.idle) == 1
    with svc.engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger DROP CONSTRAINT no_lines"))
    issued = asyncio.run(svc.purchases.vend_async(caller, "refused", body))  # the same key, on the same connection
    assert issued is not None and not issued.replayed and pool.idle and pool.busy == 0


def test_a_silent_database_is_given_up_at_the_deadline_and_the_retry_finds_what_was_done(
    shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction holding the meter's row (a hung session) keeps the vend's claim waiting with no answer: at the
    deadline the vend is refused 503 ``retry``, its connection closed (its late answer goes nowhere), and the retry
    with the same key, once the row is free, makes the one vend."""
    svc, caller, drns = shop
    body = {"meter": drns[2], "amount": 3000}
    svc.vend(caller, "warm-2", body)
    monkeypatch.setattr(hotpath, "ROUND_TRIP_DEADLINE_S", 0.5)
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None
    with svc.engine.connect() as hung:
        hung.execute(text("BEGIN"))
        hung.execute(text("SELECT 1 FROM meters WHERE drn = :d FOR UPDATE"), {"d": drns[2]})
        with pytest.raises(VendError) as late:
            asyncio.run(svc.purchases.vend_async(caller, "silent", body))
        assert late.value.code == "retry" and "0.5 s" in late.value.message
        assert pool.busy == 0 and not pool.idle  # the connection that waited is gone, its slot free
        hung.execute(text("ROLLBACK"))
    issued = asyncio.run(svc.purchases.vend_async(caller, "silent", body))
    assert issued is not None and not issued.replayed
    assert _claims(svc, "silent") == 1
    assert (
        _scalar(svc, "SELECT count(*) FROM vends WHERE meter_id = (SELECT id FROM meters WHERE drn = :d)", d=drns[2])
        == 2
    )


def test_a_vend_cancelled_mid_batch_leaves_nothing_and_its_connection_is_not_reused(shop: Any) -> None:
    """A request cancelled while its claim waits for the meter's lock (the client left) closes its connection,
    whose batch is still owed answers, instead of giving it back to the pool; the claim is rolled back with the
    session, so the same key vends once the row is free."""
    svc, caller, drns = shop
    body = {"meter": drns[0], "amount": 3000}
    svc.vend(caller, "warm-3", body)

    async def cancelled() -> None:
        task = asyncio.create_task(svc.purchases.vend_async(caller, "gone", body))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _while_the_row_is_held(svc, drns[0], cancelled)
    _vends_once(svc, caller, "gone", body)


def test_a_connection_lost_mid_batch_is_a_retry_and_its_slot_comes_back(shop: Any) -> None:
    """The vend's session ended by the server while its claim waits (an administrator's pg_terminate_backend, a
    crash): the exchange reports the lost connection as psycopg does, the vend is refused 503 ``retry``, the
    connection is not given back, and the same key vends once the row is free."""
    svc, caller, drns = shop
    body = {"meter": drns[1], "amount": 3000}
    svc.vend(caller, "warm-4", body)

    async def lost() -> None:
        task = asyncio.create_task(svc.purchases.vend_async(caller, "lost", body))
        for _ in range(100):  # until the claim waits for the row
            await asyncio.sleep(0.05)
            killed = _scalar(
                svc,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            if killed:
                break
        assert killed, "the claim never waited for the row"
        with pytest.raises(VendError) as refused:
            await task
        assert refused.value.code == "retry"

    _while_the_row_is_held(svc, drns[1], lost)
    _vends_once(svc, caller, "lost", body)


def _while_the_row_is_held(svc: VendingService, drn: str, during: Callable[[], Awaitable[None]]) -> None:
    """Run ``during`` while another session holds the meter's row; the vend's connection was closed, not given
    back, and its slot is free."""
    pool = hotpath.AsyncPool.of(svc.engine)
    assert pool is not None
    with svc.engine.connect() as hung:
        hung.execute(text("BEGIN"))
        hung.execute(text("SELECT 1 FROM meters WHERE drn = :d FOR UPDATE"), {"d": drn})
        asyncio.run(during())
        assert pool.busy == 0 and not pool.idle
        hung.execute(text("ROLLBACK"))


def _vends_once(svc: VendingService, caller: Caller, key: str, body: dict[str, Any]) -> None:
    """Once the row is free, the same key makes its one vend."""
    issued = asyncio.run(svc.purchases.vend_async(caller, key, body))
    assert issued is not None and not issued.replayed
    assert _claims(svc, key) == 1
