"""Alarms (mita.headend.alarms) on SQLite and PostgreSQL: raised, repeated (one open alarm, its occurrences
counted), acknowledged, closed, and raised again as a new alarm; refused moves as typed errors; who may do what;
the list's filters and pages; a meter's timeline, newest first across alarms, events, commands and vends."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from mita.headend import alarms, registry
from mita.headend.alarms import AlarmFilter, Raised
from mita.vend import database
from mita.vend.errors import VendError
from mita.vend.lifecycles import AlarmSeverity
from mita.vend.schema import alarms as alarms_table
from mita.vend.schema import audit, meters
from vend_fixtures import DRN, World, build_world

from .telemetry_rows import NOW, add_meter, drn, event

T0 = dt.datetime(2026, 3, 10, 9, 0)  # wall clock, as the alarms table keeps it
HIGH, MEDIUM, LOW = AlarmSeverity.HIGH, AlarmSeverity.MEDIUM, AlarmSeverity.LOW


@pytest.fixture
def world(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    try:
        yield build_world(engine)
    finally:
        engine.dispose()


def meter_id(w: World) -> int:
    return int(w.meter_row().id)


def raise_(w: World, *items: Raised, now: dt.datetime = T0 + dt.timedelta(hours=1)) -> int:
    with w.engine.begin() as conn:
        return alarms.raise_alarms(conn, items, now)


def cover(w: World, minutes: int = 0, **extra: Any) -> Raised:
    at = T0 + dt.timedelta(minutes=minutes)
    return Raised(meter_id(w), "cover", extra.pop("severity", MEDIUM), "cover opened", {"n": minutes}, at, **extra)


def rows(w: World) -> list[Any]:
    with w.engine.connect() as conn:
        return list(conn.execute(select(alarms_table).order_by(alarms_table.c.id)))


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(VendError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value


def test_raised_repeated_acknowledged_closed_and_raised_again_as_a_new_alarm(world: World) -> None:
    w = world
    assert raise_(w, cover(w)) == 1
    assert raise_(w, cover(w, 5), cover(w, 9)) == 0  # repeats: one statement, one alarm
    (row,) = rows(w)
    assert (row.status, row.occurrences, row.opened_at, row.last_seen_at) == ("open", 3, T0, T0 + dt.timedelta(
        minutes=9))  # fmt: skip
    assert row.evidence == {"n": 9}  # the latest figures

    ack = alarms.acknowledge(w.engine, w.operator, row.id, at=T0 + dt.timedelta(minutes=20))
    assert ack["status"] == "acknowledged" and ack["acknowledged_by"] == "test operator"
    assert raise_(w, cover(w, 30)) == 0  # acknowledged: someone is on it; still counted
    assert rows(w)[0].occurrences == 4 and rows(w)[0].status == "acknowledged"

    closed = alarms.close(w.engine, w.admin, row.id, at=T0 + dt.timedelta(minutes=40), note="cover resealed")
    assert (closed["status"], closed["closed_by"], closed["note"]) == ("closed", "test admin", "cover resealed")

    assert raise_(w, cover(w, 50)) == 1  # closed is final: the same condition again is a new alarm
    first, second = rows(w)
    assert first.status == "closed" and first.occurrences == 4
    assert second.status == "open" and second.occurrences == 1 and second.id != first.id
    with w.engine.connect() as conn:
        actions = [(a.action, a.actor, a.detail) for a in conn.execute(select(audit).where(audit.c.entity == "alarm"))]
    assert actions == [
        ("alarm_acknowledged", "test operator", {"from": "open"}),
        ("alarm_closed", "test admin", {"from": "acknowledged", "note": "cover resealed"}),
    ]


def test_an_open_alarm_closes_directly_and_refused_moves_are_typed(world: World) -> None:
    w = world
    raise_(w, cover(w))
    alarm_id = rows(w)[0].id
    alarms.acknowledge(w.engine, w.operator, alarm_id, at=T0)
    refused("already_acknowledged", alarms.acknowledge, w.engine, w.operator, alarm_id, at=T0)
    alarms.close(w.engine, w.operator, alarm_id, at=T0, note="done")
    refused("alarm_closed", alarms.close, w.engine, w.operator, alarm_id, at=T0)
    refused("alarm_closed", alarms.acknowledge, w.engine, w.operator, alarm_id, at=T0)
    refused("not_found", alarms.close, w.engine, w.operator, alarm_id + 100, at=T0)
    raise_(w, cover(w, 1))
    fresh = rows(w)[-1].id
    assert alarms.close(w.engine, w.operator, fresh, at=T0)["status"] == "closed"  # open -> closed, no note
    assert rows(w)[-1].note is None


def test_vendors_may_not_see_or_move_alarms(world: World) -> None:
    w = world
    raise_(w, cover(w))
    alarm_id = rows(w)[0].id
    refused("forbidden", alarms.list_alarms, w.engine, w.vendor)
    refused("forbidden", alarms.get, w.engine, w.vendor, alarm_id)
    refused("forbidden", alarms.acknowledge, w.engine, w.vendor, alarm_id, at=T0)
    refused("forbidden", alarms.close, w.engine, w.vendor, alarm_id, at=T0)
    refused("forbidden", alarms.timeline, w.engine, w.vendor, DRN)
    refused("forbidden", alarms.telemetry, w.engine, w.vendor, DRN)
    assert alarms.get(w.engine, w.operator, alarm_id)["status"] == "open"
    assert rows(w)[0].status == "open"


def test_a_batch_keeps_the_highest_severity_and_a_meter_clock_ahead_does_not_open_an_alarm_in_the_future(
    world: World,
) -> None:
    w = world
    now = T0 + dt.timedelta(hours=1)
    ahead = Raised(meter_id(w), "magnetic", LOW, "field", {}, now + dt.timedelta(days=2))
    assert raise_(w, ahead, cover(w), cover(w, 1, severity=HIGH), cover(w, 2, severity=LOW), now=now) == 2
    by_rule = {r.rule: r for r in rows(w)}
    assert by_rule["cover"].severity == "high" and by_rule["cover"].occurrences == 3
    assert by_rule["magnetic"].opened_at == now
    raise_(w, cover(w, 3, severity=LOW))
    assert {r.rule: r for r in rows(w)}["cover"].severity == "high"  # a repeat never lowers it
    # an aware time is moved to the wall clock; seen_at moves last_seen_at, not opened_at
    aware = T0.astimezone() + dt.timedelta(minutes=4)
    raise_(w, cover(w, 0, seen_at=aware))
    row = {r.rule: r for r in rows(w)}["cover"]
    assert row.opened_at == T0 and row.last_seen_at == T0 + dt.timedelta(minutes=4)


def test_unknown_text_is_refused_before_anything_is_written(world: World) -> None:
    w = world
    bad = cover(w)._replace(rule="x" * 41)
    with w.engine.begin() as conn:
        refused("invalid_request", alarms.raise_alarms, conn, [bad], T0)
    assert rows(w) == []
    assert raise_(w) == 0


def test_the_list_pages_newest_first_without_repeats_while_alarms_open(world: World) -> None:
    w = world
    ids = [meter_id(w)] + [add_meter(w.engine, n) for n in (1, 2)]
    same_time = T0 + dt.timedelta(minutes=30)  # two at one time: the id breaks the tie
    items = [Raised(ids[k % 3], f"rule{k // 3}", LOW, f"alarm {k}", {}, same_time if k >= 4 else
                    T0 + dt.timedelta(minutes=k)) for k in range(6)]  # fmt: skip
    assert raise_(w, *items) == 6
    pages, after = [], None
    while True:
        page = alarms.list_alarms(w.engine, w.operator, limit=2, after=after)
        pages.append(page["items"])
        if len(pages) == 1:  # a new alarm opens while the list is read: it is newer, so not on a later page
            raise_(w, Raised(ids[0], "late", HIGH, "late", {}, T0 + dt.timedelta(hours=1)))
        after = page["next"]
        if after is None:
            break
    flat = [a["summary"] for p in pages for a in p]
    assert [len(p) for p in pages] == [2, 2, 2]
    assert flat == ["alarm 5", "alarm 4", "alarm 3", "alarm 2", "alarm 1", "alarm 0"]


def test_timeline_lists_alarms_events_commands_and_vends_newest_first(world: World) -> None:
    w = world
    registry.register(w.engine, w.admin, DRN, host="127.0.0.1", port=4059, secret=b"s", at=w.now[0])
    vend = w.vend(5000)  # at START (09:30 wall): a vend and its delivery command
    mid = meter_id(w)
    raise_(w, Raised(mid, "cover", MEDIUM, "cover opened", {}, w.now[0] + dt.timedelta(minutes=10)),
           now=w.now[0] + dt.timedelta(hours=1))  # fmt: skip
    ev_at = w.now[0].astimezone() + dt.timedelta(minutes=5)
    event(w.engine, mid, "meter_cover_removed", 40, ev_at, 1)
    out = alarms.timeline(w.engine, w.operator, DRN)
    kinds = [(e["type"], e["at"]) for e in out["items"]]
    assert [k for k, _ in kinds] == ["alarm", "event", "command", "vend"]  # the vend and command: same time
    assert [at for _, at in kinds] == sorted((at for _, at in kinds), reverse=True)
    assert out["items"][3]["id"] == vend["id"] and out["items"][3]["detail"]["amount"] == 5000
    assert out["items"][1]["detail"]["event"] == "meter_cover_removed"
    assert out["next"] is None
    # pages of one: the same entries, in the same order
    seen, after = [], None
    while True:
        page = alarms.timeline(w.engine, w.operator, DRN, limit=1, after=after)
        seen += page["items"]
        after = page["next"]
        if after is None:
            break
    assert seen == out["items"]
    refused("invalid_cursor", alarms.timeline, w.engine, w.operator, DRN, after="bm9wZQ")
    refused("not_found", alarms.timeline, w.engine, w.operator, drn(99))


def test_telemetry_is_the_meters_latest_state(world: World) -> None:
    from .telemetry_rows import Load, house, make_partitions, rows, store

    w = world
    make_partitions(w.engine, NOW.date(), 1)
    refused("not_found", alarms.telemetry, w.engine, w.operator, DRN)  # nothing reported yet
    store(w.engine, list(rows(meter_id(w), Load(house(1), credit=5000), NOW - dt.timedelta(hours=1), NOW)))
    out = alarms.telemetry(w.engine, w.operator, DRN)
    assert out["meter"] == DRN and out["medium"] == "electricity" and out["online"] is True
    assert out["read_at"] == NOW.replace(minute=0) and out["read_at"].utcoffset() == out["read_at"].astimezone(
        ).utcoffset()  # fmt: skip
    assert out["credit"] + out["register"] == 5000


def test_alarm_filters(world: World) -> None:
    w = world
    other = add_meter(w.engine, 1)
    raise_(w, cover(w), Raised(other, "leak", HIGH, "leak", {}, T0 + dt.timedelta(minutes=5)))
    f = alarms.list_alarms
    assert [a["rule"] for a in f(w.engine, w.operator)["items"]] == ["leak", "cover"]  # newest opened first
    assert [a["rule"] for a in f(w.engine, w.operator, AlarmFilter(meter=DRN))["items"]] == ["cover"]
    assert [a["rule"] for a in f(w.engine, w.operator, AlarmFilter(severity="high"))["items"]] == ["leak"]
    assert [a["rule"] for a in f(w.engine, w.operator, AlarmFilter(rule="cover"))["items"]] == ["cover"]
    assert f(w.engine, w.operator, AlarmFilter(meter=drn(98)))["items"] == []
    since = AlarmFilter(since=T0 + dt.timedelta(minutes=1))
    assert [a["rule"] for a in f(w.engine, w.operator, since)["items"]] == ["leak"]
    until = AlarmFilter(until=(T0 + dt.timedelta(minutes=1)).astimezone())  # aware: moved to the wall clock
    assert [a["rule"] for a in f(w.engine, w.operator, until)["items"]] == ["cover"]
    alarms.acknowledge(w.engine, w.operator, f(w.engine, w.operator)["items"][0]["id"], at=T0)
    assert [a["rule"] for a in f(w.engine, w.operator, AlarmFilter(status="open"))["items"]] == ["cover"]
    refused("invalid_status", f, w.engine, w.operator, AlarmFilter(status="shut"))
    refused("invalid_severity", f, w.engine, w.operator, AlarmFilter(severity="dire"))
    refused("invalid_period", f, w.engine, w.operator, AlarmFilter(since=T0, until=T0))
    refused("invalid_cursor", f, w.engine, w.operator, after="nonsense!")
    with w.engine.connect() as conn:
        assert conn.execute(select(meters.c.id).where(meters.c.id == other)).scalar() == other
