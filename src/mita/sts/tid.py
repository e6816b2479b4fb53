"""Token identifiers (TID) and base dates (6.3.5, SPEC.md §4.2 and §10).

A TID is the number of whole minutes from the base date to the issue time, in
24 bits. Base 1993 ran out on 2024-11-24 20:16; base 2014 runs out on
2045-11-24 20:16. The issue time and the base date are read on the same wall
clock: we take naive datetimes as they are, and an aware datetime by its own
wall-clock reading, because meters have no notion of time zones.

Do not copy the "+1 minute at 00:01" hack one public implementation uses to
pass a compliance step (the CTSA09 conflict): the encoded TID is the truth.
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum

from .errors import FormatError, TidOutOfRangeError, shown

TID_BITS = 24
TID_MAX = (1 << TID_BITS) - 1


class BaseDate(IntEnum):
    """The three base dates; the value is the year."""

    Y1993 = 1993
    Y2014 = 2014
    Y2035 = 2035

    @property
    def start(self) -> dt.datetime:
        return dt.datetime(int(self), 1, 1)

    @property
    def code(self) -> str:
        """The two-digit form DKGA04 puts in its KDF label ("93", "14", "35")."""
        return f"{int(self) % 100:02d}"

    @property
    def rollover(self) -> dt.datetime:
        """The first minute that no longer fits in 24 bits."""
        return self.start + dt.timedelta(minutes=TID_MAX + 1)

    @classmethod
    def parse(cls, value: object) -> BaseDate:
        try:
            return cls(int(str(value)[:4]))  # 1993, "2014", "2035-01-01"
        except (ValueError, TypeError):
            raise FormatError(f"base date must be 1993, 2014 or 2035 (got {shown(value)})") from None


def base_date_in_use(issued: dt.datetime) -> BaseDate:
    """The base date a token issued at ``issued`` counts from unless told otherwise: the oldest one not rolled
    over yet (1993 until 2024-11-24, then 2014 until 2045-11-24, then 2035)."""
    issued = issued.replace(tzinfo=None)
    return next((base for base in BaseDate if issued < base.rollover), BaseDate.Y2035)


#: Each base date's first minute, by year (a ``BaseDate`` finds its own: it hashes as its year).
_STARTS = {int(b): b.start for b in BaseDate}


def tid_from_datetime(issued: dt.datetime, base: BaseDate | int = BaseDate.Y1993) -> int:
    """Whole minutes from the base date to ``issued``; refused outside 24 bits."""
    start = _STARTS.get(base) if base.__class__ is int or base.__class__ is BaseDate else None
    if start is None:  # another form of a base date ("2014"), or none: parsed, or refused
        base = BaseDate.parse(base)
        start = base.start
    delta = (issued if issued.tzinfo is None else issued.replace(tzinfo=None)) - start
    minutes = (delta.days * 86400 + delta.seconds) // 60
    if not 0 <= minutes <= TID_MAX:
        raise TidOutOfRangeError(
            f"{issued:%Y-%m-%d %H:%M} is outside the TID range of base date {int(base)} "
            f"({start:%Y-%m-%d} to {BaseDate(base).rollover - dt.timedelta(minutes=1):%Y-%m-%d %H:%M})"
        )
    return minutes


def datetime_from_tid(tid: int, base: BaseDate | int = BaseDate.Y1993) -> dt.datetime:
    if not 0 <= tid <= TID_MAX:
        raise TidOutOfRangeError(f"TID {tid} does not fit in 24 bits")
    return BaseDate.parse(base).start + dt.timedelta(minutes=tid)


def parse_issue_time(text: str) -> dt.datetime:
    """``YYYY-MM-DDTHH:MM[:SS]`` as the CLI and batch interface take it."""
    try:
        value = dt.datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise FormatError(f"issue time must look like YYYY-MM-DDTHH:MM[:SS] (got {text!r})") from None
    if value.tzinfo is not None:  # meters count wall-clock minutes: an offset would be silently dropped
        raise FormatError(f"issue time is the meter's wall-clock time, without a time zone (got {text!r})")
    return value
