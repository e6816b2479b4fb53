"""The utility's wall clock, as the vending database stores it, and times with an offset, as clients give them.

Vends, reversals, keys and audit entries are stored without a time zone, in the utility's wall clock
(:func:`mita.vend.callers.local_now`: the server process's local time, set with ``TZ``), like the TIDs its meters
count. A time a client sends carries its offset (RFC 3339) and is turned into that wall clock before it is
compared with stored times; a stored time goes out with the offset of the utility's zone at that moment.
A "day" (the sales report's ``date``) is a wall-clock day: midnight to midnight in the utility's zone.
"""

from __future__ import annotations

import datetime as dt
import time


def wall_clock(at: dt.datetime) -> dt.datetime:
    """``at`` as the utility's wall clock, without a zone (a time without one is taken as wall clock already)."""
    if at.tzinfo is None:
        return at
    return at.astimezone().replace(tzinfo=None)


def with_offset(at: dt.datetime) -> str:
    """A stored wall-clock time in RFC 3339, with the utility's offset then (``2026-03-10T09:30:00+02:00``)."""
    if at.tzinfo is not None:
        return at.isoformat()
    return at.replace(tzinfo=_offset(at)).isoformat()


# The offset of the last second asked for, in the zone it was asked in: every vend's answer asks for its own time's,
# and ``astimezone`` works it out from the C library's local time each time (8 µs). A zone's offset changes only at
# whole seconds (whole minutes since the 1970s), so a second's is its every instant's; the zone is the process's
# (``TZ``, read again by ``time.tzset``, as tests do), named by what ``time`` says of it.
_last: tuple[object, dt.datetime, int, dt.tzinfo | None] = (None, dt.datetime.min, 0, None)


def _offset(at: dt.datetime) -> dt.tzinfo | None:
    global _last
    zone, second = (time.tzname, time.timezone, time.altzone), at.replace(microsecond=0)
    last_zone, last_second, last_fold, tz = _last
    if last_zone != zone or last_second != second or last_fold != at.fold:  # naive datetimes compare without fold
        tz = second.astimezone().tzinfo
        _last = (zone, second, at.fold, tz)
    return tz


def zone_name(at: dt.datetime) -> str:
    """The utility's zone as the system names it at ``at`` (``SAST``, ``UTC``), for reports."""
    return at.astimezone().tzname() or "local"
