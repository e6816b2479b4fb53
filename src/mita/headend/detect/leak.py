"""Water leakage: flow that never stops.

Reasoning
    A household's water use comes in draws (a flush, a shower, a tap) with silence between them, and at night
    nearly all silence. A leak (a running cistern, a dripping pipe, a burst underground) is a constant flow on top:
    the meter never stands still. Two tests, either one raises:

    * continuous flow: each of the last :data:`CONTINUOUS_HOURS` hours' worth of intervals with the valve open
      registered some flow (at most :data:`CONTINUOUS_MISSING` unread). Draws leave silent quarter-hours every
      night, even in a big family's house; a leak leaves none. Intervals with the valve shut are passed over: a
      leak drains a prepaid meter's credit, and its customer, out of credit time and again, has the valve shut
      for hours at a time.
    * night flow: on each of the last :data:`NIGHTS` nights, every interval from :data:`NIGHT_FROM_H` to
      :data:`NIGHT_TO_H` o'clock (local time) registered flow. It needs only the nights, so it still finds a leak
      on a meter whose days have gaps (a valve shut for want of credit, readings lost).

    Both look at single intervals, not hourly sums: a big household can use water in every hour of the night
    (a flush at 01:20, a glass of water at 02:40), but not in every quarter-hour. The price is resolution: with
    a register counting whole litres, a leak under 1 L per interval (4 L/h at 15 minutes) does not show in every
    interval and is missed.

What fools it, and the guards
    * Garden irrigation, a pool filling: large draws for a few hours, some at night on a timer. They stop, so
      the continuous test sees silence before and after; a timer in the small hours runs an hour or two, not the
      whole night window, night after night.
    * Missing readings: an unread interval is not flow (a gap loses its consumption, :mod:`.window`).

What still fools it: a meter serving several homes (flow all night is normal there; such meters belong in their
own peer group with the rule off), a constant legitimate draw (a cooling tower, a fish pond's top-up valve).
"""

from __future__ import annotations

import numpy as np

from .finding import Finding, Severity, rounded
from .window import DAY, HOUR, Medium, MeterWindow

#: The continuous test's span, and the unread intervals it tolerates.
CONTINUOUS_HOURS = 24
CONTINUOUS_MISSING = 2
#: The smallest interval volume that counts as flow (L): above zero, below the register's 1 L step.
MIN_FLOW_L = 0.5
#: The night test: hours [from, to) local time, flow in every interval of it (at most NIGHT_MISSING unread), on
#: this many consecutive nights.
NIGHT_FROM_H = 1
NIGHT_TO_H = 4
NIGHTS = 2
NIGHT_MISSING = 1
#: The window the rule wants: room for a day of supplied intervals when the valve was shut part of the time.
WINDOW_DAYS = 4
#: At or above this flow (L/h) the leak is high severity (a burst, not a drip).
HIGH_L_PER_H = 30.0


def _continuous(w: MeterWindow) -> tuple[int, float] | None:
    """(start of the unbroken run of flow, its smallest interval flow in L/h) when the last
    :data:`CONTINUOUS_HOURS` of supplied intervals all had flow; else None. Intervals with the valve shut (no
    credit) are skipped, not breaks: no water flows through a shut valve, leak or not."""
    need = CONTINUOUS_HOURS * HOUR // w.interval
    open_ = np.nonzero(w.relay_closed == 1)[0]
    if len(open_) < need:
        return None
    cons = w.consumption[open_]
    tail = cons[-need:]
    read = ~np.isnan(tail)
    if (~read).sum() > CONTINUOUS_MISSING or not (tail[read] >= MIN_FLOW_L).all():
        return None
    # walk back to where the run began (an unread interval does not break it)
    stops = np.nonzero(~(np.isnan(cons) | (cons >= MIN_FLOW_L)))[0]
    first = int(open_[int(stops[-1]) + 1]) if len(stops) else int(open_[0])
    return int(w.t[first]) - w.interval, float(tail[read].min()) * HOUR / w.interval


def _nights(w: MeterWindow) -> tuple[int, float] | None:
    """(start of the first of the :data:`NIGHTS` leaking nights, the smallest interval flow in them in L/h)."""
    local_end = int(w.t[-1]) + w.utc_offset_s
    # the last night whose window has ended
    last = local_end - local_end % DAY + NIGHT_TO_H * HOUR
    if last > local_end:
        last -= DAY
    span = (NIGHT_TO_H - NIGHT_FROM_H) * HOUR // w.interval
    smallest = np.inf
    for k in range(NIGHTS):
        end = last - k * DAY - w.utc_offset_s  # epoch seconds of the night window's end
        i1 = len(w.t) - int((int(w.t[-1]) - end) // w.interval)
        i0 = i1 - span
        if i0 < 0 or i1 > len(w.t):
            return None
        night = w.consumption[i0:i1]
        read = night[~np.isnan(night)]
        if len(night) - len(read) > NIGHT_MISSING or not len(read) or read.min() < MIN_FLOW_L:
            return None
        smallest = min(smallest, float(read.min()))
    first_end = last - (NIGHTS - 1) * DAY - w.utc_offset_s
    return first_end - (NIGHT_TO_H - NIGHT_FROM_H) * HOUR, smallest * HOUR / w.interval


def leak(w: MeterWindow, context: object, now: int) -> list[Finding]:
    """A leak on a water meter's window (module docstring), or nothing."""
    del context, now
    if w.medium is not Medium.WATER or len(w.t) == 0:
        return []
    cont = _continuous(w)
    night = _nights(w)
    if cont is None and night is None:
        return []
    opened = min(x[0] for x in (cont, night) if x is not None)
    flow = max(x[1] for x in (cont, night) if x is not None)
    how = "has not stopped for a day" if cont is not None else f"ran all night for {NIGHTS} nights"
    return [
        Finding(
            w.meter_id,
            "leak",
            Severity.HIGH if flow >= HIGH_L_PER_H else Severity.MEDIUM,
            opened,
            f"Meter {w.meter_id}: water flow {how} (at least {flow:.0f} L/h): a leak is likely.",
            {
                "min_flow_l_per_h": rounded(flow, 1),
                "continuous": cont is not None,
                "night": night is not None,
            },
        )
    ]
