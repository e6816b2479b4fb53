"""The event logs (IC 7) and their event codes, read whole through dlms-cosem 21.3.2 (its A-XDR decoder takes every
row: date-time and token octet-strings, unsigned event codes, the enum status code)."""

from __future__ import annotations

import datetime as dt

import pytest
from dlms_cosem.clients.dlms_client import DataResultError
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor

from mita import sts
from mita.meter import Meter
from mita.sim import carrier
from mita.sim.events import CAPACITY, EVENT_CODES, OPEN_REASON_EVENTS, TAMPER_EVENTS, EventLogs, Log, Watcher

from .cosem_calls import (
    CLOCK,
    DISCONNECTOR_LOG,
    FRAUD_LOG,
    IC,
    STANDARD_LOG,
    TOKEN_GATEWAY,
    TOKEN_LOG,
    attribute,
    date_time,
    enter,
    get,
    rows,
    session,
    status_code,
    switch,
)
from .sim_fixtures import KEY, SECRET, T0, Sim, make_meter

TID = sts.tid_from_datetime(T0)
AT_T0 = (2024, 3, 1, 12, 0, 0)


def token(tid: int, body: type[sts.Token] = sts.TransferCredit, **fields: int) -> str:
    if body is sts.TransferCredit:
        fields = {"amount": 100, "rnd": 5, "kind": sts.CreditKind.ELECTRICITY, **fields}  # type: ignore[dict-item]
    return sts.encode(body(tid, **fields), sts.EA.STA, KEY)


def codes(client: object, obis: str) -> list[int]:
    return [row[1] for row in rows(client, obis)]  # type: ignore[arg-type]


def ln(text: str) -> bytearray:
    return bytearray(bytes(int(part) for part in text.split(".")))


def test_each_log_names_its_columns_and_sizes(sim: Sim) -> None:
    with session(sim.port) as c:
        for obis, code_object in [
            (STANDARD_LOG, "0.0.96.11.0.255"),
            (FRAUD_LOG, "0.0.96.11.1.255"),
            (DISCONNECTOR_LOG, "0.0.96.11.2.255"),
        ]:
            assert get(c, IC.PROFILE_GENERIC, obis, 3) == [[8, ln(CLOCK), 2, 0], [1, ln(code_object), 2, 0]]
            assert get(c, IC.PROFILE_GENERIC, obis, 8) == CAPACITY
        assert get(c, IC.PROFILE_GENERIC, TOKEN_LOG, 3) == [
            [8, ln(CLOCK), 2, 0],
            [115, ln(TOKEN_GATEWAY), 2, 0],
            [115, ln(TOKEN_GATEWAY), 6, 1],  # element 1 of token_status: the status code
        ]
        assert get(c, IC.PROFILE_GENERIC, TOKEN_LOG, 7) == 0


def test_the_meter_powers_up_when_the_sim_starts_serving_it(sim: Sim) -> None:
    with session(sim.port) as c:
        ((at, code),) = rows(c, STANDARD_LOG)
        assert (date_time(at), code) == (AT_T0, EVENT_CODES["power_up"][0])
        assert get(c, IC.PROFILE_GENERIC, STANDARD_LOG, 7) == 1
        assert get(c, IC.DATA, "0.0.96.11.0.255", 2) == 2
        assert rows(c, FRAUD_LOG) == [] and rows(c, DISCONNECTOR_LOG) == []  # a meter without credit: no event


def test_every_token_entered_remotely_is_in_the_token_transfer_log(sim: Sim) -> None:
    good = carrier.pack(token(TID))
    with session(sim.port, SECRET) as c:
        enter(c, good)
        sim.now[0] = T0 + dt.timedelta(minutes=1)
        enter(c, good)  # used
        enter(c, b"\x12\x34")  # not a token: format failure
        log = rows(c, TOKEN_LOG)
    assert [(date_time(at), bytes(octets), code) for at, octets, code in log] == [
        (AT_T0, good, 3),
        ((2024, 3, 1, 12, 1, 0), good, 6),
        ((2024, 3, 1, 12, 1, 0), b"\x12\x34", 4),
    ]


def test_credit_arriving_and_going_is_in_the_disconnector_log(sim: Sim) -> None:
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(token(TID)))
        assert codes(c, DISCONNECTOR_LOG) == [231]  # supply on: credit (Mita's own code)
        enter(c, carrier.pack(token(TID + 1, sts.ClearCredit)))
        assert status_code(c) == 3
        assert codes(c, DISCONNECTOR_LOG) == [231, 230]  # supply off: no credit
        assert get(c, IC.DATA, "0.0.96.11.2.255", 2) == 230


def test_remote_disconnect_and_reconnect_are_logged_with_idis_codes(sim: Sim) -> None:
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(token(TID)))
        switch(c, closed=False)
        switch(c, closed=False)  # already open: nothing changes, nothing logged
        switch(c, closed=True)
        assert codes(c, DISCONNECTOR_LOG) == [231, 62, 63]
        assert get(c, IC.DATA, "0.0.96.11.2.255", 2) == 63


