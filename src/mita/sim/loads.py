"""Simulated consumption for a fleet of meters: load shapes, prepaid credit, injected faults (pure, seeded).

No clock, no I/O, no DLMS library: everything is drawn from the fleet's seed, so a fleet is the same fleet for the
same ``(seed, n, start, days, interval)``. Times are epoch seconds (UTC); the daily patterns follow local time, the
fleet's ``utc_offset_s``.

The API (what the MQTT publisher and the detection benchmark use)::

    fleet = Fleet.make(seed=7, n=1000, start=dt.datetime(2025, 3, 3, tzinfo=ZA), days=30)   # interval=900
    meter = fleet.meters[0]            # a MeterProfile: meter_id (an 11-digit DRN), medium, customer, faults, normals
    r = meter.readings(t0, t1)         # Readings: seq, at, read_at, sent_at, register, demand, credit, relay_closed
    meter.events(t0, t1)               # [MeterEvent(name, at, read_at)] in order

Readings are one per interval end ``at`` in ``(t0, t1]`` that the meter reported: none after a dead meter's
death, a rare one lost. ``read_at`` is the meter's own clock (a drifting clock's stamps drift), ``sent_at`` when the
meter sends it (seconds after ``at``; after a link outage, when the link is back). ``register`` is cumulative (Wh or
L), ``demand`` the instantaneous power or flow at ``at`` (W or L/h), ``credit`` in the register's unit.
:meth:`MeterProfile.simulate` is the whole month with the hidden truth too (the real load, the purchases).

How the load is made (per meter, per interval of ``interval`` seconds)
    Electricity, households: standby, a fridge cycling, lights and the like following a daily activity curve
    (morning and evening peaks; later, flatter weekends) with smooth noise and a day-to-day factor, and appliances
    as events drawn from time-of-day densities: kettle, cooker, geyser (water heater: reheats after use and for its
    standing losses) for 60% of homes, washing machine. Small businesses: a base (fridges, security lights) and an
    opening-hours load (weekdays, a short Saturday or seven days), with machines cycling while open. Water
    households: toilets, taps, showers and washing machines as draws (events); near zero at night. A household's
    size scales its rates and powers (log-normal).

Prepaid credit
    Credit is bought in the register's unit and falls by what the meter registers. Two kinds of buyer: *top-up*
    buyers buy a few days' worth when credit falls under a day or two (sometimes they let it run out and buy hours
    later); *monthly* buyers buy a month's worth on payday and a small emergency top-up, or nothing, when they run
    out before it. At zero the relay (or valve) opens: no supply, no consumption, until a purchase.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from mita.sts.identity import luhn_digit

from .faults import (
    DAY,
    HOUR,
    CustomerClass,
    Fault,
    FaultKind,
    Medium,
    Mix,
    Normal,
    NormalKind,
    assign,
    make_fault,
    make_normal,
)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

#: Quarter-hour slots of a day: the resolution of the time-of-day densities.
SLOTS = 96
WEEKDAY, SATURDAY, SUNDAY, HOLIDAY = 0, 1, 2, 3

#: The meter's own low-credit alarm: it reports ``low_credit`` when credit falls under this (Wh or L).
LOW_CREDIT_EVENT = {Medium.ELECTRICITY: 3_000, Medium.WATER: 300}
#: Chance a reading is lost for good (the meter's fault, not the link's: a link outage delays, never loses).
LOSS_RATE = 0.0005


def _curve(hourly: list[float]) -> F64:
    """A 24-hour curve as a density over the day's :data:`SLOTS` (linear between hour centres, wrapping)."""
    h = np.asarray(hourly, dtype=np.float64)
    x = (np.arange(SLOTS) + 0.5) / 4 - 0.5
    out = np.interp(x, np.arange(-1, 25), np.concatenate([[h[-1]], h, [h[0]]]))
    return np.asarray(out / out.sum(), dtype=np.float64)


# Time-of-day densities (relative, by local hour). Activity: people at home and awake (lights, TV, small loads).
# fmt: off
_ACT_WEEKDAY = _curve([.1, .04, .03, .03, .06, .4, 1, 1, .6, .35, .3, .3,
                       .35, .35, .3, .35, .5, .8, 1, 1, .9, .7, .45, .2])
_ACT_WEEKEND = _curve([.15, .06, .04, .03, .03, .08, .25, .55, .9, .9, .7, .6,
                       .7, .6, .5, .5, .6, .8, 1, 1, .9, .75, .5, .3])
