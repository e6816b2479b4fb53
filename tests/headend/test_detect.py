"""Detection rules (mita.headend.detect): windows from the readings table, each rule on made-up and simulated
meters, the invariants (Hypothesis), and a small simulated fleet scored as the benchmark scores it."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mita.headend.detect import (
    CLEARS,
    EVENT_ALARMS,
    RULES,
    DetectError,
    FleetContext,
    Medium,
    MeterWindow,
    Severity,
    clock,
    credit,
    evaluate,
    leak,
    silent,
    tamper,
)
from mita.headend.detect import bypass as bypass_rule
from mita.sim.faults import DAY, Mix, NormalKind
from mita.sim.loads import Fleet

HOUR = 3_600
T0 = 1_740_952_800  # 2025-03-03 00:00 at UTC+2, a Monday
OFFSET = 7_200
ROOT = Path(__file__).resolve().parents[2]


def window(
    cons: np.ndarray[Any, Any],
    *,
    medium: str = "water",
    interval: int = 900,
    relay: np.ndarray[Any, Any] | None = None,
    credit0: float = 1e9,
    latency: int = 2,
    clock_error: np.ndarray[Any, Any] | float = 0.0,
    events: tuple[tuple[str, int], ...] = (),
    now: int | None = None,
    days: float | None = None,
) -> MeterWindow:
    """A window over ``cons`` (per interval, from T0), its register the running sum, credit falling with it."""
    n = len(cons)
    at = T0 + interval * np.arange(1, n + 1)
    register = 1000 + np.cumsum(cons)
    now = int(at[-1]) + 60 if now is None else now
    return MeterWindow.from_arrays(
        "m1",
        medium,
        interval=interval,
        now=now,
        days=n * interval / DAY if days is None else days,
        read_at=at + np.rint(clock_error).astype(np.int64),
        received_at=at + latency,
        register=register,
        demand=np.zeros(n),
        credit=credit0 - np.cumsum(cons),
        relay_closed=np.ones(n, dtype=bool) if relay is None else relay,
        events=events,
        utc_offset_s=OFFSET,
    )


def household_water(days: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """Draws at random times in the day (06-23 h), none at night: litres per 15 minutes."""
    rng = np.random.default_rng(seed)
    out = np.zeros(days * 96)
    hour = (np.arange(days * 96) // 4) % 24  # T0 is local midnight
    day_time = (hour >= 6) & (hour < 23)
    out[day_time] = np.where(rng.random(day_time.sum()) < 0.4, rng.integers(2, 30, day_time.sum()), 0)
    return out


# --- the window -----------------------------------------------------------------------------------------------------


def test_from_rows_matches_from_arrays() -> None:
    at = T0 + 900 * np.arange(1, 97)
    rows = [
        {
            "read_at": dt.datetime.fromtimestamp(int(t), dt.UTC),
            "received_at": dt.datetime.fromtimestamp(int(t) + 3, dt.UTC).replace(tzinfo=None),  # naive = UTC
            "register": 100 + i,
            "demand": 400,
            "credit": 5000 - i,
            "relay_closed": True,
        }
        for i, t in enumerate(at)
    ]
    now = dt.datetime.fromtimestamp(int(at[-1]) + 60, dt.UTC)
    a = MeterWindow.from_rows(7, "electricity", rows, interval=900, now=now, days=1, events=[("power_up", now)])
    b = MeterWindow.from_rows(7, "electricity", [tuple(r.values()) for r in rows], interval=900, now=now, days=1)
    assert np.array_equal(a.register, b.register, equal_nan=True)
    assert a.medium is Medium.ELECTRICITY and a.group == "electricity"
    assert a.last_received_at == int(at[-1]) + 3
    assert np.isnan(a.consumption[0]) and (a.consumption[1:] == 1).all()
    assert a.events[0].name == "power_up"


def test_the_window_is_what_was_received_by_now() -> None:
    cons = np.ones(96)
    w = window(cons, now=T0 + 48 * 900 + 5, days=1)  # received 2 s after each reading
    assert w.t[-1] == T0 + 48 * 900
    assert int(np.sum(~np.isnan(w.register))) == 48  # later readings not received yet


def test_a_missing_reading_loses_its_consumption() -> None:
    cons = np.ones(96)
    n = len(cons)
    at = T0 + 900 * np.arange(1, n + 1)
    keep = np.ones(n, dtype=bool)
    keep[40] = False
    w = MeterWindow.from_arrays("m", "water", interval=900, now=int(at[-1]), days=1, read_at=at[keep],
                                received_at=at[keep], register=np.cumsum(cons)[keep], demand=np.zeros(n)[keep],
                                credit=np.ones(n)[keep], relay_closed=np.ones(n, dtype=bool)[keep])  # fmt: skip
    assert np.isnan(w.consumption[40]) and np.isnan(w.consumption[41])
    assert w.consumption[42] == 1


def test_bad_input() -> None:
    with pytest.raises(DetectError) as e:
        window(np.ones(4), medium="gas")
    assert e.value.code == "bad_medium"
    with pytest.raises(DetectError) as e:
        window(np.ones(4), interval=700)
    assert e.value.code == "bad_interval"
    with pytest.raises(DetectError) as e:
        MeterWindow.from_arrays("m", "water", interval=900, now=T0, days=1, read_at=[T0], received_at=[T0, T0],
                                register=[1], demand=[1], credit=[1], relay_closed=[True])  # fmt: skip
    assert e.value.code == "bad_rows"


# --- tamper events --------------------------------------------------------------------------------------------------


def test_every_tamper_event_raises_its_alarm_at_once() -> None:
    for name, (rule, severity) in EVENT_ALARMS.items():
        f = tamper(42, name, T0)
        assert f is not None
        assert (f.rule, f.severity, f.opened_at, f.key) == (rule, severity, T0, f"42/{rule}")
        assert f.evidence["event"] == name and f.summary.startswith("Meter 42")
    for name in ("power_down", "relay_opened", "token_accepted", *CLEARS):
        assert tamper(42, name, T0) is None
    assert set(CLEARS.values()) <= {rule for rule, _ in EVENT_ALARMS.values()}


# --- leak -----------------------------------------------------------------------------------------------------------


def test_a_leak_is_found_and_a_household_is_not() -> None:
    normal = household_water(5)
    assert leak.leak(window(normal), None, T0) == []
    f = leak.leak(window(normal + 2.0), None, T0)  # 8 L/h on top, every interval
    assert len(f) == 1 and f[0].rule == "leak" and f[0].evidence["continuous"] is True
    assert f[0].evidence["min_flow_l_per_h"] >= 8


def test_irrigation_is_not_a_leak() -> None:
    cons = household_water(5, seed=1)
    hour = (np.arange(len(cons)) // 4) % 24
    cons[(hour >= 1) & (hour < 3)] += 250  # a timer at 01:00 for two hours, every night
    cons[(hour >= 18) & (hour < 20)] += 250
    assert leak.leak(window(cons), None, T0) == []


def test_a_shut_valve_does_not_hide_a_leak() -> None:
    cons = household_water(5, seed=2) + 2.0
    relay = np.ones(len(cons), dtype=bool)
    relay[::40] = False  # out of credit for a quarter-hour now and then
    cons[~relay] = 0
    assert leak.leak(window(cons, relay=relay), None, T0) != []


def test_the_night_test_alone() -> None:
    cons = household_water(5, seed=3)
    hour = (np.arange(len(cons)) // 4) % 24
    cons[(hour >= 0) & (hour < 5)] += 1  # flow all night, each night; days with silent intervals
    cons[(hour >= 12) & (hour < 13)] = 0
    f = leak.leak(window(cons), None, T0)
    assert len(f) == 1 and f[0].evidence == {"min_flow_l_per_h": 4.0, "continuous": False, "night": True}


def test_leak_is_for_water_only() -> None:
    assert leak.leak(window(np.ones(400), medium="electricity"), None, T0) == []


# --- silent ---------------------------------------------------------------------------------------------------------


def test_silent_after_twelve_hours() -> None:
    w = window(np.ones(96))
    last = w.last_received_at
    assert last is not None
    assert silent.silent(w, None, last + silent.SILENT_INTERVALS * 900) == []
    f = silent.silent(w, None, last + silent.SILENT_INTERVALS * 900 + 1)
    assert len(f) == 1 and f[0].opened_at == last and f[0].evidence["power_down"] is False
    w = window(np.ones(96), events=(("power_down", T0 + 90 * 900),))
    assert silent.silent(w, None, last + DAY)[0].evidence["power_down"] is True


# --- clock drift ----------------------------------------------------------------------------------------------------


def test_clock_drift() -> None:
    n = 7 * 96
    steady = window(np.ones(n), clock_error=5.0, latency=20)
    assert clock.clock_drift(steady, None, steady.now) == []
    drifting = 30.0 * np.arange(n) / 96  # 30 s a day fast
    w = window(np.ones(n), clock_error=drifting, latency=3)
    f = clock.clock_drift(w, None, w.now)
    assert len(f) == 1 and f[0].evidence["drift_s_per_day"] == pytest.approx(30, abs=1)
    assert f[0].evidence["offset_s"] == pytest.approx(drifting[-1] - 3, abs=2)
    slow = window(np.ones(n), clock_error=-drifting, latency=3)
    assert clock.clock_drift(slow, None, slow.now)[0].summary.endswith("s slow.")


def test_late_readings_are_not_a_slow_clock() -> None:
    """A link outage delays readings by hours; the readings that came in time tell the clock."""
    n = 2 * 96
    at = T0 + 900 * np.arange(1, n + 1)
    received = at + 2
    received[100:140] = at[140] + 60  # ten hours late, all at once
    w = MeterWindow.from_arrays("m", "water", interval=900, now=int(at[-1]), days=2, read_at=at, received_at=received,
                                register=np.arange(n), demand=np.zeros(n), credit=np.ones(n),
                                relay_closed=np.ones(n, dtype=bool))  # fmt: skip
    assert clock.clock_drift(w, None, w.now) == []


# --- low credit -----------------------------------------------------------------------------------------------------


def test_low_credit_forecast() -> None:
    cons = np.full(7 * 96, 10.0)  # 960 a day
    assert credit.low_credit(window(cons, credit0=cons.sum() + 5000), None, T0) == []  # 5.2 days left
    f = credit.low_credit(window(cons, credit0=cons.sum() + 2000), None, T0)  # 2.1 days left
    assert len(f) == 1 and f[0].evidence["days_left"] == pytest.approx(2.08, abs=0.01)
    assert f[0].severity is Severity.LOW
    assert credit.low_credit(window(cons, credit0=cons.sum() + 2000), None, T0, days_left=2.0) == []
    out = window(cons, credit0=cons.sum(), relay=np.r_[np.ones(len(cons) - 1, bool), False])
    assert credit.low_credit(out, None, T0) == []  # already out: another message


@settings(max_examples=60, deadline=None)
@given(
    draws=st.lists(st.integers(0, 40), min_size=200, max_size=400),
    bought=st.integers(1_000, 5_000),
    cut=st.integers(120, 190),
)
def test_the_forecast_key_holds_for_a_credit_period(draws: list[int], bought: int, cut: int) -> None:
    """Every reading of one credit period gives the same key; a purchase gives a new one."""
    cons = np.asarray(draws, dtype=np.float64)
    cons[: min(96, len(cons))] = np.maximum(cons[:96], 5)  # a day of use to forecast from
    register = 10_000 + np.cumsum(cons)
    credit_left = bought - np.cumsum(cons)
    keys = set()
    for end in range(cut, len(cons)):
        if credit_left[end] <= 0:
            break
        keys.add(credit.forecast_key("m", float(credit_left[end]), float(register[end])))
    assert len(keys) <= 1
    after = credit.forecast_key("m", float(credit_left[-1] + 500), float(register[-1]))
    assert after not in keys


def test_one_forecast_per_credit_period_on_a_simulated_meter() -> None:
    """Evaluated every three hours, a simulated fleet's forecasts carry one key per credit period."""
    fleet = Fleet.make(3, 60, T0, days=20, utc_offset_s=OFFSET)
    periods: dict[str, tuple[str, int]] = {}
    for m in fleet.meters:
        sim = m.simulate()
        r = sim.readings
        buys = [t for t, _ in sim.purchases]
        for now in range(fleet.start + 2 * DAY, fleet.start + 20 * DAY, 3 * HOUR):
            keep = (r.at <= now) & (r.at > now - 7 * DAY)
            w = MeterWindow.from_arrays(m.meter_id, m.medium, interval=900, now=now, days=7, read_at=r.read_at[keep],
                                        received_at=r.at[keep], register=r.register[keep], demand=r.demand[keep],
                                        credit=r.credit[keep], relay_closed=r.relay_closed[keep])  # fmt: skip
            for f in credit.low_credit(w, None, now):
                assert f.key.startswith(f"{m.meter_id}/low_credit/")
                period = (m.meter_id, sum(1 for t in buys if t <= now - 900))
                assert periods.setdefault(f.key, period) == period
    assert len(periods) > 10
    assert len(set(periods.values())) == len(periods)


