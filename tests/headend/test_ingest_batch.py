"""The ingest's pure parts: months and the retention window, and a batch of messages turned into rows."""

from __future__ import annotations

import calendar

import pytest

from mita.headend.ingest import batch, months
from mita.headend.ingest.batch import Message
from mita.telemetry.errors import TelemetryError
from mita.telemetry.obis import Medium
from mita.telemetry.payload import Event, Events, Reading, Readings, Status

NOW = calendar.timegm((2026, 12, 4, 9, 0, 0))
T0 = calendar.timegm((2026, 12, 3, 0, 0, 0))
WINDOW = months.Window.at(NOW, 24)
DRN, OTHER = "47500770018", "47500770026"
IDS = {DRN: 1, OTHER: 2}


def test_months_are_indexes_with_names_and_starts() -> None:
    december = months.month_of(NOW)
    assert months.name(december) == "readings_p202612" and months.name(december + 1) == "readings_p202701"
    assert months.parse_name("readings_p202701") == december + 1
    assert months.parse_name("readings_p202613") is None and months.parse_name("readings") is None
    assert months.start(december + 1) == calendar.timegm((2027, 1, 1, 0, 0, 0))
    assert months.month_of(months.start(december + 1) - 1) == december


def test_the_window_keeps_the_retention_before_this_month_and_a_horizon_after() -> None:
    assert WINDOW.oldest == calendar.timegm((2024, 12, 1, 0, 0, 0))
    assert WINDOW.newest == calendar.timegm((2028, 1, 1, 0, 0, 0))
    assert list(WINDOW.ahead()) == [WINDOW.current, WINDOW.current + 1, WINDOW.current + 2]


def message(body: Readings | Events | Status | None, drn: str = DRN, received: int = NOW, error: str | None = None,
            mid: int = 1) -> Message:  # fmt: skip
    return Message(mid, 1, 1, received, drn if body is not None else "", body, error)


def readings(first: int, n: int = 4, at: int = T0) -> Readings:
    return Readings(900, tuple(Reading(first + k, at + 900 * k, Medium.WATER, 10 + k, 5, 99, k % 2 == 0)
                               for k in range(n)))  # fmt: skip


def test_readings_become_rows_once_each_and_the_latest_per_meter() -> None:
    messages = [message(readings(4, at=T0 + 3600)), message(readings(0)), message(readings(0), mid=2),
                message(readings(0), drn=OTHER)]  # fmt: skip
    rows = batch.assemble(messages, IDS, WINDOW)
    assert len(rows.readings) == 12 and rows.repeats == 4
    assert rows.readings[0] == (1, T0 + 3600, 4, NOW, 10, 5, 99, True, None)
    assert [(s.meter_id, s.seq, s.at, s.medium) for s in rows.latest] == [
        (1, 7, T0 + 3600 + 2700, "water"),
        (2, 3, T0 + 2700, "water"),
    ]
    assert rows.months == {months.month_of(T0)}


def test_refusals_are_counted_by_code_and_readings_outside_the_window_dropped() -> None:
    old = Readings(900, (Reading(1, WINDOW.oldest - 1, Medium.ELECTRICITY, 1, 1, 1, True),))
    ahead = Readings(900, (Reading(2, WINDOW.newest, Medium.ELECTRICITY, 1, 1, 1, True),))
    messages = [message(None, error="bad_json"), message(readings(0), drn="47500770034"), message(old),
                message(ahead), message(None, error="bad_event")]  # fmt: skip
    rows = batch.assemble(messages, IDS, WINDOW)
    assert not rows
    assert rows.refused == {"bad_json": 1, "unknown_meter": 1, "bad_event": 1}
    assert rows.dropped == {"too_old": 1, "too_new": 1}


def test_events_once_with_each_meters_latest_time_and_statuses_latest_first() -> None:
    events = Events((Event(3, T0 + 60, "meter_cover_removed"), Event(4, T0 + 120, "meter_cover_closed")))
    messages = [message(events), message(events), message(Status(True, T0 + 10)), message(Status(False, T0)),
                message(Status(False), drn=OTHER, received=NOW)]  # fmt: skip
    rows = batch.assemble(messages, IDS, WINDOW)
    assert [(e.meter_id, e.seq, e.name, e.code) for e in rows.events] == [
        (1, 3, "meter_cover_removed", 44),
        (1, 4, "meter_cover_closed", 45),
    ]
    assert rows.event_times == [(1, T0 + 120)] and rows.repeats == 2
    # the newer of two statuses stands; a last will (no time) takes its receipt time
    assert [tuple(s) for s in rows.statuses] == [(1, True, T0 + 10), (2, False, NOW)]


def test_decode_reads_the_three_kinds_and_refuses_the_rest() -> None:
    drn, body = batch.decode(f"mita/v1/{DRN}/readings", readings(0).encode())
    assert drn == DRN and isinstance(body, Readings)
    assert isinstance(batch.decode(f"mita/v1/{DRN}/status", Status(True, 5).encode())[1], Status)
    with pytest.raises(TelemetryError) as refused:
        batch.decode(f"mita/v1/{DRN}/ack", b"{}")
    assert refused.value.code == "bad_topic"
    with pytest.raises(TelemetryError) as refused:
        batch.decode(f"mita/v1/{DRN}/events", b'{"v":1,"events":[{"seq":1,"t":1,"event":"nope"}]}')
    assert refused.value.code == "bad_event"
