"""The outbox table as a queue: enqueue (once per dedupe key), claim under a lease, settle, and its depth.

A row is *due* when it is ``pending`` and its ``next_attempt_at`` has passed. A claim takes due rows (on
PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so workers never wait for each other; on SQLite ``BEGIN IMMEDIATE``
serialises claims), counts the attempt and moves ``next_attempt_at`` to the end of a lease, and commits at once:
no row lock is held while a row is sent. A worker that dies leaves its rows to come due again when their lease
ends, and another worker takes them.

The attempt number a claim wrote is the claim's fencing token: every later write about the row (sent, retry,
dead, released, lease renewed) matches ``status = 'pending' AND attempts = <that number>``. A worker whose lease
ran out and was taken over by another therefore changes nothing, and no row is ever marked sent twice.

Rows of an *ordered* channel (:data:`ORDERED`: the head-end's, whose tokens a meter takes only in TID order) go out
one at a time per recipient, in the order written: a claim takes such a row only when no earlier row of its
channel and recipient is still pending (due, leased to a worker, live or dead, or waiting out a backoff). A row
that ends (sent or dead) lets the next one go; one recipient's stuck row holds back that recipient only. The rule
is one probe of a partial index (``ix_outbox_open``: the pending rows by channel, recipient and id) per candidate;
and a retry of such a row makes the rows behind it due no sooner than it is, so that while a recipient is
unreachable its queue is not walked past by every claim.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, case, exists, func, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mita.vend import remote
from mita.vend.errors import VendError
from mita.vend.lifecycles import OutboxStatus
from mita.vend.schema import outbox

PENDING, SENT, DEAD = OutboxStatus.PENDING.value, OutboxStatus.SENT.value, OutboxStatus.DEAD.value
#: The sizes of the outbox's text columns (``mita.vend.schema.outbox``).
CHANNEL_MAX, TEXT_MAX = 20, 200
#: Channels whose rows go out in the order written, one at a time per recipient (module docstring). The head-end's:
#: a meter refuses a token older than every TID it remembers (20 of them on some), so a command that overtook an
#: earlier one, after a worker died holding it or a publish failed, could leave the earlier one's credit refused.
ORDERED = frozenset({remote.CHANNEL})


@dataclass(frozen=True)
class Outgoing:
    """A message to queue: the transport (``channel``), to whom, its dedupe key, and what it says."""

    channel: str
    recipient: str
    dedupe_key: str
    payload: Any
    at: dt.datetime  # written at, and due from (unless ``due`` says later)
    vend_id: str | None = None
    due: dt.datetime | None = None

    def row(self) -> dict[str, Any]:
        for name, value, most in (
            ("channel", self.channel, CHANNEL_MAX),
            ("recipient", self.recipient, TEXT_MAX),
            ("dedupe_key", self.dedupe_key, TEXT_MAX),
        ):
            if not isinstance(value, str) or len(value) > most or (name != "recipient" and not value):
                raise VendError("invalid_request", f"an outbox {name} is text of at most {most} characters")
        return {
            "vend_id": self.vend_id,
            "channel": self.channel,
            "recipient": self.recipient,
            "dedupe_key": self.dedupe_key,
            "payload": self.payload,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": self.due or self.at,
            "created_at": self.at,
        }


def _insert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(outbox).on_conflict_do_nothing(index_elements=[outbox.c.dedupe_key])


def enqueue(
    conn: Connection,
    channel: str,
    recipient: str,
    dedupe_key: str,
    payload: Any,
    at: dt.datetime,
    *,
    vend_id: str | None = None,
    due: dt.datetime | None = None,
) -> bool:
    """Queue one message in the caller's transaction; False if its dedupe key is queued already (then nothing
    is written: the same logical message never goes out twice)."""
    return enqueue_many(conn, [Outgoing(channel, recipient, dedupe_key, payload, at, vend_id, due)]) == 1


def enqueue_many(conn: Connection, messages: Iterable[Outgoing]) -> int:
    """:func:`enqueue` for many messages in one statement; how many were new."""
    rows = [m.row() for m in messages]
    if not rows:
        return 0
    return len(conn.execute(_insert(conn).returning(outbox.c.id), rows).all())


def payload_of(conn: Connection, dedupe_key: str) -> Any:
    """What the message queued under ``dedupe_key`` says (None: no such message), for a sender that sends it again
    under a key of its own."""
    return conn.execute(select(outbox.c.payload).where(outbox.c.dedupe_key == dedupe_key)).scalar()


# ---------------------------------------------------------------------- claiming and settling


@dataclass(frozen=True)
class Claimed:
    """A row a worker holds under lease; ``attempts`` (this try's number) is the claim's fencing token."""

    id: int
    channel: str
    recipient: str
    dedupe_key: str
    payload: Any
    attempts: int
    created_at: dt.datetime
    vend_id: str | None

    @property
    def token(self) -> dict[str, int]:
        return {"k_id": self.id, "k_attempts": self.attempts}


def _first_open() -> Any:
    """True for a row with no earlier pending row of its channel and recipient. The status is written into the
    SQL, not bound: only a literal lets PostgreSQL's and SQLite's planners use the partial index ``ix_outbox_open``."""
    o, earlier = outbox.c, outbox.alias("earlier").c
    return ~exists().where(
        earlier.status == literal_column(f"'{PENDING}'"),
        earlier.channel == o.channel,
        earlier.recipient == o.recipient,
        earlier.id < o.id,
    )


@functools.lru_cache(maxsize=64)
def _claim_statement(channels: tuple[str, ...], ordered: tuple[str, ...]) -> Any:
    """A claim of ``channels`` (of which ``ordered`` go one at a time per recipient), built once per set of
    channels with bound parameters (building it for every batch cost the worker more CPU than PostgreSQL took to
    run it), the channels as ``=`` terms, not an ``IN`` list that SQLAlchemy would expand on every execution: the
    due rows, oldest due first, their attempt counted and leased."""
    o = outbox.c
    free = [o.channel == c for c in channels if c not in ordered]
    held = [o.channel == c for c in channels if c in ordered]
    which = or_(*free, and_(or_(*held), _first_open())) if held else or_(*free)
    due = (
        select(o.id)
        .where(o.status == PENDING, o.next_attempt_at <= bindparam("now"), which)
        .order_by(o.next_attempt_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders none (BEGIN IMMEDIATE serialises)
    )
    return (
        update(outbox)
        .where(o.id.in_(due.scalar_subquery()))
        .values(attempts=o.attempts + 1, next_attempt_at=bindparam("lease_until"))
        .returning(o.id, o.channel, o.recipient, o.dedupe_key, o.payload, o.attempts, o.created_at, o.vend_id)
    )


def claim(
    engine: Engine,
    channels: Collection[str],
    limit: int,
    now: dt.datetime,
    lease_until: dt.datetime,
    *,
    ordered: Collection[str] = ORDERED,
) -> list[Claimed]:
    """Take up to ``limit`` due rows of ``channels``, oldest due first, leased until ``lease_until`` (committed);
    of the ``ordered`` channels, only a recipient's oldest pending row."""
    if not channels or limit < 1:
        return []
    names = tuple(sorted(set(channels)))
    stmt = _claim_statement(names, tuple(c for c in names if c in ordered))
    with engine.begin() as conn:
        rows = conn.execute(stmt, {"now": now, "limit": limit, "lease_until": lease_until}).all()
    found = [Claimed(*r) for r in rows]
    found.sort(key=lambda c: c.id)  # RETURNING has no order; in id order, as written
    return found


_FENCE = and_(
    outbox.c.id == bindparam("k_id"), outbox.c.attempts == bindparam("k_attempts"), outbox.c.status == PENDING
)
_SENT = update(outbox).where(_FENCE).values(status=SENT, sent_at=bindparam("k_at"))
_RETRY = update(outbox).where(_FENCE).values(next_attempt_at=bindparam("k_next"), last_error=bindparam("k_error"))
_DEAD = update(outbox).where(_FENCE).values(status=DEAD, last_error=bindparam("k_error"))
# a try that never happened (the worker stops, a long job is interrupted): due at once, and not counted
_RELEASE = update(outbox).where(_FENCE).values(next_attempt_at=bindparam("k_next"), attempts=outbox.c.attempts - 1)
_RENEW = update(outbox).where(_FENCE).values(next_attempt_at=bindparam("k_next"))

STATEMENTS = {"sent": _SENT, "retry": _RETRY, "dead": _DEAD, "release": _RELEASE, "renew": _RENEW}


def _of_head(column: str) -> Any:
    """The ``column`` of the row a retry names, if it is still that try's (the retry was written) and of an
    ordered channel; else NULL, which matches nothing."""
    head = outbox.alias("head").c
    return (
        select(head[column])
        .where(
            head.id == bindparam("k_id"),
            head.attempts == bindparam("k_attempts"),
            head.status == PENDING,
            or_(*(head.channel == c for c in sorted(ORDERED))),
        )
        .scalar_subquery()
    )


#: After a retry of an ordered channel's row: the rows behind it (which cannot go before it) are due no sooner
#: than it is, so that claims do not walk past them, each time, for as long as the head waits out its backoff.
_DEFER_BEHIND = (
    update(outbox)
    .where(
        outbox.c.status == literal_column(f"'{PENDING}'"),  # a literal: the partial index ix_outbox_open
        outbox.c.channel == _of_head("channel"),
        outbox.c.recipient == _of_head("recipient"),
        outbox.c.id > bindparam("k_id"),
        outbox.c.next_attempt_at < bindparam("k_next"),
    )
    .values(next_attempt_at=bindparam("k_next"))
)


def settle(engine: Engine, changes: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """Apply fenced changes in one transaction (``changes[kind]``: parameter rows for :data:`STATEMENTS`);
    how many rows each kind changed (fewer than asked: those leases were lost to another worker)."""
    done: dict[str, int] = {}
    with engine.begin() as conn:
        for kind, rows in changes.items():
            if rows:
                done[kind] = int(conn.execute(STATEMENTS[kind], list(rows)).rowcount)
                if kind == "retry" and ORDERED:
                    conn.execute(_DEFER_BEHIND, [{k: r[k] for k in ("k_id", "k_attempts", "k_next")} for r in rows])
    return done


# ---------------------------------------------------------------------- depth


def depth(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    """The queue's depth: pending (of which due now, and waiting: in backoff or leased), sent, dead; per channel
    too, and how long the oldest due row has waited."""
    o = outbox.c
    is_due = case((and_(o.status == PENDING, o.next_attempt_at <= now), 1), else_=0)
    with engine.connect() as conn:
        rows = conn.execute(
            select(o.channel, o.status, func.count(), func.sum(is_due))
            .group_by(o.channel, o.status)
            .order_by(o.channel, o.status)
        ).all()
        oldest = conn.execute(
            select(func.min(o.next_attempt_at)).where(o.status == PENDING, o.next_attempt_at <= now)
        ).scalar()
    channels: dict[str, dict[str, int]] = {}
    totals = {"pending": 0, "due": 0, "waiting": 0, "sent": 0, "dead": 0}
    for channel, status, count, due in rows:
        entry = channels.setdefault(channel, {"pending": 0, "due": 0, "waiting": 0, "sent": 0, "dead": 0})
        entry[status] += int(count)
        totals[status] += int(count)
        if status == PENDING:
            entry["due"] += int(due or 0)
            entry["waiting"] += int(count) - int(due or 0)
            totals["due"] += int(due or 0)
            totals["waiting"] += int(count) - int(due or 0)
    if isinstance(oldest, str):  # SQLite hands an aggregate's datetime back as text
        oldest = dt.datetime.fromisoformat(oldest)
    waited = round((now - oldest).total_seconds(), 3) if oldest is not None else None
    return {**totals, "oldest_due_s": waited, "channels": channels}