_COOK_WEEKDAY = _curve([0, 0, 0, 0, 0, .05, .3, .3, .05, 0, 0, .05, .15, .1, 0, 0, .1, .6, 1, .8, .3, .05, 0, 0])
_COOK_WEEKEND = _curve([0, 0, 0, 0, 0, 0, .05, .2, .4, .3, .1, .3, .6, .4, .1, .05, .1, .5, 1, .8, .3, .05, 0, 0])
_WASH = _curve([0, 0, 0, 0, 0, 0, .1, .5, 1, 1, .8, .6, .5, .5, .4, .3, .3, .3, .3, .2, .1, 0, 0, 0])
_SHOWER_WEEKDAY = _curve([0, 0, 0, 0, .1, .6, 1, .7, .2, .05, .02, .02, .02, .02, .02, .05, .1, .2, .4, .5, .4, .3, .15,
                          .05])
_SHOWER_WEEKEND = _curve([0, 0, 0, 0, 0, .1, .3, .6, .8, .6, .3, .1, .05, .05, .05, .05, .1, .2, .4, .5, .4, .3, .15,
                          .05])
# fmt: on
_FLAT = np.full(SLOTS, 1.0 / SLOTS)

#: Day type -> (activity, cooking, shower) densities.
_DENSITIES = {
    WEEKDAY: (_ACT_WEEKDAY, _COOK_WEEKDAY, _SHOWER_WEEKDAY),
    SATURDAY: (_ACT_WEEKEND, _COOK_WEEKEND, _SHOWER_WEEKEND),
    SUNDAY: (_ACT_WEEKEND, _COOK_WEEKEND, _SHOWER_WEEKEND),
    HOLIDAY: (_ACT_WEEKEND, _COOK_WEEKEND, _SHOWER_WEEKEND),
}
#: How much of a household's usual activity a fleet-wide holiday leaves (many away): every meter dips at once.
HOLIDAY_FACTOR = 0.55


@dataclass(frozen=True)
class Clock:
    """The fleet's grid: ``n`` intervals of ``interval`` seconds from ``start``; local time ``utc_offset_s`` ahead."""

    start: int
    n: int
    interval: int
    utc_offset_s: int

    @cached_property
    def at(self) -> I64:
        """Each interval's end (epoch seconds): the reading's time."""
        return self.start + self.interval * np.arange(1, self.n + 1, dtype=np.int64)

    @cached_property
    def day0(self) -> int:
        """Epoch seconds of local midnight on or before the start."""
        return self.start - (self.start + self.utc_offset_s) % DAY

    @cached_property
    def days(self) -> int:
        """Local days touched by the grid."""
        return int((self.start + self.n * self.interval - self.day0 + DAY - 1) // DAY)

    @cached_property
    def mid(self) -> I64:
        """Each interval's midpoint, for which day and slot it falls in."""
        return self.at - self.interval // 2

    @cached_property
    def day_index(self) -> I64:
        return (self.mid - self.day0) // DAY

    @cached_property
    def slot(self) -> I64:
        return ((self.mid - self.day0) % DAY) * SLOTS // DAY

    def day_types(self, holidays: tuple[int, ...]) -> I64:
        """Each local day's type: weekday, Saturday, Sunday or a fleet holiday (by local day index)."""
        weekday = (np.arange(self.days) + (self.day0 + self.utc_offset_s) // DAY + 3) % 7  # 1970-01-01 a Thursday
        types = np.where(weekday == 5, SATURDAY, np.where(weekday == 6, SUNDAY, WEEKDAY)).astype(np.int64)
        for h in holidays:
            if 0 <= h < self.days:
                types[h] = HOLIDAY
        return types


class Events(NamedTuple):
    """Appliance events: start (epoch s, float), duration (s), power (W or L/h)."""

    start: F64
    duration: F64
    power: F64

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        if not parts:
            return Events(np.zeros(0), np.zeros(0), np.zeros(0))
        return Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in Events._fields))


def _draw_events(
    rng: np.random.Generator,
    clock: Clock,
    rate: F64,
    density: F64,
    duration: tuple[float, float],
    power: tuple[float, float],
) -> Events:
    """Events of one appliance: ``rate[d]`` expected uses on local day ``d``, at times drawn from that day's
    density (``density[d]``, over :data:`SLOTS`), durations and powers uniform in their ranges."""
    counts = rng.poisson(np.maximum(rate, 0.0))
    total = int(counts.sum())
    day = np.repeat(np.arange(len(rate)), counts)
    cdf = np.cumsum(density, axis=1)
    u = rng.random(total) * cdf[day, -1]
    slot = (cdf[day] < u[:, None]).sum(axis=1)
    start = clock.day0 + day * DAY + (slot + rng.random(total)) * (DAY / SLOTS)
    return Events(
        start.astype(np.float64),
        rng.uniform(duration[0], duration[1], total),
        rng.uniform(power[0], power[1], total),
    )


