"""A batch of messages as the rows it writes (pure: no database, no clock; times are Unix seconds).

The MQTT thread decodes each message as it arrives (:func:`decode`: topic and payload, through
:mod:`mita.telemetry`) into a :class:`Message`; the writer gathers a batch of them, resolves the meter numbers it
holds (:mod:`.meters`) and :func:`assemble` turns the batch into rows:

* readings, each (meter, time, seq) once: a message the broker delivered twice in the same batch adds nothing;
* each meter's latest reading of the batch, for ``meter_state`` (the database moves it forward only);
* events, once each, and each meter's latest event time;
* each meter's latest status (a last will carries no time: its receipt time stands for it);
* what was refused, by :class:`~mita.telemetry.errors.TelemetryError` code (per message: ``bad_json``,
  ``bad_field``, ``bad_event``, ``bad_version``, ``bad_topic``, ``unknown_meter``) and what was dropped (per
  reading: ``too_old``, past the retention; ``too_new``, a clock far ahead: :data:`.months.HORIZON`).

Every message, refused or not, is acknowledged once its batch committed: a message that cannot be read now never
can be, and the broker would otherwise send it again for ever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from mita.telemetry import topics
from mita.telemetry.errors import TelemetryError
from mita.telemetry.events import EVENTS
from mita.telemetry.payload import Events, Readings, Status

from .months import Window, month_of

Body = Readings | Events | Status
#: The kinds the ingest subscribes to, and how each payload is read.
DECODERS: dict[topics.Kind, type[Readings] | type[Events] | type[Status]] = {
    topics.Kind.READINGS: Readings,
    topics.Kind.EVENTS: Events,
    topics.Kind.STATUS: Status,
}
UNKNOWN_METER = "unknown_meter"


class Message(NamedTuple):
    """One MQTT message as received: its packet id and QoS (to acknowledge it), the connection it came on
    (``generation``: a packet id means nothing on a later connection), when it arrived, and what it said, or the
    code of why it could not be read."""

    mid: int
    qos: int
    generation: int
    received: int
    drn: str
    body: Body | None
    error: str | None = None


def decode(topic: str, payload: bytes) -> tuple[str, Body]:
    """(meter number, payload) of a message on one of the subscribed topics; :class:`TelemetryError` otherwise."""
    drn, kind = topics.parse(topic)
    reader = DECODERS.get(kind)
    if reader is None:
        raise TelemetryError("bad_topic", f"the ingest does not read {kind} messages")
    return drn, reader.decode(payload)


#: A reading's row, in the order of ``readings``' columns as the writers copy them: (meter id, time, seq,
#: receipt time, register, demand, credit, relay closed, reverse or None). A plain tuple: a batch makes thousands,
#: and a named tuple costs three times as much to make.
ReadingRow = tuple[int, int, int, int, int, int, int, bool, int | None]


class StateRow(NamedTuple):
    """A meter's latest reading of the batch, with its medium (``meter_state``'s columns)."""

    meter_id: int
    medium: str
    seq: int
    at: int
    received: int
    register: int
    demand: int
    credit: int
    relay: bool


class EventRow(NamedTuple):
    meter_id: int
    at: int
    seq: int
    name: str
    code: int
    received: int


class StatusRow(NamedTuple):
    meter_id: int
    online: bool
    at: int


@dataclass
class Batch:
    readings: list[ReadingRow] = field(default_factory=list)
    latest: list[StateRow] = field(default_factory=list)  # in meter order: two writers lock rows alike
    events: list[EventRow] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    event_times: list[tuple[int, int]] = field(default_factory=list)  # (meter, latest event time)
    refused: Counter[str] = field(default_factory=Counter)  # messages, by code
    dropped: Counter[str] = field(default_factory=Counter)  # readings, by reason
    repeats: int = 0  # readings or events given twice within the batch
    months: set[int] = field(default_factory=set)  # the months the readings fall in

    def __bool__(self) -> bool:
        return bool(self.readings or self.events or self.statuses)


def drns(messages: Iterable[Message]) -> set[str]:
    """The meter numbers a batch's readable messages name."""
    return {m.drn for m in messages if m.body is not None}


def assemble(messages: Iterable[Message], meter_ids: Mapping[str, int], window: Window) -> Batch:
    """The rows a batch of messages writes; ``meter_ids`` maps the known meters' numbers to their ids."""
    batch = Batch()
    rows: list[ReadingRow] = []
    add = rows.append
    seen: set[tuple[int, int, int]] = set()
    latest: dict[int, StateRow] = {}
    events: dict[tuple[int, int, int], EventRow] = {}
    statuses: dict[int, StatusRow] = {}
    event_times: dict[int, int] = {}
    oldest, newest = window.oldest, window.newest
    for message in messages:
        body = message.body
        if body is None:
            batch.refused[message.error or "bad_json"] += 1
            continue
        meter = meter_ids.get(message.drn)
        if meter is None:
            batch.refused[UNKNOWN_METER] += 1
            continue
        received = message.received
        if isinstance(body, Readings):
            newest_of_block = None
            for r in body.readings:
                at, seq = r.at, r.seq
                if at < oldest:
                    batch.dropped["too_old"] += 1
                    continue
                if at >= newest:
                    batch.dropped["too_new"] += 1
                    continue
                key = (meter, at, seq)
                if key in seen:
                    batch.repeats += 1
                    continue
                seen.add(key)
                add((meter, at, seq, received, r.register, r.demand, r.credit, r.relay, r.reverse))
                if newest_of_block is None or (at, seq) > (newest_of_block.at, newest_of_block.seq):
                    newest_of_block = r
            if newest_of_block is not None:
                r = newest_of_block
                held = latest.get(meter)
                if held is None or (r.at, r.seq) > (held.at, held.seq):
                    latest[meter] = StateRow(meter, r.medium.value, r.seq, r.at, received, r.register, r.demand,
                                             r.credit, r.relay)  # fmt: skip
        elif isinstance(body, Events):
            for e in body.events:
                key = (meter, e.at, e.seq)
                if key in events:
                    batch.repeats += 1
                    continue
                events[key] = EventRow(meter, e.at, e.seq, e.name, EVENTS[e.name][0], received)
                if e.at > event_times.get(meter, -1):
                    event_times[meter] = e.at
        else:
            at = body.at or received  # a last will is written at connect time, without a time
            held_status = statuses.get(meter)
            if held_status is None or at >= held_status.at:
                statuses[meter] = StatusRow(meter, body.online, at)
    batch.readings = rows
    batch.latest = [latest[m] for m in sorted(latest)]
    batch.events = sorted(events.values())
    batch.statuses = [statuses[m] for m in sorted(statuses)]
    batch.event_times = sorted(event_times.items())
    batch.months = {month_of(at) for at in {row[1] for row in rows}}
    return batch
