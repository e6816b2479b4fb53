"""Month arithmetic for the readings' partitions and their retention (pure: times are Unix seconds, UTC).

A month is an integer index, ``year * 12 + month - 1``, so that "the next two months" and "24 months back" are
additions. ``readings`` is partitioned by month of ``read_at`` in UTC: the partition of month ``m`` is
``readings_pYYYYMM`` and holds ``[start(m), start(m + 1))``.
"""

from __future__ import annotations

import calendar
import time
from typing import NamedTuple

#: Months made ahead of the current one at start and at each day's upkeep (this month and the next two).
AHEAD = 2
#: The latest month a reading may fall in, past the current one: a meter whose clock says it is more than this
#: far ahead is broken, and its readings are dropped (counted ``too_new``) rather than given a partition each.
HORIZON = 12


def month_of(epoch: int) -> int:
    """The month index of a Unix time (UTC)."""
    tm = time.gmtime(epoch)
    return tm.tm_year * 12 + tm.tm_mon - 1


def start(month: int) -> int:
    """The Unix time a month starts (its first day, 00:00 UTC)."""
    year, index = divmod(month, 12)
    return calendar.timegm((year, index + 1, 1, 0, 0, 0, 0, 0, 0))


def name(month: int) -> str:
    """``readings_pYYYYMM``: the partition's table name (``mita.vend.schema.READINGS_PARTITION``)."""
    year, index = divmod(month, 12)
    return f"readings_p{year:04d}{index + 1:02d}"


def parse_name(table: str) -> int | None:
    """The month of a partition's name, or None for any other table."""
    digits = table.removeprefix("readings_p")
    if len(digits) != 6 or not digits.isdigit() or digits == table:
        return None
    year, mon = int(digits[:4]), int(digits[4:])
    return year * 12 + mon - 1 if 1 <= mon <= 12 else None


class Window(NamedTuple):
    """The months readings are kept for, as of one moment: ``first`` (the oldest kept: ``retention`` months before
    the current one) to ``last`` (:data:`HORIZON` months after it), both included, and in Unix seconds
    ``[oldest, newest)``."""

    first: int
    last: int
    current: int

    @classmethod
    def at(cls, now: int, retention_months: int) -> Window:
        current = month_of(now)
        return cls(current - retention_months, current + HORIZON, current)

    @property
    def oldest(self) -> int:
        return start(self.first)

    @property
    def newest(self) -> int:
        return start(self.last + 1)

    def ahead(self) -> range:
        """The months made at start and daily: this one and the next :data:`AHEAD`."""
        return range(self.current, self.current + AHEAD + 1)