def _cycling(
    rng: np.random.Generator, clock: Clock, period_s: float, duty: float, power: float, jitter: float = 0.15
) -> Events:
    """A thermostat's cycle (a fridge, a cold room): on for ``duty`` of each ``period_s``, with jittered periods."""
    span = clock.n * clock.interval
    count = int(span / period_s) + 2
    periods = period_s * rng.uniform(1 - jitter, 1 + jitter, count)
    start = clock.start - rng.uniform(0, period_s) + np.concatenate([[0.0], np.cumsum(periods[:-1])])
    return Events(start, periods * duty, np.full(count, power))


def _accumulate(events: Events, clock: Clock) -> tuple[F64, F64]:
    """Events onto the grid: energy (or volume) per interval, and the power (or flow) on at each interval's end."""
    n, width = clock.n, float(clock.interval)
    energy = np.zeros(n)
    demand_diff = np.zeros(n + 1)
    if len(events.start) == 0:
        return energy, demand_diff[:n]
    s = (events.start - clock.start) / width  # in intervals
    e = s + events.duration / width
    p = events.power
    keep = (e > 0) & (s < n)
    s, e, p = s[keep], e[keep], p[keep]
    first = np.floor(s).astype(np.int64)
    spans = int((np.ceil(e) - first).max()) if len(s) else 0
    for k in range(spans):
        idx = first + k
        overlap = np.minimum(e, idx + 1) - np.maximum(s, idx)
        ok = (overlap > 0) & (idx >= 0) & (idx < n)
        energy += np.bincount(idx[ok], weights=overlap[ok] * p[ok], minlength=n)
    energy *= width / HOUR  # W x s -> Wh (L/h x s -> L)
    # on at the end of interval j (time j+1) when s <= j+1 < e
    on_from = np.clip(np.ceil(s).astype(np.int64) - 1, 0, n)
    on_to = np.clip(np.ceil(e).astype(np.int64) - 1, 0, n)
    np.add.at(demand_diff, on_from, p)
    np.add.at(demand_diff, on_to, -p)
    return energy, np.cumsum(demand_diff)[:n]


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float, span: int = 8) -> F64:
    """A positive multiplicative noise (mean ~1) that varies smoothly over ``span`` intervals."""
    white = rng.standard_normal(n + span)
    smooth = np.convolve(white, np.ones(span) / np.sqrt(span), mode="valid")[:n]
    return np.exp(sigma * smooth - sigma**2 / 2)


@dataclass(frozen=True)
class LoadSpec:
    """Everything that shapes one meter's real load (drawn from its seed by :func:`draw_spec`)."""

    medium: Medium
    customer: CustomerClass
    size: float
    traits: dict[str, float] = field(default_factory=dict)


def draw_spec(rng: np.random.Generator, medium: Medium, customer: CustomerClass) -> LoadSpec:
    """A customer's size and habits: household size (log-normal), a geyser or not, a business's hours."""
    size = float(np.exp(rng.normal(0.0, 0.35)))
    traits: dict[str, float] = {}
    if customer is CustomerClass.BUSINESS:
        size = float(np.exp(rng.normal(np.log(6.0), 0.6)))
        pattern = rng.choice(3, p=[0.5, 0.3, 0.2])  # weekdays, weekdays + Saturday morning, every day
        traits.update(pattern=float(pattern), open_h=float(rng.uniform(6.5, 9)), close_h=float(rng.uniform(16, 20)))
    elif medium is Medium.ELECTRICITY:
        traits.update(geyser=float(rng.random() < 0.6), standby_w=float(rng.uniform(30, 120)))
    else:
        traits.update(persons=float(rng.integers(1, 7)))
    return LoadSpec(medium, customer, size, traits)


def _densities(day_types: I64, index: int, shift_slots: I64) -> F64:
    """Per local day, the density ``index`` of :data:`_DENSITIES` rolled by that day's shift (a night shift)."""
    rows = np.stack([_DENSITIES[int(t)][index] for t in day_types])
    for d in np.nonzero(shift_slots)[0]:
        rows[d] = np.roll(rows[d], int(shift_slots[d]))
    return rows


class Shape(NamedTuple):
    """A customer's load before faults and credit: continuous power of people (``human``, W or L/h, per interval)
    and of what runs anyway (``base``), and appliance events of each kind."""

    human: F64
    base: F64
    human_events: list[Events]
    base_events: list[Events]


