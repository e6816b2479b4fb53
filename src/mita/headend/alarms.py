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

from sqlalchemy import Connection, Engine, Select, and_, case, false, or_, select, text, true
from sqlalchemy.dialects import postgresql, sqlite

from mita import sts
from mita.vend import listings
from mita.vend.audit import write_audit
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.lifecycles import ALARM, AlarmSeverity, AlarmStatus
from mita.vend.schema import alarms, meter_commands, meter_events, meter_state, meters, vends
from mita.vend.walltime import wall_clock

MAX_PAGE = 500
#: The alarms table's text sizes (``mita.vend.schema.alarms``).
RULE_MAX, SUMMARY_MAX = 40, 200
#: Severities in rising order: a repeat never lowers an alarm's severity.
_RANK = {AlarmSeverity.LOW.value: 0, AlarmSeverity.MEDIUM.value: 1, AlarmSeverity.HIGH.value: 2}


class Raised(NamedTuple):
    """A condition a rule saw on a meter: ``at`` is when it began (aware, or the utility's wall clock when naive),
    ``seen_at`` when it was seen (default ``at``: an event is both; a periodic rule sees an old condition again);
    ``evidence`` the figures it decided on (small JSON values)."""

    meter_id: int
    rule: str
    severity: AlarmSeverity
    summary: str
    evidence: Mapping[str, Any]
    at: dt.datetime
    seen_at: dt.datetime | None = None


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
        seen = at if item.seen_at is None else max(min(wall_clock(item.seen_at), now), at)
        key = (int(item.meter_id), item.rule)
        row = rows.get(key)
        if row is None:
            rows[key] = {
                "meter_id": key[0], "rule": item.rule, "severity": severity, "status": AlarmStatus.OPEN.value,
                "summary": item.summary[:SUMMARY_MAX], "evidence": dict(item.evidence), "occurrences": 1,
                "opened_at": at, "last_seen_at": seen,
            }  # fmt: skip
            continue
        row["occurrences"] += 1
        row["opened_at"] = min(row["opened_at"], at)
        if seen >= row["last_seen_at"]:
            row.update(last_seen_at=seen, summary=item.summary[:SUMMARY_MAX], evidence=dict(item.evidence))
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
            at, alarm_id = listings.decode_id_cursor(after)
            q = q.where(alarms.c.opened_at <= at, or_(alarms.c.opened_at < at, alarms.c.id < alarm_id))
        rows = conn.execute(q.order_by(alarms.c.opened_at.desc(), alarms.c.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    nxt = listings.encode_cursor(page[-1].opened_at, page[-1].id) if page and len(rows) > limit else None
    return {"items": [_shown(r) for r in page], "next": nxt}


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


# ---------------------------------------------------------------------- a meter's timeline and telemetry

#: The timeline's kinds of entry, in the order entries of the same time are listed.
TIMELINE_TYPES = ("alarm", "event", "command", "vend")


def _utc(at: dt.datetime) -> dt.datetime:
    """A stored meter time (UTC: SQLite gives it back without a zone) as an aware time."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


def _local(at: dt.datetime | None, *, utc: bool = False) -> dt.datetime | None:
    """A stored time as an aware time in the utility's zone (wall-clock columns, or UTC ones with ``utc``)."""
    if at is None:
        return None
    return (_utc(at) if utc else at).astimezone()


def _text(at: dt.datetime | None, *, utc: bool = False) -> str | None:
    """A time inside an entry's ``detail`` as the API writes times (RFC 3339 with the utility's offset)."""
    local = _local(at, utc=utc)
    return None if local is None else local.isoformat()


def _timeline_cursor(at: dt.datetime, kind: str, key: object) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{kind}|{key}".encode()).decode().rstrip("=")


def _timeline_after(cursor: str) -> tuple[dt.datetime, int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, kind, key = raw.split("|", 2)
        when = dt.datetime.fromisoformat(at)
        if when.tzinfo is None or kind not in TIMELINE_TYPES:
            raise ValueError(kind)
        return when, TIMELINE_TYPES.index(kind), key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise VendError("invalid_cursor", "after= takes the next cursor of the previous page, unchanged") from None


def _entries(conn: Connection, meter_id: int, after: tuple[dt.datetime, int, str] | None, n: int) -> list[Any]:
    """Each source's newest ``n`` entries after the cursor, as (aware time, rank, key, entry)."""
    utc_columns = conn.dialect.name != "sqlite"  # SQLite keeps UTC times without their zone
    sources: list[tuple[str, Any, Any, bool, Select[Any]]] = [
        ("alarm", alarms.c.opened_at, alarms.c.id, False, select(alarms).where(alarms.c.meter_id == meter_id)),
        ("event", meter_events.c.occurred_at, meter_events.c.seq, True,
         select(meter_events).where(meter_events.c.meter_id == meter_id)),
        ("command", meter_commands.c.created_at, meter_commands.c.id, False,
         select(meter_commands).where(meter_commands.c.meter_id == meter_id)),
        ("vend", vends.c.created_at, vends.c.id, False,
         select(vends.c.id, vends.c.kind, vends.c.status, vends.c.amount, vends.c.units, vends.c.created_at)
         .where(vends.c.meter_id == meter_id)),  # not the receipt: the vend's own page shows it
    ]  # fmt: skip
    out: list[Any] = []
    for rank, (kind, when, key, utc, q) in enumerate(sources):
        if after is not None:
            at, rank_c, key_c = after
            t = at.astimezone(dt.UTC) if utc else wall_clock(at)
            if utc and not utc_columns:
                t = t.replace(tzinfo=None)
            native: Any = key_c if kind == "vend" else _int_key(key_c)
            tie = true() if rank > rank_c else (key < native if rank == rank_c else false())
            q = q.where(when <= t, or_(when < t, and_(when == t, tie)))
        for row in conn.execute(q.order_by(when.desc(), key.desc()).limit(n)):
            at_row = _local(getattr(row, when.name), utc=utc)
            assert at_row is not None
            out.append((at_row, rank, getattr(row, key.name), _entry(kind, at_row, row)))
    return out


def _int_key(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise VendError("invalid_cursor", "after= takes the next cursor of the previous page, unchanged") from None


def _entry(kind: str, at: dt.datetime, row: Any) -> dict[str, Any]:
    """One shape for every kind: what happened, when, in a sentence, and the kind's own figures."""
    if kind == "alarm":
        summary = f"{row.severity} alarm {row.rule}: {row.summary}"
        detail = {"alarm_id": row.id, "rule": row.rule, "severity": row.severity, "status": row.status,
                  "occurrences": row.occurrences, "last_seen_at": _text(row.last_seen_at)}  # fmt: skip
        ref = str(row.id)
    elif kind == "event":
        summary = f"the meter reported {row.event.replace('_', ' ')}"
        detail = {
            "event": row.event,
            "code": row.code,
            "seq": row.seq,
            "received_at": _text(row.received_at, utc=True),
        }
        ref = str(row.seq)
    elif kind == "command":
        summary = f"command {row.kind}: {row.status}"
        detail = {"command_id": row.id, "kind": row.kind, "status": row.status, "actor": row.actor,
                  "error": row.error, "finished_at": _text(row.finished_at)}  # fmt: skip
        ref = str(row.id)
    else:
        summary = f"{row.kind.replace('_', ' ')} {row.status}: {row.units} base units"
        detail = {"vend_id": row.id, "kind": row.kind, "status": row.status, "amount": row.amount,
                  "units": row.units}  # fmt: skip
        ref = str(row.id)
    return {"type": kind, "at": at, "id": ref, "summary": summary, "detail": detail}


def timeline(engine: Engine, caller: Caller, drn: str, limit: int = 50, after: str | None = None) -> dict[str, Any]:
    """A meter's alarms, events, head-end commands and vends, newest first, in one shape with a ``type`` (admin,
    operator). Keyset pages over (time, type, id); ``not_found`` for a meter that is not registered.

    Each source is read newest first from its own index, at most a page of each, and merged here: four small
    queries rather than one ``UNION`` whose times are in two zones."""
    caller.require("admin", "operator")
    number = sts.MeterNumber.parse(drn).drn
    limit = max(1, min(limit, MAX_PAGE))
    cursor = None if after is None else _timeline_after(after)
    with engine.connect() as conn:
        meter_id = _drn_of(conn, number)
        if meter_id is None:
            raise VendError("not_found", f"no meter {number}")
        found = _entries(conn, meter_id, cursor, limit + 1)
    # newest first; same time: by type, then the newest id first (vend ids are UUIDs: any fixed order will do)
    found.sort(key=lambda e: (-e[0].timestamp(), e[1]))
    ordered: list[Any] = []
    for _, group in _by_time_and_rank(found):
        ordered.extend(sorted(group, key=lambda e: e[2], reverse=True))
    page = ordered[:limit]
    more = len(ordered) > limit
    last = page[-1] if page else None
    nxt = _timeline_cursor(last[0], TIMELINE_TYPES[last[1]], last[2]) if more and last is not None else None
    return {"items": [e[3] for e in page], "next": nxt}


def _by_time_and_rank(entries: list[Any]) -> list[tuple[tuple[float, int], list[Any]]]:
    groups: list[tuple[tuple[float, int], list[Any]]] = []
    for e in entries:
        key = (e[0].timestamp(), e[1])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(e)
        else:
            groups.append((key, [e]))
    return groups


def telemetry(engine: Engine, caller: Caller, drn: str) -> dict[str, Any]:
    """A meter's latest reading and status, as the ingest keeps them (admin, operator): ``not_found`` for a meter
    that is not registered or has reported nothing."""
    caller.require("admin", "operator")
    number = sts.MeterNumber.parse(drn).drn
    with engine.connect() as conn:
        meter_id = _drn_of(conn, number)
        if meter_id is None:
            raise VendError("not_found", f"no meter {number}")
        row = conn.execute(select(meter_state).where(meter_state.c.meter_id == meter_id)).first()
    if row is None:
        raise VendError("not_found", f"meter {number} has reported no telemetry")
    return {
        "meter": number,
        "medium": row.medium,
        "seq": row.seq,
        "read_at": _local(row.read_at, utc=True),
        "received_at": _local(row.received_at, utc=True),
        "register": row.register,
        "demand": row.demand,
        "credit": row.credit,
        "relay_closed": row.relay_closed,
        "online": row.online,
        "status_at": _local(row.status_at, utc=True),
        "event_at": _local(row.event_at, utc=True),
    }
