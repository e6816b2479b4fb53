"""The messages of ``mita/v1``, as value types with symmetric ``encode``/``decode`` (JSON, UTF-8).

Every message carries ``"v": 1``. Times are Unix seconds (UTC, integers): what a meter's clock says for
readings and events (so a drifting clock shows against the broker's receipt time), the head-end's for commands.

Every reading and event carries ``seq``, from one counter per meter that only goes up: the head-end keeps each
(meter, seq, time) once, so a message the broker delivers twice (QoS 1), or a meter sends again because it saw
no PUBACK, is stored once. The time is part of the key so that a meter whose counter restarts (a firmware reset)
is not mistaken for a repeat.

A readings message is a block: one meter's intervals in time order (a meter pushing every interval sends one; one
pushing its load profile every hour sends four of 15 minutes).

``decode`` refuses anything else with :class:`~mita.telemetry.errors.TelemetryError` (``bad_json``,
``bad_version``, ``bad_field``, ``bad_event``), naming the field and never echoing more than a short excerpt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from . import obis
from .errors import TelemetryError
from .events import EVENTS
from .obis import Medium

VERSION = 1
#: The largest message the ingest takes (a day's load profile of 96 readings is ~12 KB).
MAX_BYTES = 256 * 1024
_MAX_SEQ = 2**63 - 1
_MAX_TIME = 2**37  # year 6325: a time past it is a broken clock, not a reading
_MAX_VALUE = 2**62


class Reading(NamedTuple):
    """One interval's end, as the meter saw it. ``register``/``reverse``/``credit`` in the medium's unit
    (Wh or L), ``demand`` in W or L/h (:mod:`mita.telemetry.obis`); ``relay`` true when the supply is on."""

    seq: int
    at: int
    medium: Medium
    register: int
    demand: int
    credit: int
    relay: bool
    reverse: int | None = None

    def to_json(self) -> dict[str, Any]:
        register, demand, _, _ = obis.CODES[self.medium]
        out: dict[str, Any] = {
            "seq": self.seq,
            "t": self.at,
            register: self.register,
            demand: self.demand,
            obis.CREDIT: self.credit,
            obis.RELAY: self.relay,
        }
        if self.reverse is not None:
            out[obis.ENERGY_EXPORT] = self.reverse
        return out

    @classmethod
    def from_json(cls, item: Any) -> Reading:
        if not isinstance(item, dict):
            raise TelemetryError("bad_field", "a reading is an object")
        if obis.ENERGY_IMPORT in item:
            medium = Medium.ELECTRICITY
        elif obis.WATER_VOLUME in item:
            medium = Medium.WATER
        else:
            raise TelemetryError("bad_field", f"a reading has {obis.ENERGY_IMPORT} or {obis.WATER_VOLUME}")
        register, demand, _, _ = obis.CODES[medium]
        reverse = item.get(obis.ENERGY_EXPORT)
        relay = item.get(obis.RELAY)
        if type(relay) is not bool:
            raise TelemetryError("bad_field", f"{obis.RELAY} (relay) is true or false")
        return cls(
            _int(item, "seq", 0, _MAX_SEQ),
            _int(item, "t", 0, _MAX_TIME),
            medium,
            _int(item, register, 0, _MAX_VALUE),
            _int(item, demand, 0, _MAX_VALUE),
            _int(item, obis.CREDIT, -_MAX_VALUE, _MAX_VALUE),
            relay,
            None if reverse is None else _int(item, obis.ENERGY_EXPORT, 0, _MAX_VALUE),
        )


class Readings(NamedTuple):
    """A block of one meter's readings (``interval`` seconds apart, the meter's integration period)."""

    interval: int
    readings: tuple[Reading, ...]

    def encode(self) -> bytes:
        body = {"v": VERSION, "interval": self.interval, "readings": [r.to_json() for r in self.readings]}
        return _dump(body)

    @classmethod
    def decode(cls, data: bytes) -> Readings:
        body = _load(data)
        items = body.get("readings")
        if not isinstance(items, list) or not items:
            raise TelemetryError("bad_field", "readings is a non-empty list")
        return cls(_int(body, "interval", 1, 86_400), tuple(Reading.from_json(item) for item in items))


class Event(NamedTuple):
    """Something the meter saw at ``at`` (its clock): a name from :data:`mita.telemetry.events.EVENTS`."""

    seq: int
    at: int
    name: str

    @property
    def code(self) -> int:
        return EVENTS[self.name][0]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "t": self.at, "event": self.name, "code": self.code}

    @classmethod
    def from_json(cls, item: Any) -> Event:
        if not isinstance(item, dict):
            raise TelemetryError("bad_field", "an event is an object")
        name = item.get("event")
        if not isinstance(name, str) or name not in EVENTS:
            raise TelemetryError("bad_event", f"unknown event {str(name)[:40]!r}")
        return cls(_int(item, "seq", 0, _MAX_SEQ), _int(item, "t", 0, _MAX_TIME), name)


class Events(NamedTuple):
    events: tuple[Event, ...]

    def encode(self) -> bytes:
        return _dump({"v": VERSION, "events": [e.to_json() for e in self.events]})

    @classmethod
    def decode(cls, data: bytes) -> Events:
        items = _load(data).get("events")
        if not isinstance(items, list) or not items:
            raise TelemetryError("bad_field", "events is a non-empty list")
        return cls(tuple(Event.from_json(item) for item in items))


class Status(NamedTuple):
    """The retained status. ``at`` is when the meter said it (0 in a last will, which is written at connect time
    and sent by the broker later). ``medium`` and ``profile`` say what the meter is, for an operator reading the
    broker."""

    online: bool
    at: int = 0
    medium: Medium | None = None
    profile: str | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": VERSION, "online": self.online, "t": self.at}
        if self.medium is not None:
            body["medium"] = self.medium.value
        if self.profile is not None:
            body["profile"] = self.profile
        return _dump(body)

    @classmethod
    def decode(cls, data: bytes) -> Status:
        body = _load(data)
        online = body.get("online")
        if type(online) is not bool:
            raise TelemetryError("bad_field", "online is true or false")
        medium, profile = body.get("medium"), body.get("profile")
        if medium is not None and (not isinstance(medium, str) or medium not in set(Medium)):  # a list: unhashable
            raise TelemetryError("bad_field", "medium is electricity or water")
        if profile is not None and (not isinstance(profile, str) or len(profile) > 40):
            raise TelemetryError("bad_field", "profile is a short text")
        return cls(online, _int(body, "t", 0, _MAX_TIME), None if medium is None else Medium(medium), profile)


class Command(NamedTuple):
    """A command to an MQTT-native meter: ``id`` is the head-end's command id, also sent as the MQTT v5
    correlation data (the payload carries it too, for brokers and meters on MQTT 3.1.1). ``expires`` (Unix
    seconds) is when the meter must no longer act on it; the message's expiry interval says the same to the
    broker."""

    id: int
    kind: str
    params: Mapping[str, Any]
    expires: int

    def encode(self) -> bytes:
        body = {"v": VERSION, "id": self.id, "kind": self.kind, "params": dict(self.params), "expires": self.expires}
        return _dump(body)

    @classmethod
    def decode(cls, data: bytes) -> Command:
        body = _load(data)
        kind, params = body.get("kind"), body.get("params")
        if not isinstance(kind, str) or not kind or len(kind) > 40:
            raise TelemetryError("bad_field", "kind is a short text")
        if not isinstance(params, dict):
            raise TelemetryError("bad_field", "params is an object")
        return cls(_int(body, "id", 1, _MAX_SEQ), kind, params, _int(body, "expires", 0, _MAX_TIME))


class Ack(NamedTuple):
    """A command's outcome: ``ok`` with the meter's ``result`` (token statuses, readings), or a short ``error``
    code the meter gives (``expired``, ``unsupported``, a token's rejection...)."""

    id: int
    ok: bool
    result: Mapping[str, Any] | None = None
    error: str | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": VERSION, "id": self.id, "ok": self.ok}
        if self.result is not None:
            body["result"] = dict(self.result)
        if self.error is not None:
            body["error"] = self.error
        return _dump(body)

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        body = _load(data)
        ok, result, error = body.get("ok"), body.get("result"), body.get("error")
        if type(ok) is not bool:
            raise TelemetryError("bad_field", "ok is true or false")
        if result is not None and not isinstance(result, dict):
            raise TelemetryError("bad_field", "result is an object")
        if error is not None and (not isinstance(error, str) or len(error) > 200):
            raise TelemetryError("bad_field", "error is a short text")
        return cls(_int(body, "id", 1, _MAX_SEQ), ok, result, error)


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _load(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_BYTES:
        raise TelemetryError("bad_json", f"a message is at most {MAX_BYTES} bytes (got {len(data)})")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TelemetryError("bad_json", f"not JSON: {bytes(data[:40])!r}") from None
    if not isinstance(body, dict):
        raise TelemetryError("bad_json", "a message is a JSON object")
    if body.get("v") != VERSION:
        raise TelemetryError("bad_version", f"version {str(body.get('v'))[:10]!r}, this reader knows {VERSION}")
    return body


def _int(body: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if type(value) is not int or not low <= value <= high:
        raise TelemetryError("bad_field", f"{key} is an integer from {low} to {high}")
    return value
