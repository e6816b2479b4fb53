"""Bypass suspicion: consumption collapses against the meter's own history and against its peers, with the
supply on and the shape of the day intact.

Reasoning
    A bypass (a cable, or a pipe, around the meter) leaves the customer's use as it was and takes part of it past
    the meter: the meter registers a fraction of the load, from one day to the next, for good. So the rule looks
    for a sustained fall against the meter's own recent history, judged per day type (weekday, Saturday, Sunday:
    a shop shut on Sundays is not a collapse every Sunday).

What fools a plain "consumption fell" rule, and the guards
    * A public holiday or a cold snap moves every meter at once: each day's ratio is divided by the median ratio
      of the meter's peer group on the same day (:class:`FleetContext`; the group is the medium and the tariff's
      customer category), so only a fall the peers did not share counts.
    * A customer out of credit, or disconnected, uses nothing because the supply is off: the relay must have
      been closed for :data:`RELAY_CLOSED_MIN` of the recent intervals.
    * A vacation (nobody home, supply on) also collapses consumption, to the fridge and standby; a garden no
      longer watered collapses a water meter's days. Neither touches the meter's *ordinary* intervals: the
      standby and the fridge in the small hours (electricity), the size of a flush or a tap's draw (water). A bypass
      scales those too: the recent quiet level (:func:`quiet_level`) must have fallen with the total
      (:data:`QUIET_RATIO`). And a bypassed meter still sees a share of a household's day, with its morning and
      evening peaks, so the recent hour-of-day profile must correlate with the usual one
      (:data:`SHAPE_MIN_CORR`); a vacation's is flat. An empty water meter (no flow at all) has no draws and is
      never a bypass here: a complete bypass looks like a vacant house, which this rule cannot tell apart.
    * A day of noise: the fall must hold on every one of the last :data:`RECENT_DAYS` days (each under
      :data:`COLLAPSE_DAY_MAX`, their mean under :data:`COLLAPSE_RATIO`).
    * A magnet on the meter also makes it under-register; when the meter reported a strong DC field at any time
      during the recent days, the magnetic alarm explains the fall and this rule stays quiet.
    * A rise (a new appliance) or a shifted day (night shift) is not a fall; the baseline is a median, so a few
      odd days in it (a vacation last week, a watering day) move it little.

What still fools it: a household that really shrank along with its appliances (moved to a smaller fridge and
switched standby off), a meter whose day is mostly noise. What it misses: a bypass of one circuit only (the
water heater's: the standby and fridge stay on the meter, so the quiet level does not fall), a complete bypass.
The alarm says "suspected"; a site visit decides.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .finding import Finding, Severity, rounded
from .window import F64, I64, Medium, MeterWindow

#: The days judged: the fall must hold on each of them.
RECENT_DAYS = 3
#: Whole days of history before them that a meter needs (with :data:`~.window.MIN_COVERAGE` of each read).
BASELINE_MIN_DAYS = 7
#: The window the rule wants: four weeks (three-plus weeks of baseline).
WINDOW_DAYS = 28
#: The recent days' mean ratio to the baseline (after the peers' ratio is divided out) must be under this ...
COLLAPSE_RATIO = 0.65
#: ... and each day's under this.
COLLAPSE_DAY_MAX = 0.85
#: The correlation of the recent hour-of-day profile with the usual one, at least.
SHAPE_MIN_CORR = 0.5
#: The share of the recent intervals with the relay closed, at least.
RELAY_CLOSED_MIN = 0.98
#: A meter using less than this a day has too little to judge (Wh or L).
MIN_BASELINE = {Medium.ELECTRICITY: 1_000.0, Medium.WATER: 50.0}
#: Same-day-type baseline days needed to use them rather than all baseline days.
MIN_SAME_TYPE = 2
#: Meters with a ratio on a day that a peer group needs for its median to count (else the peers' ratio is 1).
MIN_PEERS = 8
#: The recent "quiet level" (:func:`quiet_level`) against the baseline's, at most.
QUIET_RATIO = 0.7
#: Electricity's quiet level: the night's hours [from, to), local time (the standby and the fridge).
NIGHT_FROM_H = 1
NIGHT_TO_H = 4
#: The quiet level is the mean of the intervals up to this quantile: at night, not the water heater's reheat
#: (electricity); of the draws, not the showers nor the garden (water). A trimmed mean, not a median: the
#: night's intervals are two crowds (the fridge on, the fridge off) and their median jumps between them, and
#: draws are whole litres, whose median moves in steps (3 L against 4 L is 0.75).
ORDINARY = {Medium.ELECTRICITY: 0.8, Medium.WATER: 0.5}
#: Water's quiet level needs at least this many intervals with flow.
MIN_DRAWS = 20
#: Below this mean ratio the finding is high severity.
HIGH_BELOW = 0.3


@dataclass(frozen=True)
class Ratios:
    """A meter's recent days against its own history: each recent day's start, total and ratio to the baseline
    of its day type, the baseline (the median daily total over the history) and which history days it used
    (``valid``: read, and the supply on all day)."""

    start: I64
    total: F64
    ratio: F64
    baseline: float
    recent: slice
    valid: NDArray[np.bool_]


def _day_type(weekday: I64) -> I64:
    return np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))


def day_ratios(w: MeterWindow) -> Ratios | None:
    """The recent days' ratios to the meter's own baseline, or None when the window has too little history."""
    d = w.days
    n = len(d.start)
    if n < RECENT_DAYS + BASELINE_MIN_DAYS:
        return None
    recent = slice(n - RECENT_DAYS, n)
    kind = _day_type(d.weekday)
    with np.errstate(invalid="ignore"):
        supplied = np.nanmin(np.where(np.isnan(d.relay_closed), 1.0, d.relay_closed), axis=1) > 0
    base_total = d.total[: recent.start]
    valid = ~np.isnan(base_total) & supplied[: recent.start]
    if valid.sum() < BASELINE_MIN_DAYS:
        return None
    overall = float(np.median(base_total[valid]))
    ratio = np.full(RECENT_DAYS, np.nan)
    for j in range(RECENT_DAYS):
        same = valid & (kind[: recent.start] == kind[recent.start + j])
        ref = float(np.median(base_total[same])) if same.sum() >= MIN_SAME_TYPE else overall
        if ref > 0:
            ratio[j] = d.total[recent.start + j] / ref
    return Ratios(d.start[recent], d.total[recent], ratio, overall, recent, valid)


@dataclass(frozen=True)
class FleetContext:
    """Each peer group's median ratio (:func:`day_ratios`) per day (by the local day's start), over its meters:
    what the whole group did that day. Built from the windows of one evaluation (:meth:`build`)."""

    ratios: Mapping[str, Mapping[int, float]] = field(default_factory=dict)

    @classmethod
    def build(cls, windows: Iterable[MeterWindow]) -> FleetContext:
        by_group: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for w in windows:
            r = day_ratios(w)
            if r is None:
                continue
            for start, ratio in zip(r.start.tolist(), r.ratio.tolist(), strict=True):
                if ratio == ratio:
                    by_group[w.group][int(start)].append(ratio)
        return cls(
            {
                g: {day: float(np.median(v)) for day, v in days.items() if len(v) >= MIN_PEERS}
                for g, days in by_group.items()
            }
        )

    def peer(self, group: str, day: int) -> float:
        """The group's median ratio on the day starting at ``day``; 1.0 when unknown (no fleet to compare)."""
        return self.ratios.get(group, {}).get(day, 1.0)


