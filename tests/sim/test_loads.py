"""The simulated fleet's consumption (mita.sim.loads, .faults): reproducible, physically sane, faults as told."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mita.sim.faults import DAY, FaultKind, Medium, Mix, NormalKind
from mita.sim.loads import Fleet, MeterProfile
from mita.sts.identity import luhn_digit

ZA = dt.timezone(dt.timedelta(hours=2))
START = dt.datetime(2025, 3, 3, tzinfo=ZA)  # a Monday, local midnight
#: The MQTT vocabulary (mita.telemetry.events): every event the simulated meters report is one of these.
VOCABULARY = {
    "power_down", "power_up", "meter_cover_removed", "meter_cover_closed", "terminal_cover_removed",
    "terminal_cover_closed", "strong_dc_field_detected", "no_strong_dc_field_anymore", "reverse_energy",
    "bypass_detected", "relay_opened", "relay_closed", "low_credit", "token_accepted", "token_rejected",
    "clock_adjusted",
}  # fmt: skip


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.make(11, 300, START, days=30)


def _all(fleet: Fleet, kind: FaultKind | NormalKind) -> list[MeterProfile]:
    if isinstance(kind, FaultKind):
        return [m for m in fleet.meters if m.fault(kind)]
    return [m for m in fleet.meters if m.normal(kind)]


def test_a_fleet_is_its_seed() -> None:
    a = Fleet.make(5, 40, START, days=3)
    b = Fleet.make(5, 40, START, days=3)
    c = Fleet.make(6, 40, START, days=3)
    assert [(m.meter_id, m.medium, m.customer, m.faults, m.normals) for m in a.meters] == [
        (m.meter_id, m.medium, m.customer, m.faults, m.normals) for m in b.meters
    ]
    for ma, mb in zip(a.meters, b.meters, strict=True):
        ra, rb = ma.readings(a.start, a.start + 3 * DAY), mb.readings(b.start, b.start + 3 * DAY)
        for x, y in zip(ra, rb, strict=True):
            assert np.array_equal(x, y)
        assert ma.events(a.start, a.start + 3 * DAY) == mb.events(b.start, b.start + 3 * DAY)
    assert [m.meter_id for m in a.meters] != [m.meter_id for m in c.meters]


def test_meter_numbers_are_drns() -> None:
    f = Fleet.make(3, 50, START, days=1)
    ids = [m.meter_id for m in f.meters]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 11 and i.isdigit() and luhn_digit(i[:-1]) == int(i[-1]) for i in ids)


def test_the_mix_is_counted_exactly() -> None:
    f = Fleet.make(9, 400, START, days=2)
    water = sum(m.medium is Medium.WATER for m in f.meters)
    leaks = len(_all(f, FaultKind.LEAK))
    assert leaks == round(Mix().faults[FaultKind.LEAK] * water)
    assert all(len(m.faults) <= 1 and (not m.faults or not m.normals) for m in f.meters)
    assert all(m.medium is Medium.WATER for m in _all(f, FaultKind.LEAK) + _all(f, NormalKind.IRRIGATION))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Fleet.make(1, 0, START)
    with pytest.raises(ValueError):
        Fleet.make(1, 5, START, interval=700)  # does not divide a day
    with pytest.raises(ValueError):
        Fleet.make(1, 5, dt.datetime(2025, 3, 3))  # naive: no local time


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), interval=st.sampled_from([900, 1800, 3600]))
def test_registers_credit_and_relay_are_consistent(seed: int, interval: int) -> None:
    """Per meter: the register never goes back; credit never below zero; with the supply off nothing is registered
    and no demand shown; between purchases credit + register is constant (what the forecast key relies on)."""
    f = Fleet.make(seed, 8, START, days=4, interval=interval)
    for m in f.meters:
        sim = m.simulate()
        r = sim.readings
        assert len(r.at) == 4 * DAY // interval
        assert (np.diff(r.register) >= 0).all()
        assert (r.credit >= 0).all()
        inc = np.diff(r.register)
        off = ~r.relay_closed[1:] & ~r.relay_closed[:-1]
        assert (inc[off] == 0).all()
        assert (r.demand[~r.relay_closed] == 0).all()
        bought = r.credit + r.register
        buys = {int((t - f.start) // interval) for t, _ in sim.purchases}
        for i in range(1, len(bought)):
            if i not in buys:
                assert bought[i] == bought[i - 1]
        names = [e.name for e in sim.events]
        assert set(names) <= VOCABULARY
        assert [e.at for e in sim.events] == sorted(e.at for e in sim.events)


def test_readings_and_events_between_two_times(fleet: Fleet) -> None:
    m = fleet.meters[0]
    t0, t1 = fleet.start + 2 * DAY, fleet.start + 3 * DAY
    r = m.readings(t0, t1)
    assert r.size == len(r.at) and r.size > 90
    assert (r.at > t0).all() and (r.at <= t1).all()
    assert (np.diff(r.seq) > 0).all()
    assert all(t0 < e.at <= t1 for e in m.events(t0, t1))


def test_a_dead_meter_says_nothing_after_it_died(fleet: Fleet) -> None:
    for m in _all(fleet, FaultKind.DEAD):
        died = m.fault(FaultKind.DEAD).start  # type: ignore[union-attr]
        end = fleet.start + fleet.days * DAY
        assert m.readings(died, end).size == 0
        assert m.events(died, end) == []
        assert m.readings(fleet.start, died).size > 0


def test_a_bypass_registers_its_fraction(fleet: Fleet) -> None:
    for m in _all(fleet, FaultKind.BYPASS):
        f = m.fault(FaultKind.BYPASS)
        assert f is not None
        sim = m.simulate()
        after = (sim.readings.at > f.start + 3600) & sim.readings.relay_closed
        seen = np.diff(sim.readings.register, prepend=sim.readings.register[0])[after].sum()
        assert seen == pytest.approx(f.params["fraction"] * sim.load[after].sum(), rel=0.02, abs=50)


def test_a_magnet_is_reported_and_under_registers(fleet: Fleet) -> None:
    for m in _all(fleet, FaultKind.MAGNETIC):
        f = m.fault(FaultKind.MAGNETIC)
        assert f is not None
        names = [(e.name, e.at) for e in m.simulate().events]
        assert ("strong_dc_field_detected", f.start) in names
        if f.end is not None and f.end <= fleet.start + fleet.days * DAY:
            assert ("no_strong_dc_field_anymore", f.end) in names


def test_cover_events(fleet: Fleet) -> None:
    for m in _all(fleet, FaultKind.COVER):
        f = m.fault(FaultKind.COVER)
        assert f is not None
        which = "terminal_cover" if f.params["terminal"] else "meter_cover"
        assert (f"{which}_removed", f.start) in [(e.name, e.at) for e in m.simulate().events]


def test_a_leak_never_lets_the_meter_stand_still(fleet: Fleet) -> None:
    for m in _all(fleet, FaultKind.LEAK):
        f = m.fault(FaultKind.LEAK)
        assert f is not None
        r = m.simulate().readings
        inc = np.diff(r.register)
        flowing = (r.at[1:] > f.start + 900) & r.relay_closed[1:] & r.relay_closed[:-1]
        assert (inc[flowing] >= 1).all()
    for m in fleet.meters:
        if m.medium is Medium.WATER and not m.faults:
            r = m.simulate().readings
            assert (np.diff(r.register) == 0).any()  # draws leave silence


def test_a_drifting_clock_drifts(fleet: Fleet) -> None:
    for m in _all(fleet, FaultKind.CLOCK_DRIFT):
        f = m.fault(FaultKind.CLOCK_DRIFT)
        assert f is not None
        r = m.simulate().readings
        late = r.at > f.start + 5 * DAY
        if late.any():
            offset = (r.read_at - r.at)[late][-1]
            expected = f.params["drift_s_per_day"] * (r.at[late][-1] - f.start) / DAY
            assert offset == pytest.approx(expected, abs=30)
    steady = [m for m in fleet.meters if not m.faults][:20]
    assert all(np.abs(m.simulate().readings.read_at - m.simulate().readings.at).max() < 30 for m in steady)


def test_an_outage_delays_readings_and_loses_none(fleet: Fleet) -> None:
    for m in _all(fleet, NormalKind.COMM_OUTAGE):
        n = m.normal(NormalKind.COMM_OUTAGE)
        assert n is not None and n.end is not None
        r = m.simulate().readings
        held = (r.at >= n.start) & (r.at < n.end)
        assert (r.sent_at[held] >= n.end).all()
        assert (r.sent_at[~held] - r.at[~held] <= 61).all()


def test_a_vacation_leaves_the_fridge_and_the_standby(fleet: Fleet) -> None:
    for m in _all(fleet, NormalKind.VACATION):
        n = m.normal(NormalKind.VACATION)
        assert n is not None and n.end is not None
        sim = m.simulate()
        away = (sim.readings.at > n.start + DAY) & (sim.readings.at < n.end - DAY) & sim.readings.relay_closed
        home = (sim.readings.at < n.start) & sim.readings.relay_closed
        if away.sum() < 96 or home.sum() < 96:
            continue
        assert sim.load[away].mean() < 0.6 * sim.load[home].mean()
        if m.medium is Medium.ELECTRICITY:
            assert sim.load[away].min() > 0


def test_a_holiday_lowers_every_meter_at_once(fleet: Fleet) -> None:
    day = fleet.holidays[0]
    totals = []
    for m in fleet.meters:
        if m.medium is Medium.ELECTRICITY and not m.faults and not m.normals:
            load = m.simulate().load.reshape(fleet.days, -1).sum(axis=1)
            same_weekday = [d for d in range(day % 7, fleet.days, 7) if d != day and d not in fleet.holidays]
            totals.append(load[day] / np.median(load[same_weekday]))
    assert np.median(totals) < 0.8


def test_households_have_morning_and_evening_peaks(fleet: Fleet) -> None:
    profile = np.zeros(24)
    for m in fleet.meters:
        if m.group == "electricity/household" and not m.faults and not m.normals:
            profile += m.simulate().load.reshape(fleet.days, 24, -1).sum(axis=(0, 2))
    assert profile[6:9].mean() > 2 * profile[1:4].mean()
    assert profile[18:21].mean() > 2 * profile[1:4].mean()
    assert profile[18:21].mean() > profile[10:15].mean()


def test_loads_imports_no_dlms_library() -> None:
    code = "import sys, mita.sim.loads, mita.sim.faults; sys.exit('gurux_dlms' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
