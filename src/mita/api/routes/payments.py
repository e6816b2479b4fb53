"""Payments, for the people who look after them (admin and operator; vendors' keys are refused): the list, one
payment with everything said about it, a refund, and a person's resolution of a flagged payment.

The pipeline (:mod:`mita.channels.payments`) ends every payment in a final state; ``flagged`` is the one that
needs a person (a forged or unconfirmed callback, a refund the provider refused, a token with no way to the
customer), ``unvendable`` the one that needs a refund. Reads are the channels' own tables; every move goes through
the pipeline (its lifecycle decides what may happen) and is audited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, or_, select

from mita import sts
from mita.channels.payments import Payments
from mita.vend import listings
from mita.vend.audit import write_audit
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.lifecycles import PaymentStatus
from mita.vend.schema import payment_events, payments

from .. import listings as lm
from .. import payment_models as pm
from ..channel_deps import Pay
from ..deps import READERS, Limit, Who, v1_router
from ..problems import responses

router = v1_router("payments")
S = PaymentStatus


@router.get("/payments", response_model=pm.PaymentPage)
def list_payments(
    caller: Who,
    pay: Pay,
    status: pm.StatusFilter = None,
    provider: pm.ProviderFilter = None,
    meter: pm.MeterFilter = None,
    limit: Limit = 50,
    after: lm.Cursor = None,
) -> Any:
    """Payments, newest first, filtered (admin, operator); filters combine. Pages: pass ``next`` as ``after``."""
    caller.require(*READERS)
    drn = sts.MeterNumber.parse(meter).drn if meter else None
    return page(pay.engine, None if status is None else status.value, provider, drn, limit, after)


@router.get("/payments/{payment_id}", response_model=pm.PaymentDetailOut, responses=responses(404))
def get_payment(payment_id: pm.PaymentId, caller: Who, pay: Pay) -> Any:
    """One payment with its events, oldest first: every callback, query, pull and person's word about it."""
    caller.require(*READERS)
    return detail(pay, payment_id)


@router.post("/payments/{payment_id}/refund", response_model=pm.PaymentDetailOut, responses=responses(404, 409))
def refund(payment_id: pm.PaymentId, body: pm.RefundIn, caller: Who, pay: Pay) -> Any:
    """Give the money back (admin, operator): an unvendable or flagged payment becomes ``refund_pending`` and the
    provider is asked to reverse it (the outbox's ``<provider>.refund``, once per payment). A payment whose tokens
    were made is refunded only after its vend is reversed. Asked again while pending: the same answer. Audited.
    409 ``invalid_transition`` from any other state, ``conflict`` while its vend stands."""
    caller.require(*READERS)
    p = pay.get(payment_id)
    if p["status"] != S.REFUND_PENDING:
        if p["vend_id"] and pay.service.get_vend(caller, p["vend_id"]).get("status") != "reversed":
            raise VendError("conflict", f"payment {payment_id} bought tokens: reverse vend {p['vend_id']} first")
        why = f"refund asked by {caller.name}: {body.note}"[:200]
        if not pay.request_refund(payment_id, f"{p['provider']}.refund", why):
            raise VendError(
                "invalid_transition", f"payment {payment_id} is {p['status']}: nothing to refund from there"
            )
        _audit(pay, caller, "payment_refund", p, note=body.note, before=p["status"])
    return detail(pay, payment_id)


@router.post("/payments/{payment_id}/resolve", response_model=pm.PaymentDetailOut, responses=responses(404, 409))
def resolve(payment_id: pm.PaymentId, body: pm.ResolveIn, caller: Who, pay: Pay) -> Any:
    """A person's decision on a flagged payment (admin, operator), audited: ``vend`` sells it after all (to the
    corrected ``meter`` if given; a payment that bought tokens already cannot be sold twice: 409 ``conflict``);
    ``close`` records that the token reached the customer another way (``delivered``). 409
    ``invalid_transition`` unless the payment is flagged (a close repeated on a delivered payment: the same)."""
    caller.require(*READERS)
    p = pay.get(payment_id)
    if body.action == "close" and p["status"] == S.DELIVERED:
        return detail(pay, payment_id)
    if p["status"] != S.FLAGGED:
        raise VendError("invalid_transition", f"payment {payment_id} is {p['status']}: only flagged ones are resolved")
    note = f"{caller.name}: {body.note}"[:200]
    if body.action == "close":
        pay.move(payment_id, S.DELIVERED, detail=note)
    else:
        if p["vend_id"]:
            raise VendError("conflict", f"payment {payment_id} bought tokens already (vend {p['vend_id']})")
        drn = sts.MeterNumber.parse(body.meter).drn if body.meter else p["meter"]
        if drn is None:
            raise VendError("invalid_request", "name the meter to sell to")
        pay.move(payment_id, S.RECEIVED, detail=note, meter=drn)
    _audit(pay, caller, "payment_resolve", p, decision=body.action, meter=body.meter, note=body.note)
    return detail(pay, payment_id)


# ---------------------------------------------------------------------- reads


def page(
    engine: Engine, status: str | None, provider: str | None, meter: str | None, limit: int, after: str | None
) -> dict[str, Any]:
    """A page of payments, newest first, keyset over (created_at, id): none repeated or skipped as new ones come."""
    p = payments.c
    q = select(payments)
    for column, value in ((p.status, status), (p.provider, provider), (p.meter, meter)):
        if value is not None:
            q = q.where(column == value)
    if after is not None:
        at, last = listings.decode_id_cursor(after)
        q = q.where(p.created_at <= at, or_(p.created_at < at, p.id < last))
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(p.created_at.desc(), p.id.desc()).limit(limit + 1)).all()
    shown = rows[:limit]
    nxt = listings.encode_cursor(shown[-1].created_at, shown[-1].id) if shown and len(rows) > limit else None
    return {"items": [_payment(r._mapping) for r in shown], "next": nxt}


def detail(pay: Payments, payment_id: int) -> dict[str, Any]:
    found = pay.get(payment_id)
    e = payment_events.c
    with pay.engine.connect() as conn:
        rows = conn.execute(select(payment_events).where(e.payment_id == payment_id).order_by(e.id)).all()
    events = [{"id": r.id, "source": r.source, "at": r.at, "body": r.body if isinstance(r.body, dict) else {}}
              for r in rows]  # fmt: skip
    return {**_payment(found), "events": events}


def _payment(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k != "api_key_id"}


def _audit(pay: Payments, caller: Caller, what: str, p: dict[str, Any], **detail: Any) -> None:
    """The audit's entry, and the same word among the payment's events (where a person reading it looks)."""
    with pay.engine.begin() as conn:
        write_audit(conn, caller, pay.clock(), what, "payment", p["id"], **detail)
    pay.event(p["provider"], what, {"by": caller.name, **detail}, p["id"])
