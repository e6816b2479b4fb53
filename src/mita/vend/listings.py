"""Listing vends: by meter, vendor, customer, kind, status and time, newest first, a page at a time.

One query serves the list (``GET /v1/vends``) and a meter's history (``GET /v1/meters/{drn}/vends``): purchases,
engineering tokens and key changes, each with its tokens; a reversed purchase shows ``status: reversed`` and
when (``reversed_at``); a vend for a connected meter, how its tokens went to it (``delivery``: the head-end's
command, joined in the same query). Pages are keyset pages over (``created_at``, ``id``), newest first: the cursor
is opaque text, and a page never repeats or skips a vend however many are sold while a client reads.

Who sees what is the rule of a single vend's read: admins and operators see every vend, a vendor's keys their
own vendor's (a ``vendor_id`` filter for another vendor then finds nothing).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Select, or_, select

from mita import sts

from . import remote
from .callers import Caller
from .errors import VendError
from .lifecycles import VendKind, VendStatus
from .schema import customers, meter_commands, meters, tokens, vends
from .walltime import wall_clock, with_offset

MAX_PAGE = 500


@dataclass(frozen=True)
class VendFilter:
    """What to list: every field narrows the list; ``None`` does not filter. Times: ``since`` inclusive,
    ``until`` exclusive (aware times are turned into the utility's wall clock)."""

    meter: str | None = None  # a meter number (DRN)
    vendor_id: int | None = None
    customer: str | None = None  # a customer's account
    kind: str | None = None  # purchase, engineering, key_change
    status: str | None = None  # completed, reversed
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def encode_cursor(at: dt.datetime, key: str | int) -> str:
    """A keyset page's cursor: the (time, id) of its last row, opaque to the client (vends, alarms, payments)."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """The (time, id) a cursor points after; a cursor :func:`encode_cursor` did not make is ``invalid_cursor``."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, key = text.split("|", 1)
        return dt.datetime.fromisoformat(at), key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise VendError("invalid_cursor", "after= takes the next cursor of the previous page, unchanged") from None


def decode_id_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """:func:`decode_cursor` for tables keyed by a number (alarms, payments)."""
    at, key = decode_cursor(cursor)
    if not key.isdigit():
        raise VendError("invalid_cursor", "after= takes the next cursor of the previous page, unchanged")
    return at, int(key)


def _check(f: VendFilter) -> None:
    if f.kind is not None and f.kind not in tuple(VendKind):
        raise VendError("invalid_kind", f"kind is one of {', '.join(VendKind)}")
    if f.status is not None and f.status not in tuple(VendStatus):
        raise VendError("invalid_status", f"status is one of {', '.join(VendStatus)}")
    if f.since is not None and f.until is not None and wall_clock(f.since) >= wall_clock(f.until):
        raise VendError("invalid_period", "since must be before until")


def _id_of(conn: Connection, column: Any, key_column: Any, value: str) -> int | None:
    found = conn.execute(select(column).where(key_column == value)).scalar()
    return None if found is None else int(found)


def _query(conn: Connection, caller: Caller, f: VendFilter) -> Select[Any] | None:
    """The filtered query, or None when a filter names a meter or customer that does not exist."""
    q = select(
        vends.c.id, vends.c.kind, vends.c.status, vends.c.amount, vends.c.units, vends.c.receipt,
        vends.c.vendor_id, vends.c.api_key_id, vends.c.created_at, vends.c.reversed_at,
        meters.c.drn, meters.c.utility, customers.c.account, *remote.DELIVERY_COLUMNS,
    ).select_from(
        vends.join(meters, meters.c.id == vends.c.meter_id)
        .outerjoin(customers, customers.c.id == vends.c.customer_id)
        .outerjoin(meter_commands, meter_commands.c.vend_id == vends.c.id)
    )  # fmt: skip
    if caller.role == "vendor":  # a vendor's tills see each other's sales; nobody else's
        q = q.where(vends.c.vendor_id == caller.vendor_id if caller.vendor_id is not None else vends.c.api_key_id
                    == caller.api_key_id)  # fmt: skip
    if f.meter is not None:
        meter_id = _id_of(conn, meters.c.id, meters.c.drn, sts.MeterNumber.parse(f.meter).drn)
        if meter_id is None:
            return None
        q = q.where(vends.c.meter_id == meter_id)
    if f.customer is not None:
        customer_id = _id_of(conn, customers.c.id, customers.c.account, f.customer)
        if customer_id is None:
            return None
        q = q.where(vends.c.customer_id == customer_id)
    if f.vendor_id is not None:
        q = q.where(vends.c.vendor_id == f.vendor_id)
    if f.kind is not None:
        q = q.where(vends.c.kind == f.kind)
    if f.status is not None:
        q = q.where(vends.c.status == f.status)
    if f.since is not None:
        q = q.where(vends.c.created_at >= wall_clock(f.since))
    if f.until is not None:
        q = q.where(vends.c.created_at < wall_clock(f.until))
    return q


def list_vends(
    engine: Engine, caller: Caller, f: VendFilter = VendFilter(), limit: int = 50, after: str | None = None
) -> dict[str, Any]:
    """A page of vends, newest first; ``next`` is the cursor of the following page (None on the last)."""
    caller.require("admin", "operator", "vendor")
    _check(f)
    limit = max(1, min(limit, MAX_PAGE))
    with engine.connect() as conn:
        q = _query(conn, caller, f)
        if q is None:
            return {"items": [], "next": None}
        if after is not None:
            at, vend_id = decode_cursor(after)
            # (created_at, id) < (at, vend_id), written so that both databases start the index scan at ``at``
            q = q.where(vends.c.created_at <= at, or_(vends.c.created_at < at, vends.c.id < vend_id))
        rows = conn.execute(q.order_by(vends.c.created_at.desc(), vends.c.id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        made: dict[str, list[dict[str, Any]]] = {r.id: [] for r in page}
        if made:
            for t in conn.execute(
                select(tokens).where(tokens.c.vend_id.in_(list(made))).order_by(tokens.c.vend_id, tokens.c.seq)
            ):
                made[t.vend_id].append(
                    {"seq": t.seq, "kind": t.kind, "digits": t.digits, "tid": t.tid, "class": t.token_class,
                     "subclass": t.subclass, "units": t.units}
                )  # fmt: skip
    items = [_item(r, made[r.id]) for r in page]
    last = page[-1] if page else None
    return {"items": items, "next": encode_cursor(last.created_at, last.id) if last and len(rows) > limit else None}


def meter_history(
    engine: Engine, caller: Caller, drn: str, limit: int = 50, after: str | None = None
) -> dict[str, Any]:
    """Everything a meter was sold or sent, newest first: ``not_found`` for a meter that is not registered."""
    number = sts.MeterNumber.parse(drn)
    with engine.connect() as conn:
        if _id_of(conn, meters.c.id, meters.c.drn, number.drn) is None:
            raise VendError("not_found", f"no meter {number.drn}")
    return list_vends(engine, caller, VendFilter(meter=number.drn), limit, after)


def _item(r: Any, made: list[dict[str, Any]]) -> dict[str, Any]:
    receipt = dict(r.receipt)
    receipt.pop("key", None)  # the key configuration is the single vend's to show (GET /v1/vends/{id})
    return {
        "id": r.id,
        "kind": r.kind,
        "status": r.status,
        "meter": r.drn,
        "utility": r.utility,
        "customer": r.account,
        "vendor_id": r.vendor_id,
        "api_key_id": r.api_key_id,
        "amount": r.amount,
        "units": r.units,
        "currency": receipt.get("currency"),
        "created_at": with_offset(r.created_at),
        "reversed_at": with_offset(r.reversed_at) if r.reversed_at is not None else None,
        "tokens": made,
        "receipt": receipt,
        "delivery": remote.delivered(r),
    }
