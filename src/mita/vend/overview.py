"""What the console's dashboard and search boxes read: the day's and month's sales, vends per hour, what waits
(open alarms, the outbox, campaigns), and meters or customers found by a few characters.

Reads only, each one query over indexed columns (sales by ``ix_vends_created``, alarms by their status index,
the outbox by its dispatch index); admin and operator only, as the API's staff routes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select

from .callers import Caller
from .errors import VendError
from .lifecycles import AlarmStatus, OutboxStatus, VendKind, VendStatus
from .schema import (
    alarms,
    audit,
    campaigns,
    customers,
    key_changes,
    meters,
    outbox,
    readings,
    supply_groups,
    tariffs,
    vends,
)

STAFF = ("admin", "operator")
FOUND = 50  # a search shows at most this many


def _hour(engine: Engine, column: Any) -> Any:
    """The hour a time falls in, as text ``YYYY-MM-DD HH`` on both databases."""
    if engine.dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


def dashboard(engine: Engine, caller: Caller, now: dt.datetime) -> dict[str, Any]:
    """The day's and month's sales (completed purchases, reversals left out), vends per hour over the last 24
    hours, open alarms by severity, the outbox's queue and dead rows, and campaigns still running."""
    caller.require(*STAFF)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    since = (now - dt.timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    sold = and_(vends.c.kind == VendKind.PURCHASE, vends.c.status == VendStatus.COMPLETED)
    hour = _hour(engine, vends.c.created_at)
    with engine.connect() as conn:
        sales = conn.execute(
            select(
                func.coalesce(func.sum(case((vends.c.created_at >= day, vends.c.amount), else_=0)), 0),
                func.count().filter(vends.c.created_at >= day),
                func.coalesce(func.sum(vends.c.amount), 0),
                func.count(),
            ).where(sold, vends.c.created_at >= month, vends.c.created_at <= now)
        ).one()
        hours: dict[str, int] = dict(
            conn.execute(
                select(hour, func.count()).where(vends.c.created_at >= since, vends.c.created_at <= now).group_by(hour)
            ).all()
        )
        open_alarms: dict[str, int] = dict(
            conn.execute(
                select(alarms.c.severity, func.count())
                .where(alarms.c.status != AlarmStatus.CLOSED)
                .group_by(alarms.c.severity)
            ).all()
        )
        queue = conn.execute(
            select(
                func.count().filter(outbox.c.status == OutboxStatus.PENDING),
                func.count().filter(outbox.c.status == OutboxStatus.DEAD),
                func.min(outbox.c.next_attempt_at).filter(outbox.c.status == OutboxStatus.PENDING),
            ).where(outbox.c.status != OutboxStatus.SENT)
        ).one()
        running = conn.execute(
            select(campaigns.c.id, campaigns.c.name, campaigns.c.status, campaigns.c.planned)
            .where(campaigns.c.status.in_(("planned", "generating", "generated")))
            .order_by(campaigns.c.id.desc())
            .limit(5)
        ).all()
        currencies = conn.execute(select(tariffs.c.currency).distinct()).scalars().all()
    per_hour = []
    for i in range(24):
        at = since + dt.timedelta(hours=i)
        per_hour.append(
            {"hour": at.strftime("%H:00"), "at": at.isoformat(), "vends": hours.get(at.strftime("%Y-%m-%d %H"), 0)}
        )
    oldest = queue[2]
    return {
        "today": {"amount": int(sales[0]), "vends": int(sales[1])},
        "month": {"amount": int(sales[2]), "vends": int(sales[3])},
        "per_hour": per_hour,
        "alarms": {s: int(open_alarms.get(s, 0)) for s in ("high", "medium", "low")},
        "outbox": {
            "pending": int(queue[0]),
            "dead": int(queue[1]),
            "waiting_s": max(0, int((now - oldest).total_seconds())) if oldest is not None else 0,
        },
        "campaigns": [dict(row._mapping) for row in running],
        "currency": currencies[0] if len(currencies) == 1 else "",  # the tariffs' one currency; none when mixed
    }


def find_meters(engine: Engine, caller: Caller, q: str = "", area: str = "") -> list[dict[str, Any]]:
    """Meters whose number starts with ``q``, or whose customer's name or account contains it; in ``area``."""
    caller.require(*STAFF)
    query = (
        select(
            meters.c.drn, meters.c.area, meters.c.status, meters.c.utility, meters.c.krn, meters.c.ea,
            meters.c.pending_key.is_not(None).label("key_change_pending"), customers.c.name.label("customer"),
            customers.c.account,
        )
        .outerjoin(customers, customers.c.id == meters.c.customer_id)
        .order_by(meters.c.drn)
        .limit(FOUND)
    )  # fmt: skip
    q = q.strip()
    if q:
        digits = q.replace(" ", "").replace("-", "")
        like = f"%{q.lower()}%"
        query = query.where(
            or_(
                meters.c.drn.startswith(digits) if digits.isdigit() else False,
                func.lower(customers.c.name).like(like),
                func.lower(customers.c.account).like(like),
            )
        )
    if area.strip():
        query = query.where(meters.c.area == area.strip())
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def areas(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [a for (a,) in conn.execute(select(meters.c.area).distinct().order_by(meters.c.area)) if a]


def find_customers(engine: Engine, caller: Caller, q: str = "") -> list[dict[str, Any]]:
    """Customers whose name, account or phone contains ``q``, with how many meters they have."""
    caller.require(*STAFF)
    count = select(func.count()).where(meters.c.customer_id == customers.c.id).scalar_subquery()
    query = select(customers, count.label("meters")).order_by(customers.c.name).limit(FOUND)
    if q.strip():
        like = f"%{q.strip().lower()}%"
        query = query.where(
            or_(
                func.lower(customers.c.name).like(like),
                func.lower(customers.c.account).like(like),
                customers.c.phone.like(like),
            )
        )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def meter_page(engine: Engine, caller: Caller, drn: str) -> dict[str, Any] | None:
    """A meter with its customer and its key changes (newest first): what the meter page shows beside its
    purchases."""
    caller.require(*STAFF)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                meters,
                customers.c.name.label("customer"),
                customers.c.account,
                customers.c.phone,
                supply_groups.c.sgc,
                tariffs.c.name.label("tariff"),
            )
            .join(supply_groups, supply_groups.c.id == meters.c.supply_group_id)
            .outerjoin(customers, customers.c.id == meters.c.customer_id)
            .outerjoin(tariffs, tariffs.c.id == meters.c.tariff_id)
            .where(meters.c.drn == drn)
        ).first()
        if row is None:
            return None
        changes = conn.execute(
            select(key_changes).where(key_changes.c.meter_id == row.id).order_by(key_changes.c.id.desc()).limit(10)
        ).all()
    out = dict(row._mapping)
    out["key_changes"] = [
        {
            "id": c.id, "status": c.status, "via": c.via, "campaign_id": c.campaign_id, "created_at": c.created_at,
            "confirmed_at": c.confirmed_at, "from_krn": (c.from_key or {}).get("krn"),
            "to_krn": (c.to_key or {}).get("krn"),
        }
        for c in changes
    ]  # fmt: skip
    return out


