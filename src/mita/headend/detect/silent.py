"""A silent meter: no reading received for longer than :data:`SILENT_INTERVALS` intervals.

Reasoning
    A meter on a live link sends every interval's reading within seconds; one that stops has died, lost its
    supply or its link, or been taken out. Twelve hours (48 quarter-hours) of silence is longer than the link
    outages a fleet sees in a normal month (a meter keeps its readings through an outage and sends them when the
    link is back, so an outage is a delay, not a loss), and short enough that a dead meter is found the same day.

What fools it: a long regional power cut or network outage (every meter of an area silent at once: the
evidence says whether the meter's last event was ``power_down``, and a caller can group such findings by area);
a meter never heard at all has no last reading and is not judged (that is a commissioning question).
"""

from __future__ import annotations

from .finding import Finding, Severity
from .window import MeterWindow

#: Intervals without a reading before a meter counts as silent (12 hours at 15 minutes).
SILENT_INTERVALS = 48
#: The window the rule wants (it reads only ``last_received_at`` and the events).
WINDOW_DAYS = 1


def silent(w: MeterWindow, context: object, now: int) -> list[Finding]:
    """A silent-meter finding when ``now`` is more than :data:`SILENT_INTERVALS` intervals past the last reading."""
    del context
    last = w.last_received_at
    if last is None or now - last <= SILENT_INTERVALS * w.interval:
        return []
    hours = (now - last) / 3_600
    power_down = bool(w.events) and w.events[-1].name == "power_down"
    why = " after a power failure" if power_down else ""
    return [
        Finding(
            w.meter_id,
            "silent",
            Severity.MEDIUM,
            int(last),
            f"Meter {w.meter_id}: no reading for {hours:.0f} hours{why}.",
            {"silent_hours": round(hours, 1), "last_received_at": int(last), "power_down": power_down},
        )
    ]
