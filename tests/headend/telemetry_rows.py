"""Telemetry written straight into the tables, as the ingest would have stored it: readings on a 15-minute grid
from a load shape, each meter's latest state, events; and the monthly partitions PostgreSQL's readings need.

The load shapes are small and deterministic (a seeded random source): a household's day (night base load, a
morning and an evening peak) for electricity, a household's draws for water (none at night), and what the tests
inject on top: a collapse (bypass), a constant flow (leak), a stop (a silent meter), credit running low.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from mita.vend import registry
from mita.vend.schema import meter_events, meter_state, meters, readings

INTERVAL = 900
#: The tests' "now": a Tuesday morning, in UTC.
NOW = dt.datetime(2026, 3, 10, 10, 7, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
#: Wh per 15 minutes by hour of the day: a household's electricity.
HOUSE_WH = [40, 40, 40, 40, 40, 60, 150, 250, 200, 90, 80, 80, 100, 80, 80, 90, 120, 250, 350, 380, 300, 200, 100, 60]
#: Litres per 15 minutes by hour of the day when a draw happens (none between 23:00 and 05:00).
HOUSE_L = [0, 0, 0, 0, 0, 5, 30, 40, 20, 10, 8, 10, 12, 10, 8, 8, 10, 20, 30, 25, 15, 10, 5, 0]


def drn(n: int) -> str:
    """A valid 11-digit meter number (Luhn check digit), distinct per ``n``."""
    from mita import sts

    body = f"4750016{n:03d}"
    return body + str(sts.luhn_digit(body))


def add_meter(engine: Engine, n: int, *, utility: str = "electricity", phone: str | None = None) -> int:
    """A meter (and its customer) of the test utility, through the registry; its id."""
    admin = registry.SYSTEM
    reg = registry.Registry(engine)
    account = f"T-{n:03d}"
    reg.create_customer(admin, account=account, name=f"Customer {n}", phone=phone)
    reg.create_meter(admin, drn=drn(n), sgc="123456", customer=account, tariff="domestic", utility=utility)
    with engine.connect() as conn:
        return int(conn.execute(select(meters.c.id).where(meters.c.drn == drn(n))).scalar_one())


def make_partitions(engine: Engine, first: dt.date, months: int) -> None:
    """PostgreSQL: the readings' monthly partitions from ``first``'s month (the ingest makes them in service)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for k in range(months):
            y, m = divmod(first.month - 1 + k, 12)
            start = dt.date(first.year + y, m + 1, 1)
            y2, m2 = divmod(start.month, 12)
            end = dt.date(start.year + y2, m2 + 1, 1)
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS readings_p{start:%Y%m} PARTITION OF readings "
                              f"FOR VALUES FROM ('{start}') TO ('{end}')"))  # fmt: skip


@dataclass
class Load:
    """A meter's use per interval (Wh or L) as a function of the interval's end, and its credit."""

    use: Callable[[dt.datetime], float]
    credit: int = 10**9  # Wh or L bought to date, less the register: credit = bought - register
    register: int = 0
    relay_closed: bool = True


def house(seed: int, scale: float = 1.0) -> Callable[[dt.datetime], float]:
    rnd = random.Random(seed)
    return lambda at: HOUSE_WH[at.hour] * scale * (0.9 + 0.2 * rnd.random())


def water(seed: int) -> Callable[[dt.datetime], float]:
    rnd = random.Random(seed)
    return lambda at: HOUSE_L[at.hour] * (1 if rnd.random() < 0.5 else 0)


def rows(meter_id: int, load: Load, start: dt.datetime, end: dt.datetime, *, seq0: int = 0) -> Iterator[dict[str, Any]]:
    """Readings every interval in (start, end], received 5 s after each; ``load`` moves on as they are made."""
    at = start + dt.timedelta(seconds=INTERVAL - start.timestamp() % INTERVAL)
    seq = seq0
    while at <= end:
        used = round(load.use(at))
        used = min(used, max(load.credit, 0))
        load.register += used
        load.credit -= used
        seq += 1
        yield {
            "meter_id": meter_id, "read_at": at, "seq": seq, "received_at": at + dt.timedelta(seconds=5),
            "register": load.register, "demand": used * 4, "credit": load.credit, "relay_closed": load.relay_closed,
        }  # fmt: skip
        at += dt.timedelta(seconds=INTERVAL)


def _stored(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """UTC times as the database keeps them (SQLite without a zone)."""
    if conn.dialect.name != "sqlite":
        return row
    return {k: v.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(v, dt.datetime) else v for k, v in row.items()}


def store(engine: Engine, written: list[dict[str, Any]], medium: str = "electricity") -> None:
    """The readings, and each meter's state moved to its last one (as the ingest keeps it)."""
    if not written:
        return
    with engine.begin() as conn:
        conn.execute(insert(readings), [_stored(conn, r) for r in written])
        last: dict[int, dict[str, Any]] = {}
        for r in written:
            last[r["meter_id"]] = r
        for meter_id, r in last.items():
            state = _stored(conn, {
                "medium": medium, "seq": r["seq"], "read_at": r["read_at"], "received_at": r["received_at"],
                "register": r["register"], "demand": r["demand"], "credit": r["credit"],
                "relay_closed": r["relay_closed"], "online": True, "status_at": r["received_at"],
            })  # fmt: skip
            if conn.execute(select(meter_state.c.meter_id).where(meter_state.c.meter_id == meter_id)).first():
                conn.execute(meter_state.update().where(meter_state.c.meter_id == meter_id).values(**state))
            else:
                conn.execute(insert(meter_state).values(meter_id=meter_id, **state))


def event(engine: Engine, meter_id: int, name: str, code: int, at: dt.datetime, seq: int) -> None:
    with engine.begin() as conn:
        conn.execute(insert(meter_events).values(**_stored(conn, {
            "meter_id": meter_id, "occurred_at": at, "seq": seq, "event": name, "code": code,
            "received_at": at + dt.timedelta(seconds=3),
        })))  # fmt: skip
