"""The detection rules' input: one meter's readings over a window, on a regular grid (pure, no clock, no I/O).

:class:`MeterWindow` is what every windowed rule reads. It is built from what the ingest stores (the readings
table: ``read_at``, ``received_at``, ``register``, ``demand``, ``credit``, ``relay_closed``), by
:meth:`MeterWindow.from_rows` (rows or mappings, datetimes or epoch seconds) or :meth:`MeterWindow.from_arrays`
(NumPy arrays, as the benchmark has them). Only readings received by ``now`` count: the window is what the
head-end knew at ``now``.

The grid
    ``t`` holds each interval's end (epoch seconds, multiples of ``interval``), the last one at or before ``now``;
    a reading goes to the grid point nearest its ``read_at`` (the meter's clock; a clock off by minutes shifts
    its consumption by as much, which no rule here minds). ``consumption`` is the register's difference from the
    previous grid point, NaN where either is missing: a gap loses its consumption rather than smearing it over
    intervals (which would invent the steady flow that the leak rule looks for). ``relay_closed`` is 1.0 or 0.0,
    NaN where missing. ``read_at``/``received_at`` keep every reading as it came, for the clock rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import DetectError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

DAY = 86_400
HOUR = 3_600


class Medium(StrEnum):
    """What the meter measures (the same strings as ``mita.telemetry.obis.Medium``)."""

    ELECTRICITY = "electricity"
    WATER = "water"


class Event(NamedTuple):
    """An event the meter reported: its name (``mita.telemetry.events``) and when it happened (epoch seconds)."""

    name: str
    at: int


def epoch(value: dt.datetime | int | float) -> int:
    """Epoch seconds of a datetime (naive ones are taken as UTC, as the database's are) or a number."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    return int(value)


@dataclass(frozen=True, eq=False)
class MeterWindow:
    """One meter's readings over a window ending at or before ``now`` (see the module docstring).

    ``group`` is the peer group for the fleet comparison (e.g. ``"electricity/household"``: the medium and the
    tariff's customer category); ``utc_offset_s`` puts the meter's local day and night (for daily totals and night
    flow); ``last_received_at`` is the last reading ever received (it may be older than the window)."""

    meter_id: int | str
    medium: Medium
    group: str
    interval: int
    t: I64
    register: F64
    consumption: F64
    demand: F64
    credit: F64
    relay_closed: F64
    read_at: I64
    received_at: I64
    events: tuple[Event, ...] = ()
    utc_offset_s: int = 0
    last_received_at: int | None = None

    @property
    def now(self) -> int:
        """The end of the window's last interval."""
        return int(self.t[-1]) if len(self.t) else 0

    @property
    def per_day(self) -> int:
        return DAY // self.interval

    @classmethod
    def from_arrays(
        cls,
        meter_id: int | str,
        medium: Medium | str,
        *,
        interval: int,
        now: int,
        days: float,
        read_at: ArrayLike,
        received_at: ArrayLike,
        register: ArrayLike,
        demand: ArrayLike,
        credit: ArrayLike,
        relay_closed: ArrayLike,
        events: Iterable[Event | tuple[str, int]] = (),
        group: str | None = None,
        utc_offset_s: int = 0,
        last_received_at: int | None = None,
    ) -> MeterWindow:
        """A window of ``days`` days ending at ``now`` from one meter's readings (arrays of one length, any order;
        readings received after ``now`` are left out, as are events after it)."""
        if interval < 60 or DAY % interval:
            raise DetectError("bad_interval", f"an interval must divide a day and be a minute or more: {interval}")
        try:
            medium = Medium(medium)
        except ValueError:
            raise DetectError("bad_medium", f"unknown medium {str(medium)[:20]!r}") from None
        r_at = np.asarray(read_at, dtype=np.int64)
        r_rx = np.asarray(received_at, dtype=np.int64)
        cols = [np.asarray(a) for a in (register, demand, credit, relay_closed)]
        if any(len(a) != len(r_at) for a in (r_rx, *cols)):
            raise DetectError("bad_rows", "the readings' columns differ in length")
        end = int(now) - int(now) % interval
        n = max(int(days * DAY) // interval, 1)
        t = end - interval * np.arange(n - 1, -1, -1, dtype=np.int64)
        known = r_rx <= now
        if last_received_at is None and known.any():
            last_received_at = int(r_rx[known].max())
        idx = np.rint((r_at - t[0]) / interval).astype(np.int64)
        inside = known & (idx >= 0) & (idx < n)
        slot = idx[inside]
        values = np.stack(cols).astype(np.float64)[:, inside]
        if len(slot) > 1 and (slot[1:] < slot[:-1]).any():  # rows out of order: a later reading wins a point
            order = np.argsort(r_at[inside], kind="stable")
            slot, values = slot[order], values[:, order]
        grid = np.full((4, n), np.nan)
        grid[:, slot] = values
        reg = grid[0]
        consumption = np.full(n, np.nan)
        consumption[1:] = reg[1:] - reg[:-1]
        keep_rx = known & (r_at > t[0] - interval)
        return cls(
            meter_id=meter_id,
            medium=medium,
            group=group or f"{medium}",
            interval=interval,
            t=t,
            register=reg,
            consumption=consumption,
            demand=grid[1],
            credit=grid[2],
            relay_closed=grid[3],
            read_at=r_at[keep_rx],
            received_at=r_rx[keep_rx],
            events=tuple(sorted((Event(str(e[0]), int(e[1])) for e in events if int(e[1]) <= now), key=lambda e: e.at)),
            utc_offset_s=utc_offset_s,
            last_received_at=last_received_at,
        )

    @classmethod
    def from_rows(
        cls,
        meter_id: int | str,
        medium: Medium | str,
        rows: Iterable[Mapping[str, Any] | Sequence[Any]],
        *,
        interval: int,
        now: dt.datetime | int,
        days: float,
        events: Iterable[tuple[str, dt.datetime | int]] = (),
        group: str | None = None,
        utc_offset_s: int = 0,
        last_received_at: dt.datetime | int | None = None,
    ) -> MeterWindow:
        """A window from the readings table's rows: mappings with the columns ``read_at``, ``received_at``,
        ``register``, ``demand``, ``credit``, ``relay_closed``, or sequences in that order (datetimes or epoch
        seconds); events as (name, time)."""
        names = ("read_at", "received_at", "register", "demand", "credit", "relay_closed")
        cols: list[list[Any]] = [[] for _ in names]
        for row in rows:
            values = [row[k] for k in names] if isinstance(row, Mapping) else list(row)[: len(names)]
            if len(values) != len(names):
                raise DetectError("bad_rows", f"a reading row needs {len(names)} columns")
            for col, v in zip(cols, values, strict=True):
                col.append(v)
        return cls.from_arrays(
            meter_id,
            medium,
            interval=interval,
            now=epoch(now),
            days=days,
            read_at=[epoch(v) for v in cols[0]],
            received_at=[epoch(v) for v in cols[1]],
            register=[float(v) for v in cols[2]],
            demand=[float(v) for v in cols[3]],
            credit=[float(v) for v in cols[4]],
            relay_closed=[1.0 if v else 0.0 for v in cols[5]],
            events=[(name, epoch(at)) for name, at in events],
            group=group,
            utc_offset_s=utc_offset_s,
            last_received_at=None if last_received_at is None else epoch(last_received_at),
        )

    @cached_property
    def days(self) -> Days:
        """The window's whole local days, as rows of intervals (see :class:`Days`)."""
        return Days.of(self)


@dataclass(frozen=True, eq=False)
class Days:
    """A window's whole local days: ``start`` (epoch seconds of each local midnight), ``weekday`` (0 Monday),
    per-interval ``consumption`` and ``relay_closed`` as (days, intervals per day) arrays, and each day's
    ``total`` (the mean of the intervals present times a day's intervals; NaN under :data:`MIN_COVERAGE`)."""

    start: I64
    weekday: I64
    consumption: F64
    relay_closed: F64
    total: F64
    coverage: F64

    @staticmethod
    def of(w: MeterWindow) -> Days:
        per = w.per_day
        if len(w.t) == 0:
            empty = np.zeros((0, per))
            return Days(np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, np.zeros(0), np.zeros(0))
        first_start = int(w.t[0]) - w.interval  # the first interval's start
        local = first_start + w.utc_offset_s
        skip = (-local) % DAY // w.interval  # intervals to the first local midnight
        count = (len(w.t) - skip) // per
        if count <= 0:
            empty = np.zeros((0, per))
            return Days(np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, np.zeros(0), np.zeros(0))
        sl = slice(skip, skip + count * per)
        cons = w.consumption[sl].reshape(count, per)
        relay = w.relay_closed[sl].reshape(count, per)
        start = first_start + skip * w.interval + DAY * np.arange(count, dtype=np.int64)
        weekday = ((start + w.utc_offset_s) // DAY + 3) % 7  # 1970-01-01 was a Thursday
        present = ~np.isnan(cons)
        coverage = present.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.where(
                coverage >= MIN_COVERAGE, np.nansum(cons, axis=1) / np.maximum(present.sum(1), 1) * per, np.nan
            )
        return Days(start, weekday, cons, relay, total, coverage)


#: A day with fewer of its intervals read than this has no daily total.
MIN_COVERAGE = 0.8