# --- bypass ---------------------------------------------------------------------------------------------------------


def _elec_day(rng: np.random.Generator, scale: float = 1.0, home: bool = True) -> np.ndarray[Any, Any]:
    """A household's day in Wh per 15 minutes: standby and fridge, and (when home) peaks morning and evening."""
    hour = np.arange(96) // 4
    base = 30 + 10 * rng.random(96)
    people = np.where((hour >= 6) & (hour < 9), 250, 0) + np.where((hour >= 17) & (hour < 22), 350, 0)
    return scale * (base + (people * rng.uniform(0.7, 1.3, 96) if home else 0))


def _days(rng: np.random.Generator, spec: list[tuple[float, bool]]) -> np.ndarray[Any, Any]:
    return np.concatenate([_elec_day(rng, s, h) for s, h in spec])


def test_bypass_found_vacation_not() -> None:
    rng = np.random.default_rng(4)
    history = [(1.0, True)] * 20
    by = window(_days(rng, [*history, (0.35, True), (0.35, True), (0.35, True)]), medium="electricity", days=23)
    found = bypass_rule.bypass(by, FleetContext(), by.now)
    assert len(found) == 1 and found[0].evidence["ratio"] == pytest.approx(0.35, abs=0.08)
    assert found[0].opened_at == by.days.start[-3]
    away = window(_days(rng, [*history, (1.0, False), (1.0, False), (1.0, False)]), medium="electricity", days=23)
    assert bypass_rule.bypass(away, FleetContext(), away.now) == []