def real_load(
    rng: np.random.Generator,
    spec: LoadSpec,
    clock: Clock,
    holidays: tuple[int, ...],
    normal: Normal | None,
) -> tuple[F64, F64]:
    """The customer's real consumption per interval (Wh or L) and demand at each interval's end (W or L/h), with
    the supply always on; faults and credit are applied afterwards. ``normal`` (a vacation, a night shift,
    irrigation) changes the load; a fleet-wide holiday lowers every meter's at once."""
    types = clock.day_types(holidays)
    days = clock.days
    day_start = clock.day0 + np.arange(days, dtype=np.int64) * DAY
    shift = np.zeros(days, dtype=np.int64)
    vacation = normal if normal is not None and normal.kind is NormalKind.VACATION and normal.end is not None else None
    if normal is not None and normal.kind is NormalKind.NIGHT_SHIFT:
        shift = np.where(day_start >= normal.start, round(normal.params["shift_h"] * SLOTS / 24), 0)
    day_factor = np.exp(rng.normal(0, 0.12, days)) * np.where(types == HOLIDAY, HOLIDAY_FACTOR, 1.0)
    if spec.medium is Medium.WATER:
        shape = _water(rng, spec, clock, types, day_factor, shift, normal)
    elif spec.customer is CustomerClass.BUSINESS:
        shape = _business(rng, spec, clock, types, day_factor)
    else:
        shape = _household(rng, spec, clock, types, day_factor, shift)
    human, human_events = shape.human, Events.concat(shape.human_events)
    if vacation is not None and vacation.end is not None:
        away = (clock.mid >= vacation.start) & (clock.mid < vacation.end)
        human = np.where(away, 0.0, human)
        inside = (human_events.start >= vacation.start) & (human_events.start < vacation.end)
        human_events = Events(*(a[~inside] for a in human_events))
    power = human + shape.base
    energy, on = _accumulate(Events.concat([human_events, *shape.base_events]), clock)
    return power * clock.interval / HOUR + energy, power + on


def _household(rng: np.random.Generator, spec: LoadSpec, clock: Clock, types: I64, factor: F64, shift: I64) -> Shape:
    s, days = spec.size, clock.days
    act = _densities(types, 0, shift)
    cook = _densities(types, 1, shift)
    shower = _densities(types, 2, shift)
    # lights, TV, small loads: a continuous curve (W), scaled by the day's factor, with smooth noise
    act_w = 900 * s * act[clock.day_index, clock.slot] * SLOTS / 4 * factor[clock.day_index]
    act_w = act_w * _smooth_noise(rng, clock.n, 0.35)
    standby = spec.traits["standby_w"] * s**0.5 * _smooth_noise(rng, clock.n, 0.1, 16)
    fridge = _cycling(rng, clock, rng.uniform(35, 60) * 60, rng.uniform(0.3, 0.5), rng.uniform(80, 160))
    human = [
        _draw_events(rng, clock, 4 * s**0.5 * factor, act, (120, 240), (1800, 2400)),  # kettle
        _draw_events(rng, clock, 1.3 * factor, cook, (900, 3600), (1200, 2500)),  # cooker
        _draw_events(
            rng,
            clock,
            np.where(types == WEEKDAY, 0.15, 0.5) * s * factor,
            np.tile(_WASH, (days, 1)),
            (2400, 5400),
            (500, 1200),
        ),  # washing machine
    ]
    base = [fridge]
    if spec.traits["geyser"]:
        human.append(_draw_events(rng, clock, 1.6 * s * factor, shower, (1200, 4500), (2800, 3200)))  # reheat
        base.append(_draw_events(rng, clock, np.full(days, 2.0), np.tile(_FLAT, (days, 1)), (600, 1200), (2800, 3200)))
    return Shape(act_w, standby, human, base)


