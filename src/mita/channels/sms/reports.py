"""Kannel's delivery reports, and the sweep of messages whose report never came.

A report moves its message by the SMS lifecycle (:data:`mita.vend.lifecycles.SMS`), never backwards: reports
arrive late, twice and out of order (an "at the SMSC" after "delivered" changes nothing). A token SMS the phone got
ends its payment (``delivered``). One the operator refused is sent again, the same text, at most
:data:`RESENDS` times; then its payment is flagged for a person. No final report is not a failure: after a while
the message is ``unknown`` (the customer can ask again by SMS or USSD), and a payment whose delivery stays
unconfirmed is flagged after a day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select, update

from mita.outbox.queue import Outgoing, enqueue_many, payload_of
from mita.vend.errors import VendError
from mita.vend.lifecycles import SMS
from mita.vend.schema import payments, sms_messages

from .. import partners
from ..payments import Payments

RESENDS = 2
#: Kannel's report types (dlr-mask bits) and the state each means.
TYPES = {1: "delivered", 2: "rejected", 4: None, 8: "smsc", 16: "rejected"}
#: The payment states a final report ends (a person's flag yields to a delivery; a refusal only ends a wait).
ENDED_BY = {"delivered": ("vended", "flagged"), "rejected": ("vended",)}
_RESEND = re.compile(r":resend(\d+)$")


@dataclass(frozen=True)
class Report:
    sms_id: int
    kind: int
    reply: str


def apply(pay: Payments, report: Report) -> str | None:
    """Apply one report; the message's state after it (None: no such message)."""
    new = TYPES.get(report.kind)
    at = pay.clock()
    m = sms_messages.c
    with pay.engine.begin() as conn:
        # locked: Kannel sends a message's reports (at the SMSC, then delivered) within milliseconds, on two
        # connections; read unlocked, the earlier report's move could land after the later one's and take a delivered
        # message back to "smsc" (hidden while Kannel sent every report six times)
        row = conn.execute(select(sms_messages).where(m.id == report.sms_id).with_for_update()).first()
        if row is None:
            return None
        if new is None or not SMS.allows(row.status, new):
            return str(row.status)
        conn.execute(update(sms_messages).where(m.id == row.id).values(status=new, report=report.reply[:200],
                                                                         updated_at=at))  # fmt: skip
        if new == "rejected":
            _resend(conn, row, at)
        exhausted = new == "rejected" and _resends(row.dedupe_key) >= RESENDS
        paid = None
        if row.payment_id is not None and (new == "delivered" or exhausted):
            paid = conn.execute(
                select(payments.c.status, payments.c.vend_id).where(payments.c.id == row.payment_id)
            ).first()
        # refusals end only a payment still waiting: an earlier copy of the token may have reached the phone
        ends = paid is not None and paid.status in ENDED_BY.get(new, ())
        if ends and paid is not None and paid.vend_id is not None:  # the partner whose vend it is hears of it
            partners.queue_delivery_event(conn, paid.vend_id, at, delivered=new == "delivered", detail=report.reply)
        if ends and row.payment_id is not None:
            # in the message's own transaction: a process killed after the message's move left the payment short of
            # its end for good (a repeated report stops at the message, already moved); the reliability soak saw it
            target, why = ("delivered", "the SMS reached the phone") if new == "delivered" else (
                "flagged", "the operator refused the token SMS every time")  # fmt: skip
            with contextlib.suppress(VendError):  # moved meanwhile (a person's decision, another report): that stands
                pay.move_in(conn, row.payment_id, target, at, detail=why)
    return new


def _resends(key: str) -> int:
    found = _RESEND.search(key)
    return int(found.group(1)) if found else 0


def _resend(conn: Connection, row: Row[Any], at: dt.datetime) -> None:
    """The same text again, under a new dedupe key (``<original>:resend<N>``), while resends are left."""
    n = _resends(row.dedupe_key)
    if n >= RESENDS:
        return
    base = _RESEND.sub("", row.dedupe_key)
    original = payload_of(conn, row.dedupe_key)
    if original is not None:
        enqueue_many(conn, [Outgoing("sms", row.phone, f"{base}:resend{n + 1}", original, at)])


@dataclass
class Swept:
    unknown: int = 0
    flagged: int = 0


def sweep(pay: Payments, *, report_within: dt.timedelta = dt.timedelta(hours=1),
          confirm_within: dt.timedelta = dt.timedelta(hours=24)) -> Swept:  # fmt: skip
    """Messages with no final report after ``report_within``: unknown. Payments vended longer than
    ``confirm_within`` ago whose SMS never reported delivery: flagged."""
    now = pay.clock()
    m = sms_messages.c
    out = Swept()
    with pay.engine.begin() as conn:
        out.unknown = int(
            conn.execute(
                update(sms_messages)
                .where(m.status.in_(("submitted", "smsc")), m.updated_at <= now - report_within)
                .values(status="unknown", updated_at=now)
            ).rowcount
        )
        stale = (
            conn.execute(
                select(payments.c.id).where(
                    payments.c.status == "vended", payments.c.updated_at <= now - confirm_within
                )
            )
            .scalars()
            .all()
        )
    for payment_id in stale:
        try:
            pay.move(payment_id, "flagged", detail="the token SMS was never confirmed delivered")
        except VendError:  # its report came meanwhile: delivered is final
            continue
        out.flagged += 1
    return out
