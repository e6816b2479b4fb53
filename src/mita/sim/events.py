"""The simulated meter's event logs: the event codes, and the rows the sim keeps (pure: no DLMS library here).

Event codes
    :data:`EVENT_CODES`, one table. The numbers are the IDIS companion specification's (DLMS UA, IDIS package 2),
    as independent readers of IDIS meters decode them: the Connexo metering protocols
    (``chandangeek/Connexo_Code``, ``protocolimpl/dlms/idis/events/StandardEventLog.java``,
    ``FraudDetectionLog.java``, ``DisconnectorControlLog.java``) and the Dutch NTA/DSMR table in the same code base
    (``protocolimpl/dlms/eictz3/LogbookEntriesFactory.java``) agree on every number used here. The licensed IDIS
    text itself was not at hand. An event code is an *unsigned* (0-255): those readers mask it with ``0xFF``.

    Codes 230 and up are **Mita's own** (the STS meter's reasons that IDIS does not name: no credit, the tamper
    that opens the switch, a bypass). IDIS meters use the top of the range for manufacturer events (Connexo decodes
    241/242 as one vendor's module events); that 230-239 is free in every companion specification is not verified.

Logs (IC 7 profile generic, one ring of at most :data:`CAPACITY` rows each, oldest dropped first)
    ====================  ================  =====================================================================
    log                   OBIS              rows
    ====================  ================  =====================================================================
    standard              0.0.99.98.0.255   power up (the sim starts serving the meter), clock adjusted old/new
    fraud detection       0.0.99.98.1.255   tamper conditions the model reports appearing, and clearing
    disconnector control  0.0.99.98.2.255   the model's reasons the switch is open, appearing and going; the
                                            limiter threshold changing (a token or a SET)
    token transfer        0.0.99.17.0.255   every token entered remotely: time, the token octet-string, status
    ====================  ================  =====================================================================

The rows live in the sim's memory only: a restart of the sim empties them. The meter file is the model's and does
not change for them. :class:`Watcher` turns the model's state into events by difference (the model has no event
stream): after each change the sim made, and at start, it compares the tamper kinds, the reasons the switch is
open and the power limit with what it saw last.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from enum import StrEnum

from mita.meter import Meter


class Log(StrEnum):
    STANDARD = "standard"
    FRAUD = "fraud"
    DISCONNECTOR = "disconnector"
    TOKEN = "token"


#: Rows per log; a real meter's logs hold 100 to a few hundred.
CAPACITY = 100

#: Event name -> (code, log). IDIS numbers below 230; Mita's own from 230 (module docstring).
EVENT_CODES: dict[str, tuple[int, Log]] = {
    "power_up": (2, Log.STANDARD),
    "clock_adjusted_old": (4, Log.STANDARD),
    "clock_adjusted_new": (5, Log.STANDARD),
    "strong_dc_field_detected": (42, Log.FRAUD),
    "no_strong_dc_field_anymore": (43, Log.FRAUD),
    "meter_cover_removed": (44, Log.FRAUD),
    "meter_cover_closed": (45, Log.FRAUD),
    "remote_disconnection": (62, Log.DISCONNECTOR),
    "remote_connection": (63, Log.DISCONNECTOR),
    "limiter_threshold_exceeded": (65, Log.DISCONNECTOR),
    "limiter_threshold_ok": (66, Log.DISCONNECTOR),
    "limiter_threshold_changed": (67, Log.DISCONNECTOR),
    # Mita's own
    "supply_off_no_credit": (230, Log.DISCONNECTOR),
    "supply_on_credit": (231, Log.DISCONNECTOR),
    "supply_off_tamper": (232, Log.DISCONNECTOR),
    "supply_on_tamper_cleared": (233, Log.DISCONNECTOR),
    "bypass_detected": (234, Log.FRAUD),
    "bypass_cleared": (235, Log.FRAUD),
}

#: The model's tamper kind (:data:`mita.meter.model.TAMPER_KINDS`) -> (event when it appears, when it clears).
#: The model clears every kind at once (the clear tamper token), so a clear logs each kind's "gone" event.
TAMPER_EVENTS: dict[str, tuple[str, str]] = {
    "cover": ("meter_cover_removed", "meter_cover_closed"),
    "magnetic": ("strong_dc_field_detected", "no_strong_dc_field_anymore"),
    "bypass": ("bypass_detected", "bypass_cleared"),
}

#: A reason the model gives for an open switch (``Meter.status()["open_reasons"]``) -> (event when it appears,
#: when it goes). A reason not listed here (a newer model's) is not logged.
OPEN_REASON_EVENTS: dict[str, tuple[str, str]] = {
    "remote disconnect": ("remote_disconnection", "remote_connection"),
    "no credit": ("supply_off_no_credit", "supply_on_credit"),
    "power limit trip": ("limiter_threshold_exceeded", "limiter_threshold_ok"),
    "tamper": ("supply_off_tamper", "supply_on_tamper_cleared"),
}

#: A row of the standard, fraud or disconnector log: (time, event code).
EventRow = tuple[dt.datetime, int]
#: A row of the token transfer log: (time, the token octet-string as entered, token_status_code).
TokenRow = tuple[dt.datetime, bytes, int]


class EventLogs:
    """The four logs of one meter, as bounded rings, and the last event code of each event log."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.events: dict[Log, deque[EventRow]] = {
            log: deque(maxlen=capacity) for log in (Log.STANDARD, Log.FRAUD, Log.DISCONNECTOR)
        }
        self.tokens: deque[TokenRow] = deque(maxlen=capacity)
        self.last_code: dict[Log, int] = dict.fromkeys(self.events, 0)

    def record(self, name: str, at: dt.datetime) -> None:
        code, log = EVENT_CODES[name]
        self.events[log].append((at, code))
        self.last_code[log] = code

    def token(self, at: dt.datetime, token: bytes, status_code: int) -> None:
        self.tokens.append((at, bytes(token), status_code))

    def rows(self, log: Log) -> list[EventRow] | list[TokenRow]:
        return list(self.tokens) if log is Log.TOKEN else list(self.events[log])


class Watcher:
    """What the logs saw of the model last: a change since is logged as the events of :data:`TAMPER_EVENTS`,
    :data:`OPEN_REASON_EVENTS` and ``limiter_threshold_changed``."""

    def __init__(self, meter: Meter, logs: EventLogs, now: dt.datetime) -> None:
        self.meter, self.logs = meter, logs
        self.tamper, self.reasons, self.mpl = self._seen(now)

    def _seen(self, now: dt.datetime) -> tuple[frozenset[str], frozenset[str], int | None]:
        state = self.meter.state
        reasons = frozenset(self.meter.status(now)["open_reasons"])
        return frozenset(state.tamper), reasons, state.mpl

    def observe(self, now: dt.datetime) -> None:
        tamper, reasons, mpl = self._seen(now)
        if mpl != self.mpl:  # first: a new limit can be what trips the switch
            self.logs.record("limiter_threshold_changed", now)
        for name in _changes(TAMPER_EVENTS, self.tamper, tamper):
            self.logs.record(name, now)
        for name in _changes(OPEN_REASON_EVENTS, self.reasons, reasons):
            self.logs.record(name, now)
        self.tamper, self.reasons, self.mpl = tamper, reasons, mpl


def _changes(table: dict[str, tuple[str, str]], before: frozenset[str], after: frozenset[str]) -> Iterator[str]:
    """The events of what appeared and what went, in the table's order (stable rows for one change)."""
    for key, (appeared, went) in table.items():
        if key in after and key not in before:
            yield appeared
        elif key in before and key not in after:
            yield went
