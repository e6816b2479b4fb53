"""Bodies of the alarm routes: alarms and their pages, a person's closing note, a meter's timeline and telemetry.

Like :mod:`.models`, allow-lists with every field described with its unit, and times in RFC 3339 with the
utility's offset. Telemetry quantities are the MQTT format's (``docs/telemetry.md``): energy in Wh and power in W
for electricity meters, volume in litres and flow in L/h for water meters.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, Field

from mita.vend import limits
from mita.vend.lifecycles import AlarmSeverity, AlarmStatus

from . import models as m

#: The rules that raise alarms (``mita.headend.detect``): tamper events at once, and the periodic rules.
RULES_DOC = (
    "the rule that raised it: cover, terminal_cover, magnetic, reverse_energy, bypass_reported (the meter's own "
    "events, at once); bypass, leak, silent, clock_drift (the periodic detection)"
)
Rule = Annotated[str | None, Query(max_length=40, pattern=m.PRINTABLE, description=RULES_DOC)]
StatusFilter = Annotated[
    AlarmStatus | None, Query(description="only alarms in this status: open, acknowledged or closed")
]
SeverityFilter = Annotated[AlarmSeverity | None, Query(description="only alarms of this severity: low, medium, high")]
MeterFilter = Annotated[str | None, Query(max_length=32, pattern=m.PRINTABLE, description="meter number (DRN)")]


class AlarmCloseIn(m.Body):
    model_config = m._example(note="Cover resealed on a site visit; the customer's electrician had opened it.")

    note: Annotated[str, Field(min_length=1, max_length=limits.REASON, pattern=m.PRINTABLE)] = Field(
        description="what was found and done: kept on the alarm and in the audit"
    )


class AlarmOut(BaseModel):
    """An alarm: what a rule saw on a meter, and how far a person got with it."""

    id: int = Field(description="the alarm's id", examples=[17])
    meter: str = Field(description="meter number (DRN)", examples=["47500150231"])
    rule: str = Field(description=RULES_DOC, examples=["leak"])
    severity: AlarmSeverity = Field(description="low, medium or high: what it costs the utility if it is real")
    status: AlarmStatus = Field(
        description="open (nobody on it yet), acknowledged (someone is), closed (dealt with: final; the same "
        "condition seen again opens a new alarm)"
    )
    summary: str = Field(description="what was seen, in a sentence", examples=["Meter 47500150231: water flow ..."])
    evidence: dict[str, Any] = Field(
        description="the figures the rule decided on, each key naming its unit (e.g. min_flow_l_per_h: litres per "
        "hour; offset_s: seconds; per_day: Wh or L a day; ratio: a fraction)"
    )
    occurrences: int = Field(description="how many times the condition was seen while this alarm was not closed")
    opened_at: m.Timestamp = Field(description="RFC 3339: when the condition began, as far as the data shows")
    last_seen_at: m.Timestamp = Field(description="RFC 3339: when the condition was last seen")
    acknowledged_at: m.Timestamp | None = Field(description="RFC 3339: when a person acknowledged it; null: not yet")
    acknowledged_by: str | None = Field(description="the API key's name (or system) that acknowledged it")
    closed_at: m.Timestamp | None = Field(description="RFC 3339: when a person closed it; null: not closed")
    closed_by: str | None = Field(description="the API key's name (or system) that closed it")
    note: str | None = Field(description="the note given on closing; null: none")


class AlarmPage(BaseModel):
    """A page of alarms, newest opened first."""

    items: list[AlarmOut] = Field(description="the alarms of this page, newest opened first")
    next: str | None = Field(
        description="pass as ?after= for the next (older) page, unchanged; null on the last page",
        examples=["MjAyNi0wMy0xMFQwOTozMTowMHwxNw"],
    )


class TimelineEntry(BaseModel):
    """One thing that happened at a meter, in one shape whatever its kind."""

    type: Literal["alarm", "event", "command", "vend"] = Field(
        description="alarm (raised for it), event (the meter reported it), command (the head-end sent it), vend "
        "(credit, an engineering token or a key change issued for it)"
    )
    at: m.Timestamp = Field(
        description="RFC 3339: when: an alarm's opening, an event's time at the meter, a command's queuing, a vend's "
        "sale"
    )
    id: str = Field(description="the alarm's or the command's id, the event's sequence number, the vend's UUID")
    summary: str = Field(description="what happened, in a few words")
    detail: dict[str, Any] = Field(
        description="the kind's own figures: an alarm's rule, severity, status, occurrences; an event's name and "
        "IDIS code; a command's kind, status and error; a vend's kind, status, amount (minor units of the "
        "currency) and units (token base units: 0.1 kWh or 0.1 m³); times in RFC 3339"
    )


class TimelinePage(BaseModel):
    """A page of a meter's timeline, newest first."""

    items: list[TimelineEntry] = Field(description="this page's entries, newest first")
    next: str | None = Field(
        description="pass as ?after= for the next (older) page, unchanged; null on the last page",
        examples=["MjAyNi0wMy0xMFQwOTozMTowMCswMjowMHxldmVudHwx"],
    )


class TelemetryOut(BaseModel):
    """A meter's latest reading and status, as the ingest keeps them."""

    meter: str = Field(description="meter number (DRN)", examples=["47500150231"])
    medium: Literal["electricity", "water"] | None = Field(description="what the meter measures; null: not said")
    seq: int | None = Field(description="the latest reading's sequence number (the meter's count of messages)")
    read_at: m.Timestamp | None = Field(description="RFC 3339: the latest reading's time, by the meter's clock")
    received_at: m.Timestamp | None = Field(description="RFC 3339: when the head-end received it")
    register_: int | None = Field(
        alias="register", description="the cumulative register: Wh (electricity) or L (water)"
    )  # ``register`` would shadow ``BaseModel.register`` (abc)
    demand: int | None = Field(description="demand at the reading: W (electricity) or L/h (water)")
    credit: int | None = Field(description="credit left on the meter: Wh (electricity) or L (water)")
    relay_closed: bool | None = Field(description="whether the supply was on (relay or valve closed)")
    online: bool | None = Field(description="the meter's retained status: false when its last will was published")
    status_at: m.Timestamp | None = Field(description="RFC 3339: when that status was last published")
    event_at: m.Timestamp | None = Field(description="RFC 3339: when the meter's last event happened")