def test_bypass_needs_the_supply_on_and_no_magnet() -> None:
    rng = np.random.default_rng(5)
    cons = _days(rng, [(1.0, True)] * 20 + [(0.35, True)] * 3)
    relay = np.ones(len(cons), dtype=bool)
    relay[-150:-100] = False
    assert bypass_rule.bypass(window(cons, medium="electricity", relay=relay), FleetContext(), 0) == []
    magnet = (("strong_dc_field_detected", T0 + 19 * DAY), ("no_strong_dc_field_anymore", T0 + 21 * DAY))
    assert bypass_rule.bypass(window(cons, medium="electricity", events=magnet), FleetContext(), 0) == []
    assert bypass_rule.bypass(window(cons, medium="electricity"), FleetContext(), 0) != []


def test_a_fleet_wide_dip_is_not_a_bypass() -> None:
    rng = np.random.default_rng(6)
    spec = [(1.0, True)] * 20 + [(0.45, True)] * 3  # every meter dipped: a holiday
    windows = [window(_days(rng, spec), medium="electricity") for _ in range(12)]
    assert all(bypass_rule.bypass(w, FleetContext(), 0) for w in windows)  # alone, each looks bypassed
    context = FleetContext.build(windows)
    assert all(bypass_rule.bypass(w, context, 0) == [] for w in windows)


