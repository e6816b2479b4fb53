"""Alarms: what the detection and the ingest raise for a person to look at, and that person's moves.

An alarm is a row of ``alarms`` with a lifecycle (``mita.vend.lifecycles.ALARM``: open -> acknowledged -> closed,
or open -> closed). At most one alarm per (meter, rule) is not closed (the partial unique index
``uq_alarms_meter_rule_open``), so :func:`raise_alarms` is one upsert per batch: a condition seen for the first
time opens an alarm; seen again while its alarm is open or acknowledged, it counts an occurrence and moves
``last_seen_at`` (the person already looking at it is not asked twice); seen again after a person closed it, it
opens a new alarm (closing says "dealt with", so a recurrence is news).

Acknowledging and closing are operator actions: the lifecycle's check first (a refused move is a typed 409 error:
``alarm_closed``, ``already_acknowledged``), then the change and its audit entry in one transaction, the row
locked (``FOR UPDATE`` on PostgreSQL) so that two people closing the same alarm cannot both succeed.

Times: ``opened_at`` and ``last_seen_at`` are the utility's wall clock like the rest of the vending schema's
(:mod:`mita.vend.walltime`); a meter's own times (``meter_events``, ``meter_state``) are UTC. The timeline merges
both kinds, as aware times, newest first.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Select, case, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from mita import sts
from mita.vend.audit import write_audit
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.lifecycles import ALARM, AlarmSeverity, AlarmStatus
from mita.vend.schema import alarms, meters
from mita.vend.walltime import wall_clock

MAX_PAGE = 500
#: The alarms table's text sizes (``mita.vend.schema.alarms``).
RULE_MAX, SUMMARY_MAX = 40, 200
#: Severities in rising order: a repeat never lowers an alarm's severity.
_RANK = {AlarmSeverity.LOW.value: 0, AlarmSeverity.MEDIUM.value: 1, AlarmSeverity.HIGH.value: 2}


class Raised(NamedTuple):
    """A condition a rule saw on a meter: ``at`` is when (aware, or the utility's wall clock when naive);
    ``evidence`` the figures it decided on (small JSON values)."""

    meter_id: int
    rule: str
    severity: AlarmSeverity
    summary: str
    evidence: Mapping[str, Any]
    at: dt.datetime


# ---------------------------------------------------------------------- raising


def _upsert(conn: Connection) -> Any:
    """``INSERT ... ON CONFLICT (meter_id, rule) WHERE status <> 'closed' DO UPDATE``: both dialects infer the
    partial unique index from the same columns and predicate."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(alarms)
    new = stmt.excluded
    rank_old = case(_RANK, value=alarms.c.severity, else_=0)
    rank_new = case(_RANK, value=new.severity, else_=0)
    return stmt.on_conflict_do_update(
        index_elements=[alarms.c.meter_id, alarms.c.rule],
        index_where=text("status <> 'closed'"),
        set_={
            "occurrences": alarms.c.occurrences + new.occurrences,
            "last_seen_at": case(
                (new.last_seen_at > alarms.c.last_seen_at, new.last_seen_at), else_=alarms.c.last_seen_at
            ),
            # the latest figures describe the condition as it is now
            "summary": new.summary,
            "evidence": new.evidence,
            "severity": case((rank_new > rank_old, new.severity), else_=alarms.c.severity),
        },
    ).returning(alarms.c.occurrences, sort_by_parameter_order=True)


def _merged(items: Iterable[Raised], now: dt.datetime) -> list[dict[str, Any]]:
    """One row per (meter, rule): an upsert may touch a row once per statement (PostgreSQL refuses more)."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for item in items:
        if not item.rule or len(item.rule) > RULE_MAX:
            raise VendError("invalid_request", f"an alarm's rule is text of 1 to {RULE_MAX} characters")
        severity = AlarmSeverity(item.severity).value
        at = min(wall_clock(item.at), now)  # a meter's clock ahead of ours does not open an alarm in the future
        key = (int(item.meter_id), item.rule)
        row = rows.get(key)
        if row is None:
            rows[key] = {
                "meter_id": key[0], "rule": item.rule, "severity": severity, "status": AlarmStatus.OPEN.value,
                "summary": item.summary[:SUMMARY_MAX], "evidence": dict(item.evidence), "occurrences": 1,
                "opened_at": at, "last_seen_at": at,
            }  # fmt: skip
            continue
        row["occurrences"] += 1
        row["opened_at"] = min(row["opened_at"], at)
        if at >= row["last_seen_at"]:
            row.update(last_seen_at=at, summary=item.summary[:SUMMARY_MAX], evidence=dict(item.evidence))
        if _RANK[severity] > _RANK[row["severity"]]:
            row["severity"] = severity
    return list(rows.values())


def raise_alarms(conn: Connection, items: Iterable[Raised], now: dt.datetime) -> int:
    """Raise alarms in the caller's transaction, one statement for the batch; how many alarms were opened (the
    rest were repeats of alarms open or acknowledged already). ``now``: the utility's wall clock (or aware)."""
    rows = _merged(items, wall_clock(now))
    if not rows:
        return 0
    counts = conn.execute(_upsert(conn), rows).scalars().all()
    # an update adds to an existing count: only a new row holds exactly the batch's own
    return sum(total == row["occurrences"] for total, row in zip(counts, rows, strict=True))


