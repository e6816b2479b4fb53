"""The topic scheme, version 1: ``mita/v1/<meter number>/<kind>``.

The version is the second level, so a v2 format can run beside v1 on one broker (each worker subscribes to the
versions it reads). The meter number is one level, so a shared subscription over ``mita/v1/+/readings`` splits the
stream by message, and a broker's ACL can confine a meter to ``mita/v1/<its number>/#``.

=========  =========  ========  ========  ===================================================================
kind       direction  QoS       retained  what
=========  =========  ========  ========  ===================================================================
readings   meter ->   1         no        a block of interval readings (:class:`~mita.telemetry.payload.Readings`)
events     meter ->   1         no        events in the order they happened (:class:`~.payload.Events`)
status     meter ->   1         yes       online or offline; the last will sets offline (:class:`~.payload.Status`)
ack        meter ->   1         no        a command's outcome, with its correlation id (:class:`~.payload.Ack`)
cmd        -> meter   1         no        a command, correlation data, a message expiry (:class:`~.payload.Command`)
=========  =========  ========  ========  ===================================================================
"""

from __future__ import annotations

from enum import StrEnum

from .errors import TelemetryError

ROOT = "mita"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}/"


class Kind(StrEnum):
    READINGS = "readings"
    EVENTS = "events"
    STATUS = "status"
    ACK = "ack"
    CMD = "cmd"


#: What a meter publishes: the ingest's subscriptions.
FROM_METERS = (Kind.READINGS, Kind.EVENTS, Kind.STATUS, Kind.ACK)

#: Every meter number Mita issues is 11 or 13 digits (IEC 62055-41 DRN); a topic with anything else is refused.
_DRN_LENGTHS = (11, 13)


def topic(drn: str, kind: Kind) -> str:
    return f"{PREFIX}{drn}/{kind}"


def subscription(kind: Kind, group: str | None = None) -> str:
    """Every meter's ``kind`` topic; with ``group``, the MQTT v5 shared subscription of that group, so the
    broker hands each message to one member (workers on many machines, no coordinator)."""
    plain = f"{PREFIX}+/{kind}"
    return f"$share/{group}/{plain}" if group else plain


def parse(name: str) -> tuple[str, Kind]:
    """(meter number, kind) of a topic, or :class:`TelemetryError` ``bad_topic``."""
    if not name.startswith(PREFIX):
        raise TelemetryError("bad_topic", f"not a {ROOT}/{VERSION} topic: {name[:80]!r}")
    drn, _, kind = name[len(PREFIX) :].partition("/")
    if len(drn) not in _DRN_LENGTHS or not drn.isdigit() or not drn.isascii():
        raise TelemetryError("bad_topic", f"not a meter number in topic: {name[:80]!r}")
    try:
        return drn, Kind(kind)
    except ValueError:
        raise TelemetryError("bad_topic", f"unknown kind in topic: {name[:80]!r}") from None