# --- the invariants -------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30 * 96),
    medium=st.sampled_from(["electricity", "water"]),
    now_shift=st.integers(0, 2 * DAY),
)
def test_no_rule_raises_on_a_window_without_readings(n: int, medium: str, now_shift: int) -> None:
    nan = np.full(n, np.nan)
    w = MeterWindow.from_arrays("m", medium, interval=900, now=T0 + now_shift, days=n / 96, read_at=np.zeros(0),
                                received_at=np.zeros(0), register=np.zeros(0), demand=np.zeros(0), credit=np.zeros(0),
                                relay_closed=np.zeros(0))  # fmt: skip
    assert np.isnan(w.consumption).all() and len(nan) == n
    assert w.last_received_at is None
    assert evaluate(w, T0 + now_shift, FleetContext()) == []


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), level=st.floats(0.5, 3.0))
def test_steady_households_raise_no_bypass_nor_leak(seed: int, level: float) -> None:
    rng = np.random.default_rng(seed)
    elec = window(_days(rng, [(level, True)] * 24), medium="electricity")
    water = window(household_water(6, seed) * level)
    assert [f.rule for f in evaluate(elec, elec.now, FleetContext()) if f.rule in ("bypass", "leak")] == []
    assert [f.rule for f in evaluate(water, water.now, FleetContext()) if f.rule in ("bypass", "leak")] == []


def test_a_fault_free_fleet_raises_no_bypass_nor_leak() -> None:
    """Seed 13, 150 meters, no faults, every tricky normal: a month of evaluations finds nothing."""
    mix = Mix(faults={})
    fleet = Fleet.make(13, 150, T0, days=30, utc_offset_s=OFFSET, mix=mix)
    assert any(m.normal(NormalKind.VACATION) for m in fleet.meters)
    bench = _benchmark()
    feeds = [bench.Feed.of(m) for m in fleet.meters]
    for day in range(8, 31):
        now = fleet.start + day * DAY
        windows = [f.window(fleet, now, bypass_rule.WINDOW_DAYS) for f in feeds]
        context = FleetContext.build(windows)
        for w in windows:
            found = RULES["bypass"].evaluate(w, context, now) + RULES["leak"].evaluate(w, context, now)
            assert found == [], (w.meter_id, found)


# --- a small fleet, scored --------------------------------------------------------------------------------------------


def _benchmark() -> ModuleType:
    name = "mita_bench_detection"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "detection.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_a_small_fleet_precision_and_recall() -> None:
    """200 meters, 30 days, the benchmark's seed: every rule at precision and recall 0.9 or more (about 6 s)."""
    figures = _benchmark().evaluate(_benchmark().SEED, 200, 30)
    for rule, s in figures["rules"].items():
        assert s["precision"] >= 0.9 and s["recall"] >= 0.9, (rule, s)
        if rule != "low_credit":
            assert s["tp"] + s["fn"] >= 5, rule  # enough faulty meters to mean something