# ---------------------------------------------------------------------- reading


def _drn_of(conn: Connection, drn: str) -> int | None:
    found = conn.execute(select(meters.c.id).where(meters.c.drn == drn)).scalar()
    return None if found is None else int(found)


_SELECT = select(alarms, meters.c.drn).join(meters, meters.c.id == alarms.c.meter_id)


def _shown(row: Any) -> dict[str, Any]:
    """An alarm as the API and the CLI's ``--json`` show it (times as datetimes: the shells write them)."""
    return {
        "id": row.id,
        "meter": row.drn,
        "rule": row.rule,
        "severity": row.severity,
        "status": row.status,
        "summary": row.summary,
        "evidence": dict(row.evidence or {}),
        "occurrences": row.occurrences,
        "opened_at": row.opened_at,
        "last_seen_at": row.last_seen_at,
        "acknowledged_at": row.acknowledged_at,
        "acknowledged_by": row.acknowledged_by,
        "closed_at": row.closed_at,
        "closed_by": row.closed_by,
        "note": row.note,
    }


def get(engine: Engine, caller: Caller, alarm_id: int) -> dict[str, Any]:
    """One alarm (admin, operator)."""
    caller.require("admin", "operator")
    with engine.connect() as conn:
        row = conn.execute(_SELECT.where(alarms.c.id == alarm_id)).first()
    if row is None:
        raise VendError("not_found", f"no alarm {alarm_id}")
    return _shown(row)