def test_a_tamper_and_its_clearing_token_are_in_the_fraud_and_disconnector_logs(sim: Sim) -> None:
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(token(TID)))
    sim.call(lambda: sim.objects.tamper("magnetic", T0))  # the sim has no sensor: the test is the magnet
    sim.call(lambda: sim.objects.tamper("cover", T0))
    with session(sim.port, SECRET) as c:
        assert codes(c, FRAUD_LOG) == [42, 44]  # strong DC field, meter cover removed
        assert codes(c, DISCONNECTOR_LOG) == [231, 232]  # the legacy profile opens the switch on tamper
        enter(c, carrier.pack(token(TID + 1, sts.ClearTamperCondition)))
        assert status_code(c) == 3
        assert codes(c, FRAUD_LOG) == [42, 44, 45, 43]  # cover and magnet; both cleared by the token
        assert codes(c, DISCONNECTOR_LOG) == [231, 232, 233]
        assert get(c, IC.DATA, "0.0.96.11.1.255", 2) == 43
    assert sim.load().state.tamper == []


def test_a_log_keeps_its_last_hundred_rows_and_reads_whole_in_blocks(sim: Sim) -> None:
    """130 rows made, 100 kept: the buffer (about 3 KB) is longer than a PDU, so gurux sends it in blocks."""
    with session(sim.port, SECRET) as c:
        for i in range(130):
            enter(c, bytes([i, 0x12]))
        log = rows(c, TOKEN_LOG)
        assert get(c, IC.PROFILE_GENERIC, TOKEN_LOG, 7) == 100
    assert len(log) == 100
    assert [bytes(octets) for _, octets, _ in log] == [bytes([i, 0x12]) for i in range(30, 130)]


def test_selective_access_is_refused_not_answered_with_every_row(sim: Sim) -> None:
    clock = CaptureObject(attribute(IC.CLOCK, CLOCK, 2))
    descriptor = RangeDescriptor(clock, dt.datetime(2024, 1, 1), dt.datetime(2024, 12, 31))
    with session(sim.port) as c:
        with pytest.raises(DataResultError, match="READ_WRITE_DENIED"):
            c.get(attribute(IC.PROFILE_GENERIC, STANDARD_LOG, 2), access_descriptor=descriptor)
        assert len(rows(c, STANDARD_LOG)) == 1  # the association is still usable


# ------------------------------------------------------------ the table and the watcher (no DLMS)


def test_event_codes_are_unsigned_and_mitas_own_are_from_230() -> None:
    numbers = [code for code, _ in EVENT_CODES.values()]
    assert len(numbers) == len(set(numbers)) and all(0 < code < 256 for code in numbers)
    idis = {"power_up": 2, "clock_adjusted_old": 4, "clock_adjusted_new": 5, "remote_disconnection": 62,
            "remote_connection": 63, "limiter_threshold_exceeded": 65, "limiter_threshold_changed": 67}  # fmt: skip
    assert {name: EVENT_CODES[name][0] for name in idis} == idis
    own = [name for name, (code, _) in EVENT_CODES.items() if code >= 230]
    assert own and all(name.startswith(("supply_", "bypass_")) for name in own)
    for table in (TAMPER_EVENTS, OPEN_REASON_EVENTS):
        assert all(name in EVENT_CODES for pair in table.values() for name in pair)
    assert all(EVENT_CODES[name][1] is not Log.TOKEN for name in EVENT_CODES)


def test_a_ring_drops_its_oldest_row() -> None:
    logs = EventLogs(capacity=3)
    for minute in range(5):
        logs.record("power_up", T0 + dt.timedelta(minutes=minute))
    assert [at.minute for at, _ in logs.rows(Log.STANDARD)] == [2, 3, 4]
    assert logs.last_code == {Log.STANDARD: 2, Log.FRAUD: 0, Log.DISCONNECTOR: 0}


def test_the_watcher_logs_a_power_limit_trip_and_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    meter: Meter = make_meter()
    meter.state.registers[0] = 10**9
    logs = EventLogs()
    watcher = Watcher(meter, logs, T0)
    meter.state.mpl = 100
    meter.run(1, 500, T0)  # over the limit: the model trips for the profile's reconnect time
    watcher.observe(T0 + dt.timedelta(seconds=1))
    watcher.observe(T0 + dt.timedelta(minutes=5))
    assert [code for _, code in logs.rows(Log.DISCONNECTOR)] == [67, 65, 66]


def test_a_reason_the_table_does_not_know_is_not_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = make_meter()
    logs = EventLogs()
    watcher = Watcher(meter, logs, T0)
    status = meter.status
    monkeypatch.setattr(meter, "status", lambda now: {**status(now), "open_reasons": ["no credit", "solar eclipse"]})
    watcher.observe(T0)
    assert logs.rows(Log.DISCONNECTOR) == []