def _business(rng: np.random.Generator, spec: LoadSpec, clock: Clock, types: I64, factor: F64) -> Shape:
    s, t = spec.size, spec.traits
    hour = clock.slot / 4.0
    day_type = types[clock.day_index]
    pattern = int(t["pattern"])
    open_day = day_type == WEEKDAY
    if pattern == 1:
        open_day = open_day | ((day_type == SATURDAY) & (hour < 13))
    elif pattern == 2:
        open_day = day_type != HOLIDAY
    is_open = open_day & (hour >= t["open_h"]) & (hour < t["close_h"])
    base = 150 * s * _smooth_noise(rng, clock.n, 0.08, 16)
    load_w = 900 * s * factor[clock.day_index] * _smooth_noise(rng, clock.n, 0.2)
    cold = _cycling(rng, clock, rng.uniform(20, 40) * 60, rng.uniform(0.35, 0.6), 200 * s)
    # machines while open: drawn over the day, kept only while open
    machines = _draw_events(rng, clock, np.full(clock.days, 10 * s**0.5), np.tile(_FLAT, (clock.days, 1)),
                            (300, 1800), (500 * s**0.5, 2500 * s**0.5))  # fmt: skip
    idx = np.clip(((machines.start - clock.start) // clock.interval).astype(np.int64), 0, clock.n - 1)
    return Shape(np.where(is_open, load_w, 0.0), base, [Events(*(a[is_open[idx]] for a in machines))], [cold])


def _water(
    rng: np.random.Generator, spec: LoadSpec, clock: Clock, types: I64, factor: F64, shift: I64, normal: Normal | None
) -> Shape:
    persons, days = spec.traits["persons"], clock.days
    act = _densities(types, 0, shift)
    shower = _densities(types, 2, shift)
    f = factor * spec.size**0.5
    wash = np.where(types == WEEKDAY, 0.2, 0.6) * f * persons**0.5
    human = [
        _draw_events(rng, clock, 5 * persons * f, act, (40, 90), (300, 540)),  # toilet: 6-9 L in a minute or so
        _draw_events(rng, clock, 12 * persons * f, act, (20, 120), (200, 500)),  # taps
        _draw_events(rng, clock, 0.8 * persons * f, shower, (240, 720), (480, 720)),  # shower, 8-12 L/min
        _draw_events(rng, clock, wash, np.tile(_WASH, (days, 1)), (1800, 3600), (60, 120)),  # washing machine
    ]
    base: list[Events] = []
    if normal is not None and normal.kind is NormalKind.IRRIGATION:
        p = normal.params
        on = rng.random(days) < p["per_week"] / 7
        n_on = int(on.sum())
        # a timer: morning, evening, or (one in five) in the small hours, then at most two hours
        when = rng.choice(3, size=n_on, p=[0.4, 0.4, 0.2])
        start_h = np.choose(when, [rng.uniform(5, 7, n_on), rng.uniform(17, 20, n_on), rng.uniform(0, 3, n_on)])
        hours = np.where(when == 2, np.minimum(p["hours"], 2.0), p["hours"]) * rng.uniform(0.8, 1.2, n_on)
        start = clock.day0 + np.nonzero(on)[0] * DAY + start_h * HOUR
        flow = p["flow_l_per_h"] * rng.uniform(0.9, 1.1, n_on)
        base.append(Events(start.astype(np.float64), hours * HOUR, flow))
    zero = np.zeros(clock.n)
    return Shape(zero, zero.copy(), human, base)


class MeterEvent(NamedTuple):
    """An event the meter reports: its name (the MQTT vocabulary), the true time, and the meter's clock's stamp."""

    name: str
    at: int
    read_at: int


class Readings(NamedTuple):
    """A meter's readings (arrays of one length, in time order): see the module docstring."""

    seq: I64
    at: I64
    read_at: I64
    sent_at: I64
    register: I64
    demand: I64
    credit: I64
    relay_closed: B

    @property
    def size(self) -> int:
        return len(self.seq)

    def select(self, keep: B) -> Readings:
        """The readings where ``keep`` is true."""
        return Readings(
            self.seq[keep],
            self.at[keep],
            self.read_at[keep],
            self.sent_at[keep],
            self.register[keep],
            self.demand[keep],
            self.credit[keep],
            self.relay_closed[keep],
        )


@dataclass(frozen=True)
class Simulation:
    """One meter's whole month, with the hidden truth: ``load`` is what the customer really used (Wh or L per
    interval, supply on), ``potential`` what the meter would register per interval with the supply on (the
    credit's forecast truth), ``purchases`` (time, amount) and ``run_outs`` (times the credit reached zero)."""

    readings: Readings
    reported: B
    load: F64
    potential: I64
    events: tuple[MeterEvent, ...]
    purchases: tuple[tuple[int, int], ...]
    run_outs: tuple[int, ...]
    buyer: Buyer


@dataclass(frozen=True)
class Buyer:
    """How a customer buys credit (drawn per meter)."""

    monthly: bool
    trigger_days: float  # top-up buyers: buy when credit is under this many days' worth
    buy_days: float  # how many days' worth they buy
    run_out_chance: float  # chance they let it run out instead, and buy hours later
    payday: int  # monthly buyers: day of the month


def _credit(
    rng: np.random.Generator,
    clock: Clock,
    potential: I64,
    buyer: Buyer,
    lapse: Normal | None,
) -> tuple[I64, I64, B, list[tuple[int, int]], list[int]]:
    """Credit and relay over the month from what the meter would register per interval (``potential``): the
    registered amounts (zero while the relay is open), credit and relay at each interval's end, purchases
    (interval index, amount) and run-outs (interval index). A purchase lands at the start of its interval."""
    n, width = clock.n, clock.interval
    daily = max(float(potential[: min(n, 7 * DAY // width)].sum()) / min(7.0, n * width / DAY), 1.0)
    per_day = DAY // width
    registered = np.zeros(n, dtype=np.int64)
    credit_at = np.zeros(n, dtype=np.int64)
    closed = np.ones(n, dtype=np.bool_)
    purchases: list[tuple[int, int]] = []
    run_outs: list[int] = []
    lapse_from = n if lapse is None else int((lapse.start - clock.start) // width)
    lapse_gap = 0 if lapse is None else int(lapse.params["gap_days"] * per_day)
    # paydays: the buyer's day of each month, as interval indices
    paydays: list[int] = []
    if buyer.monthly:
        first = dt.datetime.fromtimestamp(clock.day0 + clock.utc_offset_s, dt.UTC)
        for month in range(3):
            y, m = divmod(first.month - 1 + month, 12)
            pay = dt.datetime(first.year + y, m + 1, min(buyer.payday, 28), tzinfo=dt.UTC) + dt.timedelta(hours=10)
            idx = int((pay.timestamp() - clock.utc_offset_s - clock.start) // width)
            if 0 < idx < n:
                paydays.append(idx)

    # the credit at the start: a top-up buyer's few days, a monthly buyer's about enough until payday
    ahead = rng.uniform(3, 12) if not paydays else max(paydays[0] / per_day + rng.uniform(-4, 6), 2.0)
    credit = round(daily * ahead / 100) * 100

    def daytime(i: int) -> int:
        """The first interval from ``i`` in local shop hours (08:00-19:00)."""
        while i < n and not (32 <= int(clock.slot[i]) < 76):
            i += 1
        return i

    i = 0
    while i < n:
        cum = np.cumsum(potential[i:])
        out = int(np.searchsorted(cum, credit, side="left"))  # first interval where it runs out (relative)
        buy = n  # absolute interval of the next purchase
        amount = 0
        if buyer.monthly:
            later = [p for p in paydays if p > i]
            if later:
                buy, amount = later[0], round(daily * rng.uniform(25, 35) / 100) * 100
            if i + out < buy:  # out before payday: an emergency top-up, hours (or a few days) later
                wait = rng.uniform(1, 24) if rng.random() < 0.7 else rng.uniform(24, 72)
                if i + out + 1 + int(wait * HOUR // width) < buy:
                    to_payday = (buy - i - out) / per_day
                    days = to_payday * rng.uniform(0.9, 1.3) if rng.random() < 0.5 else rng.uniform(1, 4)
                    buy = daytime(i + out + 1 + int(wait * HOUR // width))
                    amount = max(round(daily * days / 100) * 100, 100)
        else:
            trig = int(np.searchsorted(cum, credit - buyer.trigger_days * daily, side="left"))
            if rng.random() < buyer.run_out_chance:
                buy = daytime(i + out + 1 + int(rng.uniform(0.5, 12) * HOUR // width))
            else:
                buy = daytime(i + trig + int(rng.uniform(0, 10) * HOUR // width))
            amount = max(round(daily * buyer.buy_days * rng.uniform(0.7, 1.3) / 100) * 100, 100)
        if lapse is not None and i <= lapse_from and buy > lapse_from:
            # the lapsed customer stops buying: runs out, then waits the gap before buying again
            buy = max(buy, i + out + 1 + lapse_gap)
            lapse_from = -1
        buy = max(buy, i + 1)
        end = min(buy, n)
        span = end - i
        if out < span:  # runs out at interval i + out, relay open until the purchase
            reg = potential[i : i + out + 1].copy()
            reg[-1] = credit - (int(cum[out - 1]) if out else 0)
            registered[i : i + out + 1] = reg
            credit_at[i : i + out + 1] = credit - np.cumsum(reg)
            closed[i + out : end] = False
            run_outs.append(i + out)
            credit = 0
        else:
            registered[i:end] = potential[i:end]
            credit_at[i:end] = credit - cum[:span]
            credit = int(credit - cum[span - 1])
        if buy < n:
            purchases.append((buy, amount))
            credit += amount
        i = end
    return registered, credit_at, closed, purchases, run_outs


def _drn(index: int, seed: int) -> str:
    """An 11-digit meter number (DRN) with its Luhn digit: a fleet's numbers are ``seed``-specific and distinct."""
    body = f"{(seed * 7919 + 104729) % 9000 + 1000:04d}{index:06d}"
    return body + str(luhn_digit(body))


@dataclass(frozen=True)
class MeterProfile:
    """One simulated meter: who it is, what is wrong with it (``faults``, the ground truth) and what only looks
    wrong (``normals``). Its month is drawn lazily from its own seed (:meth:`simulate`)."""

    meter_id: str
    medium: Medium
    customer: CustomerClass
    faults: tuple[Fault, ...]
    normals: tuple[Normal, ...]
    clock: Clock
    holidays: tuple[int, ...]
    seed: tuple[int, int]

    @property
    def group(self) -> str:
        """The peer group a head-end compares it with: medium and customer class (the tariff's category)."""
        return f"{self.medium}/{self.customer}"

    def fault(self, kind: FaultKind) -> Fault | None:
        return next((f for f in self.faults if f.kind is kind), None)

    def normal(self, kind: NormalKind) -> Normal | None:
        return next((x for x in self.normals if x.kind is kind), None)

    def readings(self, t0: int, t1: int) -> Readings:
        """The readings taken in ``(t0, t1]`` (true time) that the meter reports."""
        sim = self.simulate()
        at = sim.readings.at
        keep = sim.reported & (at > t0) & (at <= t1)
        return sim.readings.select(keep)

    def events(self, t0: int, t1: int) -> list[MeterEvent]:
        """The events that happened in ``(t0, t1]`` (true time) that the meter reports, in order."""
        return [e for e in self.simulate().events if t0 < e.at <= t1]

    def simulate(self) -> Simulation:
        return _simulate(self)


#: Simulations kept for :meth:`MeterProfile.readings` and :meth:`~MeterProfile.events` (a 30-day month at 15
#: minutes is about 0.25 MB): a caller reading a larger fleet slice by slice holds ``simulate()``'s result itself.
CACHE_SIZE = 256
_CACHE: dict[tuple[str, tuple[int, int], int, int], Simulation] = {}


def _simulate(m: MeterProfile) -> Simulation:
    key = (m.meter_id, m.seed, m.clock.start, m.clock.n)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _CACHE[key] = _run(m)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return hit


def _run(m: MeterProfile) -> Simulation:
    """One meter's month: the real load, faults on what the meter registers, credit and relay, readings, events."""
    rng = np.random.default_rng(np.random.SeedSequence(m.seed[0], spawn_key=(m.seed[1],)))
    clock, at, width = m.clock, m.clock.at, m.clock.interval
    spec = draw_spec(rng, m.medium, m.customer)
    normal = m.normals[0] if m.normals else None
    load, demand = real_load(rng, spec, clock, m.holidays, normal)
    if normal is not None and normal.kind is NormalKind.NEW_APPLIANCE:
        p = normal.params
        extra = Events.concat(
            [
                Events(
                    clock.day0
                    + np.arange(clock.days) * DAY
                    + (p["from_h"] + rng.uniform(-0.5, 0.5, clock.days)) * HOUR,
                    p["hours"] * HOUR * rng.uniform(0.8, 1.2, clock.days),
                    np.full(clock.days, p["extra_w"]),
                )
            ]
        )
        keep = extra.start >= normal.start
        e, d = _accumulate(Events(*(a[keep] for a in extra)), clock)
        load, demand = load + e, demand + d
    events: list[tuple[int, str]] = []
    seen = np.ones(clock.n)  # share of the real load the meter registers
    for f in m.faults:
        active = (at > f.start) & ((at <= f.end) if f.end is not None else True)
        if f.kind is FaultKind.BYPASS:
            seen = np.where(active, f.params["fraction"], seen)
        elif f.kind is FaultKind.MAGNETIC:
            seen = np.where(active, f.params["factor"], seen)
            events.append((f.start, "strong_dc_field_detected"))
            if f.end is not None:
                events.append((f.end, "no_strong_dc_field_anymore"))
        elif f.kind is FaultKind.COVER:
            which = "terminal_cover" if f.params.get("terminal") else "meter_cover"
            events.append((f.start, f"{which}_removed"))
            if f.end is not None:
                events.append((f.end, f"{which}_closed"))
        elif f.kind is FaultKind.LEAK:
            flow = f.params["flow_l_per_h"]
            load = load + np.where(active, flow * width / HOUR, 0.0)
            demand = demand + np.where(active, flow, 0.0)
    # what the meter would register with the supply on: integer units off the cumulative seen load
    cum = np.floor(np.cumsum(load * seen)).astype(np.int64)
    potential = np.diff(cum, prepend=np.int64(0))
    buyer = Buyer(
        monthly=bool(rng.random() < 0.35),
        trigger_days=float(rng.uniform(0.8, 2.5)),
        buy_days=float(rng.uniform(2, 8)),
        run_out_chance=float(rng.uniform(0.0, 0.15)),
        payday=int(rng.choice([1, 15, 25, 28])),
    )
    lapse = normal if normal is not None and normal.kind is NormalKind.LAPSED else None
    registered, credit, closed, purchases, run_outs = _credit(rng, clock, potential, buyer, lapse)
    # supply off: no load. The run-out interval keeps the share registered before the relay opened.
    supplied = np.where(closed, 1.0, 0.0)
    for j in run_outs:
        supplied[j] = registered[j] / potential[j] if potential[j] else 0.0
    load = load * supplied
    register = int(rng.integers(1_000, 5_000_000)) + np.cumsum(registered)
    shown = np.rint(np.where(closed, demand * seen, 0.0)).astype(np.int64)
    low = LOW_CREDIT_EVENT[m.medium]
    for j in run_outs:
        events.append((int(at[j]), "relay_opened"))
    for j, _ in purchases:
        t = int(at[j] - width + rng.integers(1, width))
        events.append((t, "token_accepted"))
        if j > 0 and not closed[j - 1]:
            events.append((t + 1, "relay_closed"))
    below = np.nonzero((credit[1:] < low) & (credit[:-1] >= low))[0] + 1
    events.extend((int(at[j]), "low_credit") for j in below)
    # the meter's clock: a small error and drift, or an injected drift
    offset = rng.uniform(-8, 8) + rng.uniform(-0.5, 0.5) * (at - clock.start) / DAY
    drift = next((f for f in m.faults if f.kind is FaultKind.CLOCK_DRIFT), None)
    if drift is not None:
        offset = offset + drift.params["drift_s_per_day"] * np.maximum(at - drift.start, 0) / DAY
    read_at = at + np.rint(offset).astype(np.int64)
    sent_at = at + 1 + np.minimum(rng.exponential(4.0, clock.n), 60).astype(np.int64)
    outage = normal if normal is not None and normal.kind is NormalKind.COMM_OUTAGE else None
    if outage is not None and outage.end is not None:
        held = (at >= outage.start) & (at < outage.end)
        sent_at = np.where(held, outage.end + 5 + np.cumsum(held) // 10, sent_at)
    reported = rng.random(clock.n) >= LOSS_RATE
    dead = next((f for f in m.faults if f.kind is FaultKind.DEAD), None)
    if dead is not None:
        reported &= at < dead.start
    readings = Readings(np.arange(clock.n, dtype=np.int64), at, read_at, sent_at, register, shown, credit, closed)
    ordered = sorted(events)
    off = dead.start if dead is not None else None
    meter_events = tuple(
        MeterEvent(name, t, int(t + np.rint(np.interp(t, at, offset))))
        for t, name in ordered
        if (off is None or t < off) and clock.start < t <= int(at[-1])
    )
    return Simulation(
        readings=readings,
        reported=reported,
        load=load,
        potential=potential,
        events=meter_events,
        purchases=tuple((int(at[j] - width), a) for j, a in purchases),
        run_outs=tuple(int(at[j]) for j in run_outs),
        buyer=buyer,
    )


@dataclass(frozen=True)
class Fleet:
    """A reproducible fleet: ``Fleet.make(seed, n, start, days, interval)``; the same arguments, the same fleet."""

    seed: int
    start: int
    days: int
    interval: int
    utc_offset_s: int
    holidays: tuple[int, ...]
    meters: tuple[MeterProfile, ...]

    @classmethod
    def make(
        cls,
        seed: int,
        n: int,
        start: dt.datetime | int,
        days: int = 30,
        interval: int = 900,
        *,
        utc_offset_s: int | None = None,
        mix: Mix | None = None,
    ) -> Fleet:
        """``n`` meters over ``days`` days of ``interval`` seconds from ``start`` (an aware datetime, whose offset
        is the fleet's local time unless ``utc_offset_s`` is given, or epoch seconds with ``utc_offset_s``).
        Media, classes, faults, normals and the fleet's holidays (one or two days mid-month) come from ``seed``."""
        if n < 1 or days < 1 or interval < 60 or DAY % interval:
            raise ValueError("a fleet needs n >= 1, days >= 1 and an interval of a minute or more dividing a day")
        if isinstance(start, dt.datetime):
            if start.tzinfo is None:
                raise ValueError("start must be an aware datetime (its offset is the fleet's local time)")
            offset = utc_offset_s if utc_offset_s is not None else int(start.utcoffset().total_seconds())  # type: ignore[union-attr]
            t0 = int(start.timestamp())
        else:
            offset, t0 = utc_offset_s or 0, int(start)
        mix = mix or Mix()
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,)))
        clock = Clock(t0, days * DAY // interval, interval, offset)
        first = int(rng.integers(round(days * 0.4), round(days * 0.7) + 1))
        holidays = (first,) if rng.random() < 0.5 else (first, first + 1)
        media = [Medium.WATER if rng.random() < mix.water else Medium.ELECTRICITY for _ in range(n)]
        customers = [
            CustomerClass.BUSINESS
            if m is Medium.ELECTRICITY and rng.random() < mix.business
            else CustomerClass.HOUSEHOLD
            for m in media
        ]
        fault_kinds, normal_kinds = assign(rng, media, mix)
        meters = []
        for i in range(n):
            fk, nk = fault_kinds[i], normal_kinds[i]
            faults = (make_fault(rng, fk, t0, days),) if fk is not None else ()
            normals = (make_normal(rng, nk, t0, days),) if nk is not None else ()
            meters.append(
                MeterProfile(_drn(i, seed), media[i], customers[i], faults, normals, clock, holidays, (seed, i))
            )
        return cls(seed, t0, days, interval, offset, holidays, tuple(meters))
