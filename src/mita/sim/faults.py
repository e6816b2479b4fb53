"""What goes wrong with a simulated meter, and what only looks wrong: the ground truth of a simulated fleet (pure).

A fleet's meters each carry at most one :class:`Fault` (what detection must find) and, on meters without a fault,
at most one :class:`Normal` (a customer's behaviour that looks like a fault to a careless rule, so that precision is
measured honestly). Both are plain values with a start (and an end where it makes sense), in epoch seconds;
:mod:`mita.sim.loads` turns them into consumption, credit, readings and events.

Faults (:class:`FaultKind`)
    ============  ==============================================================================================
    bypass        the meter sees ``fraction`` (0.1-0.6) of the real load from ``start`` on (a cable or pipe around
                  it); the customer's load itself is unchanged
    magnetic      a magnet on the meter from ``start`` to ``end``: it reports ``strong_dc_field_detected`` (and
                  ``no_strong_dc_field_anymore`` when removed) and registers ``factor`` (0.2-0.7) of the load
    cover         ``meter_cover_removed`` (or ``terminal_cover_removed``) at ``start``; closed again at ``end``
                  when there is one (``meter_cover_closed`` / ``terminal_cover_closed``); no effect on the load
    leak          water only: a constant extra flow of ``flow_l_per_h`` from ``start`` (night flow never zero)
    dead          the meter stops reporting at ``start`` (no reading, no event after it)
    clock_drift   the meter's clock runs ``drift_s_per_day`` fast (positive) or slow from ``start``
    ============  ==============================================================================================

Tricky normals (:class:`NormalKind`): ``vacation`` (nobody home from ``start`` to ``end``, supply on),
``lapsed`` (stops buying from ``start``, runs out, stays without supply until ``end``), ``new_appliance``
(``extra_w`` more from ``start``), ``night_shift`` (the day turned round by ``shift_h`` hours from ``start``),
``irrigation`` (water: a garden watered a few hours on some days, the whole month), ``comm_outage`` (the meter's
link is down from ``start`` to ``end``: it keeps its readings and sends them when the link is back).
The fleet-wide dip (a public holiday, every meter at once) is the fleet's, not a meter's: ``Fleet.holidays``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

import numpy as np

DAY = 86_400
HOUR = 3_600


class Medium(StrEnum):
    """What the meter measures (the same strings as ``mita.telemetry.obis.Medium``)."""

    ELECTRICITY = "electricity"
    WATER = "water"


class CustomerClass(StrEnum):
    HOUSEHOLD = "household"
    BUSINESS = "business"


class FaultKind(StrEnum):
    BYPASS = "bypass"
    MAGNETIC = "magnetic"
    COVER = "cover"
    LEAK = "leak"
    DEAD = "dead"
    CLOCK_DRIFT = "clock_drift"


class NormalKind(StrEnum):
    VACATION = "vacation"
    LAPSED = "lapsed"
    NEW_APPLIANCE = "new_appliance"
    NIGHT_SHIFT = "night_shift"
    IRRIGATION = "irrigation"
    COMM_OUTAGE = "comm_outage"


def _frozen(params: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(params))


@dataclass(frozen=True)
class Fault:
    """A fault injected on one meter: the ground truth a detection rule is scored against."""

    kind: FaultKind
    start: int
    end: int | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))

    def active(self, t: int) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class Normal:
    """A customer's normal behaviour that a careless rule would take for a fault."""

    kind: NormalKind
    start: int
    end: int | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))


#: Which media a fault or a normal applies to.
FAULT_MEDIA: dict[FaultKind, tuple[Medium, ...]] = {
    FaultKind.BYPASS: (Medium.ELECTRICITY, Medium.WATER),
    FaultKind.MAGNETIC: (Medium.ELECTRICITY,),
    FaultKind.COVER: (Medium.ELECTRICITY,),
    FaultKind.LEAK: (Medium.WATER,),
    FaultKind.DEAD: (Medium.ELECTRICITY, Medium.WATER),
    FaultKind.CLOCK_DRIFT: (Medium.ELECTRICITY, Medium.WATER),
}
NORMAL_MEDIA: dict[NormalKind, tuple[Medium, ...]] = {
    NormalKind.VACATION: (Medium.ELECTRICITY, Medium.WATER),
    NormalKind.LAPSED: (Medium.ELECTRICITY, Medium.WATER),
    NormalKind.NEW_APPLIANCE: (Medium.ELECTRICITY,),
    NormalKind.NIGHT_SHIFT: (Medium.ELECTRICITY,),
    NormalKind.IRRIGATION: (Medium.WATER,),
    NormalKind.COMM_OUTAGE: (Medium.ELECTRICITY, Medium.WATER),
}


@dataclass(frozen=True)
class Mix:
    """The fleet's make-up: shares of meters by medium and class, and of each fault and normal among the meters
    of the media it applies to. The defaults put a few percent of meters on each fault, far more than a real
    fleet has, so that a fleet of 1,000 holds enough of each to measure recall."""

    water: float = 0.3
    business: float = 0.15  # of the electricity meters
    faults: Mapping[FaultKind, float] = field(
        default_factory=lambda: {
            FaultKind.BYPASS: 0.05,
            FaultKind.MAGNETIC: 0.035,
            FaultKind.COVER: 0.035,
            FaultKind.LEAK: 0.1,
            FaultKind.DEAD: 0.025,
            FaultKind.CLOCK_DRIFT: 0.025,
        }
    )
    normals: Mapping[NormalKind, float] = field(
        default_factory=lambda: {
            NormalKind.VACATION: 0.05,
            NormalKind.LAPSED: 0.05,
            NormalKind.NEW_APPLIANCE: 0.04,
            NormalKind.NIGHT_SHIFT: 0.03,
            NormalKind.IRRIGATION: 0.25,
            NormalKind.COMM_OUTAGE: 0.05,
        }
    )


