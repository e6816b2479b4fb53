"""Low-credit forecast: days of credit left at the recent rate of use; one customer message per credit period.

Reasoning
    A prepaid customer cut off unwarned calls the utility; one warned buys in time. Days left is the credit
    over the recent daily use (:data:`HISTORY_DAYS` days, counting only intervals with the supply on, so days
    already cut off do not lower the rate). Under :data:`DAYS_LEFT` days, the rule finds it.

The forecast key
    The caller queues one message per :attr:`~.finding.Finding.key`. The key is the amount bought to date,
    ``credit + register``: consumption moves one down and the other up by the same amount, so it stays put for
    the whole credit period and changes at each purchase (and at nothing else). It needs no purchase inside the
    window, and a reading's repeat or a later evaluation gives the same key: one message per forecast, not per
    reading. (A meter whose credit and register do not move together, e.g. with free basic units, changes key
    more often; its messages are then per change.)

What fools it: a change of habit (a vacation begins: the forecast is early; a new heater: late), and a meter
with almost no recent use (days left is then large, and nothing is said).
"""

from __future__ import annotations

import numpy as np

from .finding import Finding, Severity, rounded
from .window import DAY, Medium, MeterWindow

#: Warn under this many days of credit left (the settings' ``low_credit_days`` default).
DAYS_LEFT = 3.0
#: Days of recent use the rate is taken over, and the least supplied hours the rate needs.
HISTORY_DAYS = 7
MIN_HOURS = 24
#: The window the rule wants.
WINDOW_DAYS = HISTORY_DAYS


def forecast_key(meter_id: int | str, credit: float, register: float) -> str:
    """The credit period's key (module docstring)."""
    return f"{meter_id}/low_credit/{round(credit + register)}"


def low_credit(w: MeterWindow, context: object, now: int, days_left: float = DAYS_LEFT) -> list[Finding]:
    """A low-credit forecast on ``w`` when under ``days_left`` days of credit remain, or nothing."""
    del context, now
    read = np.nonzero(~(np.isnan(w.credit) | np.isnan(w.register)))[0]
    if len(read) == 0:
        return []
    last = int(read[-1])
    credit, register = float(w.credit[last]), float(w.register[last])
    if credit <= 0 or w.relay_closed[last] == 0:
        return []  # already out: the supply is off, that is a different message
    span = HISTORY_DAYS * DAY // w.interval
    cons = w.consumption[max(last + 1 - span, 0) : last + 1]
    relay = w.relay_closed[max(last + 1 - span, 0) : last + 1]
    ok = ~np.isnan(cons) & (relay == 1)
    if ok.sum() * w.interval < MIN_HOURS * 3_600:
        return []
    per_day = float(cons[ok].mean()) * w.per_day
    if per_day <= 0:
        return []
    left = credit / per_day
    if left >= days_left:
        return []
    unit = "kWh" if w.medium is Medium.ELECTRICITY else "L"
    shown = credit / 1000 if w.medium is Medium.ELECTRICITY else credit
    return [
        Finding(
            w.meter_id,
            "low_credit",
            Severity.LOW,
            int(w.t[last]),
            f"Meter {w.meter_id}: {shown:.1f} {unit} of credit left, about {left:.1f} days at recent use.",
            {"credit": rounded(credit, 1), "per_day": rounded(per_day, 1), "days_left": rounded(left, 2)},
            key=forecast_key(w.meter_id, credit, register),
        )
    ]
