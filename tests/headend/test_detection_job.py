"""The periodic detection job (mita.headend.detection) over readings written straight into the tables, on SQLite
and PostgreSQL: a leak, a silent meter and a bypass raise the right alarms and a normal meter none; a condition
still seen counts occurrences on its open alarm; a low-credit forecast queues exactly one SMS across many passes
and readings, and a new one after a top-up."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mita.headend import detection
from mita.vend import database
from mita.vend.schema import alarms, meters, outbox
from vend_fixtures import World, build_world

from .telemetry_rows import DAY, NOW, Load, add_meter, event, house, make_partitions, rows, store, water

HISTORY = 29 * DAY


@pytest.fixture
def world(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    make_partitions(engine, (NOW - HISTORY).date(), 3)
    try:
        yield build_world(engine)
    finally:
        engine.dispose()


def open_alarms(engine: Engine) -> dict[tuple[str, str], Any]:
    with engine.connect() as conn:
        q = select(meters.c.drn, alarms).join(meters, meters.c.id == alarms.c.meter_id)
        return {(r.drn, r.rule): r for r in conn.execute(q.where(alarms.c.status != "closed"))}


def drn_of(engine: Engine, meter_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(meters.c.drn).where(meters.c.id == meter_id)).scalar_one())


def sms(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox).where(outbox.c.channel == "sms").order_by(outbox.c.id)))


def test_a_leak_a_silent_meter_and_a_bypass_raise_their_alarms_and_a_normal_meter_none(world: World) -> None:
    e = world.engine
    start = NOW - HISTORY
    normal, bypassed, silent = (add_meter(e, n) for n in (1, 2, 3))
    leaking, dry = add_meter(e, 4, utility="water"), add_meter(e, 5, utility="water")
    written: list[dict[str, Any]] = []
    written += rows(normal, Load(house(1)), start, NOW)
    shape = house(2)
    collapse = NOW - 4 * DAY  # the last three whole days (and today) at 40 %
    written += rows(bypassed, Load(lambda at: shape(at) * (0.4 if at > collapse else 1.0)), start, NOW)
    written += rows(silent, Load(house(3)), start, NOW - 2 * DAY)
    store(e, written)
    leak_from = NOW - 3 * DAY
    draws, dry_draws = water(4), water(5)
    store(e, list(rows(leaking, Load(lambda at: draws(at) + (10 if at > leak_from else 0)), start, NOW)), "water")
    store(e, list(rows(dry, Load(dry_draws), start, NOW)), "water")
    event(e, silent, "power_down", 1, NOW - 2 * DAY + dt.timedelta(minutes=1), 1)

    summary = detection.run(e, now=NOW).as_json()

    found = {key for key in open_alarms(e)}
    assert found == {(drn_of(e, bypassed), "bypass"), (drn_of(e, silent), "silent"), (drn_of(e, leaking), "leak")}
    assert summary["meters"] == 5
    assert summary["findings"] == {"bypass": 1, "leak": 1, "silent": 1}
    assert summary["alarms_opened"] == 3 and summary["alarms_repeated"] == 0 and summary["messages_queued"] == 0
    got = open_alarms(e)
    assert got[(drn_of(e, silent), "silent")].evidence["power_down"] is True
    assert got[(drn_of(e, leaking), "leak")].evidence["continuous"] is True
    assert 0.3 <= got[(drn_of(e, bypassed), "bypass")].evidence["ratio"] <= 0.5

    # an hour later, the same conditions: occurrences on the same open alarms, last seen then
    later = NOW + dt.timedelta(hours=1)
    summary = detection.run(e, now=later).as_json()
    assert summary["alarms_opened"] == 0 and summary["alarms_repeated"] == 3
    again = open_alarms(e)
    assert set(again) == found
    for key, row in again.items():
        assert row.occurrences == 2 and row.id == got[key].id
        assert row.opened_at == got[key].opened_at and row.last_seen_at > got[key].last_seen_at


def running_low(engine: Engine, meter_id: int, credit: int, *, until: dt.datetime = NOW) -> Load:
    """A week of a household's use with plenty of credit, then (12 hours before ``until``) ``credit`` left: a
    forecast from then on; the load, to go on with."""
    load = Load(house(meter_id))
    store(engine, list(rows(meter_id, load, until - 8 * DAY, until - DAY / 2)))
    load.credit = credit
    store(engine, list(rows(meter_id, load, until - DAY / 2, until, seq0=10_000)))
    return load


def test_a_low_credit_forecast_queues_one_sms_per_forecast_and_a_new_one_after_a_top_up(world: World) -> None:
    e = world.engine
    meter_id = add_meter(e, 7, phone="+27820000007")
    unwarned = add_meter(e, 8)  # no phone: counted, nothing queued
    load = running_low(e, meter_id, 10_000)  # ~13 kWh a day: under a day left
    running_low(e, unwarned, 10_000)

    first = detection.run(e, now=NOW).as_json()
    assert first["findings"].get("low_credit") == 2 and first["messages_queued"] == 1
    assert first["messages_without_phone"] == 1
    assert first["alarms_opened"] == 0  # the customer's message, not an operator's alarm
    queued = sms(e)
    assert len(queued) == 1 and queued[0].recipient == "+27820000007"
    assert drn_of(e, meter_id) in queued[0].payload["text"] and queued[0].payload["days_left"] < 3

    # passes every hour for six hours, readings arriving between them: the same forecast, nothing new
    at = NOW
    for k in range(6):
        nxt = at + dt.timedelta(hours=1)
        store(e, list(rows(meter_id, load, at, nxt, seq0=20_000 + 10 * k)))
        at = nxt
        assert detection.run(e, now=at + dt.timedelta(minutes=1)).messages_queued == 0
    assert len(sms(e)) == 1 and load.credit > 0

    # a top-up too small to lift the forecast: a new credit period, one new message
    load.credit += 2_000
    nxt = at + dt.timedelta(hours=1)
    store(e, list(rows(meter_id, load, at, nxt, seq0=30_000)))
    assert detection.run(e, now=nxt + dt.timedelta(minutes=1)).messages_queued == 1
    assert detection.run(e, now=nxt + dt.timedelta(minutes=2)).messages_queued == 0
    queued = sms(e)
    assert len(queued) == 2 and queued[0].dedupe_key != queued[1].dedupe_key


def test_a_pass_over_no_telemetry_does_nothing(world: World) -> None:
    out = detection.run(world.engine, now=NOW).as_json()
    assert out["meters"] == 0 and out["findings"] == {} and out["alarms_opened"] == 0


def test_the_settings_threshold_decides_the_low_credit_forecast(world: World) -> None:
    e = world.engine
    meter_id = add_meter(e, 9, phone="+27820000009")
    running_low(e, meter_id, 24_000)  # ~19.5 kWh left at ~13 kWh a day: 1.5 days
    assert detection.run(e, now=NOW, low_credit_days=1.0).messages_queued == 0
    assert detection.run(e, now=NOW, low_credit_days=2.0).messages_queued == 1


def test_mita_headend_detect_once_prints_the_summary(world: World, url: str) -> None:
    import io
    import json
    from contextlib import redirect_stdout

    from mita.cli.main import main

    e = world.engine
    silent = add_meter(e, 3)
    store(e, list(rows(silent, Load(house(3)), NOW - 3 * DAY, NOW - 2 * DAY)))  # silent for two days by now
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["headend", "detect", "--once", "--database-url", url]) == 0
    summary = json.loads(out.getvalue())
    assert summary["meters"] == 1 and summary["findings"]["silent"] == 1 and summary["alarms_opened"] == 1
    assert set(summary) == {"at", "meters", "findings", "alarms_opened", "alarms_repeated", "messages_queued",
                            "messages_without_phone", "seconds"}  # fmt: skip
    assert (drn_of(e, silent), "silent") in open_alarms(e)


def test_mita_headend_detect_rules_chooses_rules(world: World, url: str) -> None:
    import io
    import json
    from contextlib import redirect_stdout

    from mita.cli import headend as cli
    from mita.cli.main import main
    from mita.headend.detect import RULES

    assert tuple(RULES) == cli.RULES
    e = world.engine
    silent = add_meter(e, 3)
    store(e, list(rows(silent, Load(house(3)), NOW - 3 * DAY, NOW - 2 * DAY)))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["headend", "detect", "--rules", "leak,bypass", "--database-url", url]) == 0
    assert json.loads(out.getvalue())["findings"] == {}  # not the silent rule
    assert main(["headend", "detect", "--rules", "nonsense", "--database-url", url]) == 2
