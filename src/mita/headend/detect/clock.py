"""Clock drift: the meter's clock, as its readings' timestamps show it against the times they were received.

Reasoning
    Each reading carries the meter's time (``read_at``); the head-end stamps its own on arrival
    (``received_at``). Their difference is the clock's error minus the delivery's latency, and latency is never
    negative: so the largest difference over a day (the reading that came quickest) is the clock's error, less a
    second or two. A clock more than :data:`MAX_OFFSET_S` off puts readings in the wrong interval and tariff
    period, and a token's time checks wrong.

What fools it, and the guards: a link outage delays readings by hours (read_at minus received_at very negative):
the maximum ignores them as long as some readings of the day came in time; a head-end whose own clock is wrong
(every meter drifts at once: a caller sees the whole fleet raise). The drift rate in the evidence (seconds per
day, a line fitted through each day's estimate) says whether the clock is running off or was set wrong once.
"""

from __future__ import annotations

import numpy as np

from .finding import Finding, Severity, rounded
from .window import DAY, MeterWindow

#: The clock error (seconds, either way) past which the meter's clock is reported.
MAX_OFFSET_S = 60
#: The span each estimate is taken over, and the readings it needs.
SPAN_S = DAY
MIN_READINGS = 8
#: The window the rule wants (the drift rate is fitted over it).
WINDOW_DAYS = 7


def _estimate(w: MeterWindow, end: int) -> float | None:
    """The clock error over the :data:`SPAN_S` ending at ``end``, or None with too few readings."""
    sel = (w.received_at > end - SPAN_S) & (w.received_at <= end)
    if sel.sum() < MIN_READINGS:
        return None
    return float((w.read_at[sel] - w.received_at[sel]).max())


def _series(w: MeterWindow, now: int) -> tuple[list[float], list[float]]:
    """Each whole span's (end, estimate) back from ``now`` while spans have readings enough."""
    ends: list[float] = []
    errors: list[float] = []
    end = now
    while (e := _estimate(w, end)) is not None:
        ends.append(float(end))
        errors.append(e)
        end -= SPAN_S
    return ends, errors


def clock_drift(w: MeterWindow, context: object, now: int) -> list[Finding]:
    """A clock-drift finding when the meter's clock is more than :data:`MAX_OFFSET_S` off (module docstring)."""
    del context
    error = _estimate(w, now)
    if error is None or abs(error) <= MAX_OFFSET_S:
        return []
    ends, errors = _series(w, now)
    rate = float(np.polyfit(np.asarray(ends) / DAY, np.asarray(errors), 1)[0]) if len(errors) >= 3 else float("nan")
    # opened: the start of the oldest span in the unbroken run of spans off the same way
    k = 0
    while k + 1 < len(errors) and abs(errors[k + 1]) > MAX_OFFSET_S and (errors[k + 1] > 0) == (error > 0):
        k += 1
    opened = int(ends[k]) - SPAN_S
    way = "fast" if error > 0 else "slow"
    return [
        Finding(
            w.meter_id,
            "clock_drift",
            Severity.LOW,
            opened,
            f"Meter {w.meter_id}: its clock is {abs(error):.0f} s {way}.",
            {"offset_s": rounded(error, 1), "drift_s_per_day": rounded(rate, 1)},
        )
    ]