def consumption(engine: Engine, caller: Caller, drn: str, now: dt.datetime, days: int = 30) -> list[dict[str, Any]]:
    """A connected meter's use per day over the last ``days`` days (its register's rise within each day, Wh or
    L), from the readings the ingest keeps; empty for a keypad meter. One meter's month is a few thousand rows."""
    caller.require(*STAFF)
    since = (now - dt.timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    with engine.connect() as conn:
        rows = conn.execute(
            select(readings.c.read_at, readings.c.register)
            .join(meters, meters.c.id == readings.c.meter_id)
            .where(meters.c.drn == drn, readings.c.read_at >= since)
            .order_by(readings.c.read_at)
        ).all()
    if not rows:
        return []
    low: dict[dt.date, int] = {}
    high: dict[dt.date, int] = {}
    for at, register in rows:
        day = at.date()
        low[day] = min(low.get(day, register), register)
        high[day] = max(high.get(day, register), register)
    return [
        {"day": day.isoformat(), "at": dt.datetime.combine(day, dt.time()).isoformat(), "use": high[day] - low[day]}
        for day in sorted(low)
    ]


def audit_page(
    engine: Engine, caller: Caller, filters: dict[str, str], limit: int = 50, before: int | None = None
) -> dict[str, Any]:
    """The audit log newest first, filtered by actor, action, entity and entity id (exact) and by day (``since``,
    ``until``: ``YYYY-MM-DD``, both inclusive); ``next`` is the id to continue below."""
    caller.require(*STAFF)
    query = select(audit).order_by(audit.c.id.desc()).limit(limit + 1)
    if filters.get("actor"):  # a part of the name: "oscar" finds console:oscar
        query = query.where(func.lower(audit.c.actor).contains(filters["actor"].lower(), autoescape=True))
    for name in ("action", "entity", "entity_id"):
        if filters.get(name):
            query = query.where(audit.c[name] == filters[name])
    try:
        if filters.get("since"):
            query = query.where(audit.c.at >= dt.datetime.fromisoformat(filters["since"]))
        if filters.get("until"):
            query = query.where(audit.c.at < dt.datetime.fromisoformat(filters["until"]) + dt.timedelta(days=1))
    except ValueError:
        raise VendError("invalid_period", "a day is written YYYY-MM-DD") from None
    if before is not None:
        query = query.where(audit.c.id < before)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        actions = [a for (a,) in conn.execute(select(audit.c.action).distinct().order_by(audit.c.action))]
    page = [dict(r._mapping) for r in rows[:limit]]
    return {"items": page, "next": page[-1]["id"] if len(rows) > limit else None, "actions": actions}