def _profile(cons: F64, per_hour: int) -> F64:
    """Mean consumption per hour of the day over the rows (days) given."""
    days, per = cons.shape
    hourly = cons.reshape(days, per // per_hour, per_hour)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an hour never read is NaN, as it should be
        return np.asarray(np.nanmean(hourly, axis=(0, 2)), dtype=np.float64)


def _corr(a: F64, b: F64) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 6:
        return float("nan")
    x, y = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def quiet_level(cons: F64, relay: F64, medium: Medium) -> float:
    """What the meter registers in its ordinary intervals, over days' rows of intervals (local midnight first):
    electricity's ordinary interval in the night hours :data:`NIGHT_FROM_H`-:data:`NIGHT_TO_H` (standby and the
    fridge: what runs whether anyone is home or not), water's ordinary draw (a flush, a tap: the same size
    whatever else the day held). A bypass scales these like everything else; a vacation, a watering day or a
    holiday does not. Only intervals with the supply on count."""
    if medium is Medium.ELECTRICITY:
        per = cons.shape[1]
        cols = slice(per * NIGHT_FROM_H // 24, per * NIGHT_TO_H // 24)
        cons, relay = cons[:, cols], relay[:, cols]
    v = cons[~np.isnan(cons) & (relay == 1)]
    if medium is Medium.WATER:
        v = v[v > 0]
        if len(v) < MIN_DRAWS:
            return float("nan")
    if not len(v):
        return float("nan")
    return float(v[v <= np.quantile(v, ORDINARY[medium])].mean())


def magnet_during(w: MeterWindow, since: int) -> bool:
    """Whether a strong DC field was reported present at any time from ``since`` on (a
    ``strong_dc_field_detected`` not yet followed by ``no_strong_dc_field_anymore`` at ``since``, or one after)."""
    on = False
    for e in w.events:
        if e.name == "strong_dc_field_detected":
            if e.at >= since:
                return True
            on = True
        elif e.name == "no_strong_dc_field_anymore":
            if e.at >= since and on:
                return True
            on = False
    return on


def bypass(w: MeterWindow, context: FleetContext, now: int) -> list[Finding]:
    """A bypass suspicion on ``w`` (module docstring), or nothing."""
    del now  # the window ends where the data does; the rule judges its whole days
    r = day_ratios(w)
    if r is None or r.baseline < MIN_BASELINE[w.medium] or np.isnan(r.ratio).any():
        return []
    peers = np.array([context.peer(w.group, int(s)) for s in r.start])
    adjusted = r.ratio / np.where(peers > 0, peers, 1.0)
    mean = float(adjusted.mean())
    if not (mean < COLLAPSE_RATIO and float(adjusted.max()) < COLLAPSE_DAY_MAX):
        return []
    d = w.days
    relay = d.relay_closed[r.recent]
    closed_share = float(np.nanmean(relay)) if (~np.isnan(relay)).any() else 0.0
    if closed_share < RELAY_CLOSED_MIN or magnet_during(w, int(r.start[0])):
        return []
    base_days = r.valid
    base_rows = d.consumption[: r.recent.start][base_days]
    base_quiet = quiet_level(base_rows, d.relay_closed[: r.recent.start][base_days], w.medium)
    quiet = quiet_level(d.consumption[r.recent], relay, w.medium) / base_quiet if base_quiet > 0 else float("nan")
    if not quiet <= QUIET_RATIO:
        return []
    per_hour = max(3_600 // w.interval, 1)
    shape = _corr(_profile(d.consumption[r.recent], per_hour), _profile(base_rows, per_hour))
    if not shape >= SHAPE_MIN_CORR:
        return []
    unit = "Wh" if w.medium is Medium.ELECTRICITY else "L"
    recent = float(np.mean(r.total))
    return [
        Finding(
            w.meter_id,
            "bypass",
            Severity.HIGH if mean < HIGH_BELOW else Severity.MEDIUM,
            int(r.start[0]),
            f"Meter {w.meter_id}: consumption fell to {mean:.0%} of its usual level for {RECENT_DAYS} days with the "
            f"supply on, unlike its peers; the day's pattern is unchanged: a bypass is suspected.",
            {
                "baseline_per_day": rounded(r.baseline, 1),
                "recent_per_day": rounded(recent, 1),
                "unit": unit,
                "ratio": rounded(mean),
                "peer_ratio": rounded(float(peers.mean())),
                "quiet_ratio": rounded(quiet),
                "shape_corr": rounded(shape),
                "relay_closed_share": rounded(closed_share),
            },
        )
    ]