def assign(
    rng: np.random.Generator, media: list[Medium], mix: Mix
) -> tuple[list[FaultKind | None], list[NormalKind | None]]:
    """Which meter gets which fault and which normal: exact counts (the share of the eligible meters, rounded),
    on meters drawn at random; a meter has at most one fault, and a normal only when it has no fault."""
    n = len(media)
    faults: list[FaultKind | None] = [None] * n
    normals: list[NormalKind | None] = [None] * n
    for kind, share in mix.faults.items():
        eligible = [i for i in range(n) if media[i] in FAULT_MEDIA[kind] and faults[i] is None]
        total = sum(1 for m in media if m in FAULT_MEDIA[kind])
        count = min(len(eligible), round(share * total))
        for i in rng.choice(np.array(eligible, dtype=np.int64), size=count, replace=False) if count else ():
            faults[int(i)] = kind
    for nkind, share in mix.normals.items():
        eligible = [i for i in range(n) if media[i] in NORMAL_MEDIA[nkind] and faults[i] is None and normals[i] is None]
        total = sum(1 for m in media if m in NORMAL_MEDIA[nkind])
        count = min(len(eligible), round(share * total))
        for i in rng.choice(np.array(eligible, dtype=np.int64), size=count, replace=False) if count else ():
            normals[int(i)] = nkind
    return faults, normals


def _at(rng: np.random.Generator, start: int, lo_day: float, hi_day: float) -> int:
    """A time between two (fractional) days after ``start``, to the second."""
    return start + int(rng.uniform(lo_day, hi_day) * DAY)


def make_fault(rng: np.random.Generator, kind: FaultKind, start: int, days: int) -> Fault:
    """One fault of ``kind`` with its parameters drawn, timed so that a rule has history before it and days after
    it within a fleet of ``days`` days (the windows scale with ``days``; the numbers are for 30)."""
    d = days / 30
    if kind is FaultKind.BYPASS:
        return Fault(kind, _at(rng, start, 8 * d, 22 * d), None, {"fraction": float(rng.uniform(0.1, 0.6))})
    if kind is FaultKind.MAGNETIC:
        t0 = _at(rng, start, 3 * d, 26 * d)
        end = t0 + int(rng.uniform(0.5, 6) * DAY) if rng.random() < 0.6 else None
        return Fault(kind, t0, end, {"factor": float(rng.uniform(0.2, 0.7))})
    if kind is FaultKind.COVER:
        t0 = _at(rng, start, 1 * d, 28 * d)
        end = t0 + int(rng.uniform(0.1, 48) * HOUR) if rng.random() < 0.5 else None
        return Fault(kind, t0, end, {"terminal": float(rng.random() < 0.4)})
    if kind is FaultKind.LEAK:
        flow = float(np.exp(rng.uniform(np.log(4.0), np.log(80.0))))
        return Fault(kind, _at(rng, start, 3 * d, 26 * d), None, {"flow_l_per_h": flow})
    if kind is FaultKind.DEAD:
        return Fault(kind, _at(rng, start, 3 * d, 27 * d))
    if kind is FaultKind.CLOCK_DRIFT:
        rate = float(rng.uniform(20, 120)) * (1 if rng.random() < 0.5 else -1)
        return Fault(kind, _at(rng, start, 3 * d, 20 * d), None, {"drift_s_per_day": rate})
    raise ValueError(f"unknown fault kind {kind!r}")


def make_normal(rng: np.random.Generator, kind: NormalKind, start: int, days: int) -> Normal:
    """One tricky normal of ``kind``, timed within the fleet's ``days`` (as :func:`make_fault`)."""
    d = days / 30
    if kind is NormalKind.VACATION:
        t0 = start + int(rng.integers(round(8 * d), round(22 * d) + 1)) * DAY + int(rng.uniform(6, 14) * HOUR)
        return Normal(kind, t0, t0 + int(rng.uniform(5, 10) * DAY))
    if kind is NormalKind.LAPSED:
        t0 = _at(rng, start, 4 * d, 16 * d)
        return Normal(kind, t0, None, {"gap_days": float(rng.uniform(2, 8))})
    if kind is NormalKind.NEW_APPLIANCE:
        return Normal(kind, _at(rng, start, 6 * d, 24 * d), None, {"extra_w": float(rng.uniform(600, 2000)),
                      "hours": float(rng.uniform(4, 9)), "from_h": float(rng.uniform(8, 18))})  # fmt: skip
    if kind is NormalKind.NIGHT_SHIFT:
        return Normal(kind, _at(rng, start, 6 * d, 20 * d), None, {"shift_h": float(rng.uniform(8, 12))})
    if kind is NormalKind.IRRIGATION:
        return Normal(kind, start, None, {"per_week": float(rng.integers(2, 8)),
                      "flow_l_per_h": float(rng.uniform(400, 1500)), "hours": float(rng.uniform(1, 3))})  # fmt: skip
    if kind is NormalKind.COMM_OUTAGE:
        t0 = _at(rng, start, 2 * d, 28 * d)
        return Normal(kind, t0, t0 + int(rng.uniform(1, 10) * HOUR))
    raise ValueError(f"unknown normal kind {kind!r}")