@dataclass(frozen=True)
class AlarmFilter:
    """What to list; ``None`` does not filter. ``since`` (inclusive) and ``until`` (exclusive) bound
    ``opened_at``; aware times are moved to the utility's wall clock."""

    status: str | None = None
    meter: str | None = None  # a meter number (DRN)
    rule: str | None = None
    severity: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def encode_cursor(at: dt.datetime, alarm_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{alarm_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """The (opened_at, id) a cursor points after; a cursor this module did not make is ``invalid_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, alarm_id = raw.split("|", 1)
        return dt.datetime.fromisoformat(at), int(alarm_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise VendError("invalid_cursor", "after= takes the next cursor of the previous page, unchanged") from None


def _check(f: AlarmFilter) -> None:
    if f.status is not None and f.status not in tuple(AlarmStatus):
        raise VendError("invalid_status", f"status is one of {', '.join(AlarmStatus)}")
    if f.severity is not None and f.severity not in tuple(AlarmSeverity):
        raise VendError("invalid_severity", f"severity is one of {', '.join(AlarmSeverity)}")
    if f.since is not None and f.until is not None and wall_clock(f.since) >= wall_clock(f.until):
        raise VendError("invalid_period", "since must be before until")


def _filtered(conn: Connection, f: AlarmFilter) -> Select[Any] | None:
    """The filtered query, or None when the filter names a meter that does not exist."""
    q = _SELECT
    if f.meter is not None:
        meter_id = _drn_of(conn, sts.MeterNumber.parse(f.meter).drn)
        if meter_id is None:
            return None
        q = q.where(alarms.c.meter_id == meter_id)
    if f.status is not None:
        q = q.where(alarms.c.status == f.status)
    if f.rule is not None:
        q = q.where(alarms.c.rule == f.rule)
    if f.severity is not None:
        q = q.where(alarms.c.severity == f.severity)
    if f.since is not None:
        q = q.where(alarms.c.opened_at >= wall_clock(f.since))
    if f.until is not None:
        q = q.where(alarms.c.opened_at < wall_clock(f.until))
    return q


def list_alarms(
    engine: Engine, caller: Caller, f: AlarmFilter = AlarmFilter(), limit: int = 50, after: str | None = None
) -> dict[str, Any]:
    """A page of alarms, newest opened first (admin, operator); ``next`` is the following page's cursor (None on
    the last). Keyset pages over (``opened_at``, ``id``): no alarm repeated or skipped while new ones open."""
    caller.require("admin", "operator")
    _check(f)
    limit = max(1, min(limit, MAX_PAGE))
    with engine.connect() as conn:
        q = _filtered(conn, f)
        if q is None:
            return {"items": [], "next": None}
        if after is not None:
            at, alarm_id = decode_cursor(after)
            q = q.where(alarms.c.opened_at <= at, or_(alarms.c.opened_at < at, alarms.c.id < alarm_id))
        rows = conn.execute(q.order_by(alarms.c.opened_at.desc(), alarms.c.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    last = page[-1] if page else None
    more = last is not None and len(rows) > limit
    return {"items": [_shown(r) for r in page], "next": encode_cursor(last.opened_at, last.id) if more else None}


# ---------------------------------------------------------------------- a person's moves


def _move(
    engine: Engine, caller: Caller, alarm_id: int, to: AlarmStatus, at: dt.datetime, note: str | None
) -> dict[str, Any]:
    caller.require("admin", "operator")
    at = wall_clock(at)
    with engine.begin() as conn:
        locked = select(alarms.c.status).where(alarms.c.id == alarm_id)
        if conn.dialect.name == "postgresql":
            locked = locked.with_for_update()
        current = conn.execute(locked).scalar()
        if current is None:
            raise VendError("not_found", f"no alarm {alarm_id}")
        if current == AlarmStatus.CLOSED:
            raise VendError("alarm_closed", f"alarm {alarm_id} is closed (a recurrence opens a new alarm)")
        if current == to:
            raise VendError("already_acknowledged", f"alarm {alarm_id} is acknowledged already")
        ALARM.check(current, to)
        if to is AlarmStatus.ACKNOWLEDGED:
            values: dict[str, Any] = {"acknowledged_at": at, "acknowledged_by": caller.name}
        else:
            values = {"closed_at": at, "closed_by": caller.name}
        if note is not None:
            values["note"] = note
        # the status it was read in: a move that raced another's changes nothing (SQLite: BEGIN serialises)
        done = conn.execute(
            alarms.update().where(alarms.c.id == alarm_id, alarms.c.status == current).values(status=to.value, **values)
        ).rowcount
        if done != 1:
            raise VendError("conflict", f"alarm {alarm_id} changed meanwhile; read it again")
        action = "alarm_acknowledged" if to is AlarmStatus.ACKNOWLEDGED else "alarm_closed"
        detail = {"from": current, "note": note} if note is not None else {"from": current}
        write_audit(conn, caller, at, action, "alarm", alarm_id, **detail)
        row = conn.execute(_SELECT.where(alarms.c.id == alarm_id)).one()
    return _shown(row)


def acknowledge(
    engine: Engine, caller: Caller, alarm_id: int, *, at: dt.datetime, note: str | None = None
) -> dict[str, Any]:
    """Someone is on it (admin, operator): open -> acknowledged; repeats keep counting. Audited."""
    return _move(engine, caller, alarm_id, AlarmStatus.ACKNOWLEDGED, at, note)


def close(engine: Engine, caller: Caller, alarm_id: int, *, at: dt.datetime, note: str | None = None) -> dict[str, Any]:
    """Dealt with (admin, operator): open or acknowledged -> closed, with the person's note; the same condition
    seen again opens a new alarm. Audited."""
    return _move(engine, caller, alarm_id, AlarmStatus.CLOSED, at, note)
