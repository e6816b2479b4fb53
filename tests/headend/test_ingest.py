"""``mita worker ingest`` against a real Mosquitto (the ``mqtt_broker`` fixture) on SQLite and PostgreSQL.

Most tests publish into the worker's persistent session while it is away (a first run makes the session and its
shared subscriptions, then leaves), then run it until it is idle: the order of what the broker hands over is
then the order published, and nothing depends on timing. The kill test runs the real command in a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from cli_run import run
from mita.headend.ingest import IngestWorker, Options, months
from mita.headend.mqttclient import Session
from mita.telemetry import topics
from mita.telemetry.obis import Medium
from mita.telemetry.payload import Event, Events, Reading, Readings, Status
from mita.vend import database, registry, sample
from mita.vend.schema import alarms, meter_events, meter_state, readings

MITA = str(Path(sys.executable).with_name("mita"))
#: A quarter hour two days ago: inside the retention, this month's partition or last month's.
T0 = (int(time.time()) - 2 * 86_400) // 900 * 900


@dataclass
class Fleet:
    url: str
    engine: Engine
    drns: list[str]
    ids: dict[str, int]


@pytest.fixture
def fleet(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """Three meters on an empty database (SQLite or PostgreSQL)."""
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    sample.create_group_and_tariff(engine, "Ingest town")
    drns = [sample.meter_number(f"4750077{i:03d}") for i in range(3)]
    reg = registry.Registry(engine)
    for drn in drns:
        reg.create_meter(registry.SYSTEM, drn=drn, sgc=sample.SGC, tariff="domestic")
    with engine.connect() as conn:
        ids = {drn: int(i) for drn, i in conn.execute(text("SELECT drn, id FROM meters"))}
    try:
        yield Fleet(url, engine, drns, ids)
    finally:
        engine.dispose()


def block(first_seq: int, n: int = 4, at: int = T0, medium: Medium = Medium.ELECTRICITY) -> bytes:
    """A readings message: ``n`` readings of 15 minutes from ``at``, seq from ``first_seq``; register 1000 + seq."""
    return Readings(900, tuple(
        Reading(first_seq + k, at + k * 900, medium, 1000 + first_seq + k, 300, 5000, True) for k in range(n)
    )).encode()  # fmt: skip


def publish(broker: Any, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1, every PUBACK waited for: the broker holds them (for the worker's session) when this returns."""
    session = Session(broker.url, f"test-publisher-{secrets.token_hex(3)}", clean_start=True, session_expiry=0)
    session.start()
    try:
        session.wait_connected(10)
        infos = [session.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        session.stop()


def readings_of(drn: str, payload: bytes) -> tuple[str, bytes]:
    return topics.topic(drn, topics.Kind.READINGS), payload


def worker(fleet: Fleet, broker: Any, **options: Any) -> IngestWorker:
    settings = {"client_id": "test-ingest-0", "group": "test", "batch_size": 100, "max_delay": 0.02,
                "idle_exit": 0.4, **options}  # fmt: skip
    return IngestWorker(fleet.engine, broker.url, Options(**settings))


def primed(fleet: Fleet, broker: Any, **options: Any) -> None:
    """The worker's session and its shared subscriptions, made by a first run that leaves at once."""
    worker(fleet, broker, idle_exit=0.1, **options).run()


def ingest(fleet: Fleet, broker: Any, messages: list[tuple[str, bytes]], **options: Any) -> dict[str, Any]:
    """Publish ``messages`` into the worker's session, then run it until idle: its counts."""
    publish(broker, messages)
    return worker(fleet, broker, **options).run().as_dict()


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------- exactly once


def test_a_message_published_twice_is_stored_once(fleet: Fleet, mqtt_broker: Any) -> None:
    drn = fleet.drns[0]
    primed(fleet, mqtt_broker)
    twice = [readings_of(drn, block(0)), readings_of(drn, block(0))]
    done = ingest(fleet, mqtt_broker, twice)
    assert done["messages"] == 2 and done["readings"] == 4 and done["repeats_in_batch"] == 4
    # the same message again, in a later batch: found stored (on PostgreSQL, by the COPY's key violation)
    again = ingest(fleet, mqtt_broker, [readings_of(drn, block(0)), readings_of(drn, block(4))])
    assert again["readings"] == 4 and again["duplicate_readings"] == 4
    if fleet.url.startswith("postgresql"):
        assert again["staged_batches"] == 1
    with fleet.engine.connect() as conn:
        rows = conn.execute(select(readings.c.seq, readings.c.register).order_by(readings.c.seq)).all()
    assert [tuple(r) for r in rows] == [(seq, 1000 + seq) for seq in range(8)]
    assert again["refused"] == {} and again["not_acked"] == 0


def test_meter_state_moves_forward_only(fleet: Fleet, mqtt_broker: Any) -> None:
    drn, meter = fleet.drns[1], fleet.ids[fleet.drns[1]]
    primed(fleet, mqtt_broker)
    ingest(fleet, mqtt_broker, [readings_of(drn, block(8, at=T0 + 8 * 900))])
    late = [readings_of(drn, block(0)), (topics.topic(drn, topics.Kind.STATUS), Status(True, T0 + 3600).encode())]
    ingest(fleet, mqtt_broker, late)
    with fleet.engine.connect() as conn:
        state = conn.execute(select(meter_state).where(meter_state.c.meter_id == meter)).one()
    assert state.seq == 11 and aware(state.read_at) == utc(T0 + 11 * 900) and state.register == 1011
    assert state.medium == "electricity" and state.online is True
    assert count(fleet.engine, readings) == 8  # the late readings are stored; the state stays with the newest
    # an older status changes nothing; a last will (no time: its receipt time) is newer than both
    ingest(fleet, mqtt_broker, [(topics.topic(drn, topics.Kind.STATUS), Status(False, T0).encode())])
    with fleet.engine.connect() as conn:
        assert conn.execute(select(meter_state.c.online).where(meter_state.c.meter_id == meter)).scalar() is True
    ingest(fleet, mqtt_broker, [(topics.topic(drn, topics.Kind.STATUS), Status(False).encode())])
    with fleet.engine.connect() as conn:
        online, status_at = conn.execute(
            select(meter_state.c.online, meter_state.c.status_at).where(meter_state.c.meter_id == meter)
        ).one()
    assert online is False and aware(status_at) > utc(T0 + 3600)


def test_events_are_stored_once_and_a_tamper_event_raises_one_alarm(fleet: Fleet, mqtt_broker: Any) -> None:
    drn, meter = fleet.drns[2], fleet.ids[fleet.drns[2]]
    primed(fleet, mqtt_broker)
    cover = Events((Event(7, T0, "meter_cover_removed"), Event(8, T0 + 60, "power_down"))).encode()
    done = ingest(fleet, mqtt_broker, [(topics.topic(drn, topics.Kind.EVENTS), cover)] * 2)
    assert done["events"] == 2 and done["alarms_opened"] == 1
    again = ingest(fleet, mqtt_broker, [(topics.topic(drn, topics.Kind.EVENTS), cover)])
    assert again["events"] == 0 and again["duplicate_events"] == 2 and again["alarms_opened"] == 0
    with fleet.engine.connect() as conn:
        events = conn.execute(select(meter_events.c.event, meter_events.c.code).order_by(meter_events.c.seq)).all()
        raised = conn.execute(select(alarms.c.meter_id, alarms.c.rule, alarms.c.occurrences)).all()
        event_at = conn.execute(select(meter_state.c.event_at).where(meter_state.c.meter_id == meter)).scalar()
    assert [tuple(e) for e in events] == [("meter_cover_removed", 44), ("power_down", 1)]
    assert [tuple(a) for a in raised] == [(meter, "cover", 1)]  # a redelivered event raises nothing again
    assert event_at is not None and aware(event_at) == utc(T0 + 60)


def test_unknown_meters_and_bad_payloads_are_counted_acknowledged_and_not_fatal(
    fleet: Fleet, mqtt_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    drn = fleet.drns[0]
    primed(fleet, mqtt_broker)
    secret = b'{"v":1,"readings":"s3cr3t-payload-content"}'
    messages = [
        readings_of(sample.meter_number("9999999999"), block(0)),  # a meter the database does not know
        readings_of(drn, b"{not json"),
        readings_of(drn, b'{"v":2,"readings":[]}'),
        readings_of(drn, secret),
        ("mita/v1/123/readings", block(0)),  # not a meter number
        readings_of(drn, block(0)),
    ]
    done = ingest(fleet, mqtt_broker, messages)
    assert done["refused"] == {"unknown_meter": 1, "bad_json": 1, "bad_version": 1, "bad_field": 1, "bad_topic": 1}
    assert done["readings"] == 4 and done["messages"] == 6
    assert "s3cr3t" not in caplog.text  # counted and logged by code, never the payload
    # every one was acknowledged: the session holds nothing more
    assert worker(fleet, mqtt_broker).run().messages == 0


def test_a_worker_reconnects_after_the_broker_restarts(fleet: Fleet, mqtt_broker: Any) -> None:
    """The broker killed and started again: the worker reconnects (with backoff) and subscribes again. (The
    broker's persistence file cannot be written here: Mosquitto started as root runs as ``mosquitto``, which cannot
    enter pytest's folders; so the sessions are lost with the broker, and the test publishes again once the worker
    is back.)"""
    import threading

    drn = fleet.drns[0]
    primed(fleet, mqtt_broker)
    stopping = threading.Event()
    running = worker(fleet, mqtt_broker, idle_exit=None)
    running.stopping = stopping
    thread = threading.Thread(target=running.run)
    thread.start()
    try:
        publish(mqtt_broker, [readings_of(drn, block(4 * m, at=T0 + 4 * m * 900)) for m in range(10)])
        _wait(lambda: count(fleet.engine, readings) == 40)
        mqtt_broker.restart(signal.SIGKILL)
        _wait(lambda: running.session.generation >= 2 and running.session.connected.is_set())
        time.sleep(0.3)  # subscribed again
        publish(mqtt_broker, [readings_of(drn, block(4 * m, at=T0 + 4 * m * 900)) for m in range(10, 20)])
        _wait(lambda: count(fleet.engine, readings) == 80)
    finally:
        stopping.set()
        thread.join(30)
    assert running.counts.readings == 80 and running.counts.duplicate_readings == 0


def _wait(done: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        time.sleep(0.02)


# ---------------------------------------------------------------------- partitions and retention


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)
def test_partitions_are_made_ahead_and_on_demand_and_dropped_past_retention(fleet: Fleet, mqtt_broker: Any) -> None:
    now = int(time.time())
    current = months.month_of(now)
    old = current - 30
    bounds = f"FROM (to_timestamp({months.start(old)})) TO (to_timestamp({months.start(old + 1)}))"
    with fleet.engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {months.name(old)} PARTITION OF readings FOR VALUES {bounds}"))
    primed(fleet, mqtt_broker, retention_months=24)
    with fleet.engine.connect() as conn:
        listed = conn.execute(text("SELECT relname FROM pg_class WHERE relname LIKE 'readings_p%' AND relkind = 'r'"))
        names = set(listed.scalars())
    assert names == {months.name(m) for m in range(current, current + 3)}  # the old one dropped, three ahead
    drn = fleet.drns[0]
    ahead = months.start(current + 5) + 3600  # a clock five months ahead: its month made on demand
    messages = [
        readings_of(drn, block(0, n=1, at=ahead)),
        readings_of(drn, block(1, n=1, at=months.start(current - 25))),  # past the retention
        readings_of(drn, block(2, n=1, at=months.start(current + 14))),  # past the horizon
        readings_of(drn, block(3, n=1, at=months.start(current - 24))),  # the oldest month kept
    ]
    done = ingest(fleet, mqtt_broker, messages, retention_months=24)
    assert done["readings"] == 2 and done["dropped"] == {"too_old": 1, "too_new": 1}
    assert set(done["partitions_made"]) == {months.name(current + 5), months.name(current - 24)}
    with fleet.engine.connect() as conn:
        stored = conn.execute(text("SELECT tableoid::regclass::text, seq FROM readings ORDER BY seq")).all()
    assert [tuple(r) for r in stored] == [(months.name(current + 5), 0), (months.name(current - 24), 3)]


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_the_upkeep_runs_under_a_steady_stream(fleet: Fleet, mqtt_broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    primed(fleet, mqtt_broker)
    publish(mqtt_broker, [readings_of(fleet.drns[0], block(4 * m, at=T0 + 4 * m * 900)) for m in range(300)])
    running = worker(fleet, mqtt_broker, batch_size=2, receive_maximum=1000, upkeep_every=0.05)
    upkept = []
    real = running._upkeep
    monkeypatch.setattr(running, "_upkeep", lambda required=False: upkept.append(required) or real(required))
    assert running.run().readings == 1200
    assert upkept[0] is True and len(upkept) >= 4  # at start, and again while the 150 batches kept coming


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_sqlite_keeps_readings_within_the_retention_without_partitions(fleet: Fleet, mqtt_broker: Any) -> None:
    current = months.month_of(int(time.time()))
    stale = months.start(current - 3)
    with fleet.engine.begin() as conn:
        conn.execute(readings.insert(), {"meter_id": fleet.ids[fleet.drns[0]], "read_at": utc(stale), "seq": 1,
                                         "received_at": utc(stale), "register": 1, "demand": 0, "credit": 0,
                                         "relay_closed": True})  # fmt: skip
    primed(fleet, mqtt_broker, retention_months=2)
    assert count(fleet.engine, readings) == 0


# ---------------------------------------------------------------------- SIGKILL


def _command(fleet: Fleet, broker: Any, idle: float) -> list[str]:
    return [MITA, "worker", "ingest", "--database-url", fleet.url, "--mqtt-url", broker.url, "--client-id",
            "test-killed-0", "--group", "test", "--batch-size", "5", "--max-delay", "0.01",
            "--idle-exit", str(idle)]  # fmt: skip


def test_a_worker_killed_with_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    fleet: Fleet, mqtt_broker: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITA_DATABASE")}
    subprocess.run(_command(fleet, mqtt_broker, 0.3), env=env, check=True, capture_output=True, timeout=60)
    per_meter = 500  # messages of 4 readings, for each of the three meters: 6,000 readings, 300 batches
    messages = [readings_of(drn, block(4 * m, at=T0 + 4 * m * 900)) for m in range(per_meter) for drn in fleet.drns]
    publish(mqtt_broker, messages)
    total = 4 * len(messages)
    first = subprocess.Popen(_command(fleet, mqtt_broker, 5), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while (stored := count(fleet.engine, readings)) < total // 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = count(fleet.engine, readings)
    assert 0 < at_kill < total, f"not killed mid-stream ({stored} of {total} stored)"
    time.sleep(1.0)
    second = subprocess.run(_command(fleet, mqtt_broker, 1.5), env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    done = json.loads(second.stdout.strip().splitlines()[-1])
    assert done["readings"] == total - at_kill
    with fleet.engine.connect() as conn:
        rows = conn.execute(select(readings.c.meter_id, readings.c.seq, readings.c.register)).all()
    assert len(rows) == total
    expected = {(fleet.ids[drn], seq, 1000 + seq) for drn in fleet.drns for seq in range(4 * per_meter)}
    assert {tuple(r) for r in rows} == expected


def test_a_password_in_the_mqtt_url_option_is_refused() -> None:
    result = run(["worker", "ingest", "--mqtt-url", "mqtt://ingest:hunter2@127.0.0.1:1"])
    assert result.exit_code == 1 and result.stderr.startswith("error[secret_on_command_line]: ")
    assert "hunter2" not in result.output


def test_sigterm_stops_a_worker_after_its_batch_and_the_rest_waits_in_its_session(
    fleet: Fleet, mqtt_broker: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITA_DATABASE")}
    subprocess.run(_command(fleet, mqtt_broker, 0.3), env=env, check=True, capture_output=True, timeout=60)
    messages = [readings_of(drn, block(4 * m, at=T0 + 4 * m * 900)) for m in range(300) for drn in fleet.drns]
    publish(mqtt_broker, messages)
    running = subprocess.Popen(_command(fleet, mqtt_broker, 60), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while count(fleet.engine, readings) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    running.send_signal(signal.SIGTERM)
    out, err = running.communicate(timeout=30)
    assert running.returncode == 0, err[-2000:]
    assert "SIGTERM: stopping after the current batch" in err
    first = json.loads(out.strip().splitlines()[-1])
    assert count(fleet.engine, readings) == first["readings"] < 4 * len(messages)  # acknowledged = stored
    rest = subprocess.run(_command(fleet, mqtt_broker, 1.0), env=env, capture_output=True, text=True, timeout=120)
    second = json.loads(rest.stdout.strip().splitlines()[-1])
    assert second["duplicate_readings"] == 0, (first, second, err[-3000:])
    assert count(fleet.engine, readings) == 4 * len(messages)
