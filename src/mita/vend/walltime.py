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
    global _last
    if at.tzinfo is not None:
        return at.isoformat()
    # the second (and fold) of the wall clock, in the zone the process is in (TZ, read again by time.tzset)
    key = (at.year, at.month, at.day, at.hour, at.minute, at.second, at.fold, time.tzname, time.timezone, time.altzone)
    last, suffix = _last
    if key != last:
        second = at.replace(microsecond=0)
        suffix = second.astimezone().isoformat()[len(second.isoformat()) :]  # "+02:00"
        _last = (key, suffix)
    return at.isoformat() + suffix


# The offset of the last second asked for, as text, with the zone it was asked in: every vend's answer asks for its
# own time's, and ``astimezone`` works it out from the C library's local time each time (twice this function's
# time). A zone's offset changes only at whole seconds (whole minutes since the 1970s): a second's is its every
# instant's. One tuple, so that a thread never reads one second's key with another's offset.
_last: tuple[tuple[object, ...], str] = ((), "")


def zone_name(at: dt.datetime) -> str:
    """The utility's zone as the system names it at ``at`` (``SAST``, ``UTC``), for reports."""
    return at.astimezone().tzname() or "local"
