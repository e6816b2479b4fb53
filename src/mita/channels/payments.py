"""The one payment pipeline every channel ends in.

The steps, each in one transaction:

- a provider says money arrived (:meth:`Payments.record`, from a callback's route or a reconciliation): the payment
  (unique per provider transaction), what the provider said, and the outbox row ``payment`` that vends it;
- Mita asks a provider to collect (:meth:`Payments.initiate`, an STK push from USSD or an SMS ``BUY``): the payment
  (``initiated``, unique per origin) and the outbox row that sends the push;
- the provider answers the push (:meth:`Payments.collected`, its callback or a query): the payment's new state, and
  the vend's outbox row if paid;
- the vend (:meth:`Payments.vend`, run by the outbox worker): the vending service's own transaction (idempotency key
  ``pay:<id>``), then the payment ``vended`` with its delivery's outbox row;
- the delivery's report (:meth:`Payments.delivered`): the payment's final state.

A step that runs twice finds its work done: the provider's reference is unique, the vend's idempotency key is the
payment's, outbox rows are unique by dedupe key, and a state the payment already left is never written back
(:data:`~mita.vend.lifecycles.PAYMENT`). A callback the pipeline cannot match is kept as an event and refused.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mita import sts
from mita.outbox.queue import Outgoing, enqueue_many
from mita.vend import listings
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.lifecycles import PAYMENT, PAYMENT_FINAL, PaymentStatus
from mita.vend.schema import payment_events, payments
from mita.vend.service import VendingService

from . import texts

S = PaymentStatus
#: The outbox channels of the pipeline: vend a payment, deliver by SMS, ask a provider to collect or refund.
VEND_CHANNEL, SMS_CHANNEL = "payment", "sms"
#: Refusals of the vending service worth another try later (the database, its disk, a lock, the server's clock,
#: the same vend in progress in another worker); every other refusal cannot change by retrying: the money is
#: refunded or a person looks.
TRANSIENT = frozenset(
    {"retry", "in_progress", "database_unavailable", "unsafe_database", "schema_outdated", "disk_full", "clock_skew"}
)


#: How a channel reads a meter's purchases for the customer who asks (never writes: vends go through the service).
READER = Caller(None, "channels", "operator")


@dataclass(frozen=True)
class PaymentFact:
    """What a provider says was paid, normalised: one per provider transaction (``provider_ref``)."""

    provider: str  # mpesa, ...
    kind: str  # c2b, stk
    provider_ref: str  # the provider's transaction id (a C2B TransID), or Mita's purchase code (STK)
    amount: int  # minor units
    account_ref: str = ""  # what the payer typed (BillRefNumber) or was shown
    meter: str | None = None  # the meter number found for it (None: none matched)
    payer: str = ""  # as given (a C2B MSISDN is masked)
    receipt: str | None = None  # the provider's receipt number
    deliver_to: str | None = None  # a phone known to be the payer's (never a masked one)
    verified: bool = False  # from the provider's own records (a query, the pull), not an unsigned callback
    source: str = "callback"  # what said it, kept with the event
    body: Mapping[str, Any] = field(default_factory=dict)  # as received, for the events


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Payments.record` did: the payment's id and state, and whether this fact was new."""

    id: int
    status: str
    new: bool


def purchase_code(origin: str) -> str:
    """A short reference for a purchase Mita starts (the STK push's ``AccountReference``, at most 12 characters,
    which a 13-digit meter number does not fit): ``P`` and 10 base-32 characters of the origin's hash, so the same
    origin (a USSD session, an SMS) always gets the same code, and a repeat starts nothing new."""
    digest = hashlib.sha256(origin.encode()).digest()
    return "P" + base64.b32encode(digest).decode()[:10]


class Payments:
    """The pipeline's steps over the payments tables, the outbox and the vending service."""

    def __init__(
        self,
        service: VendingService,
        *,
        currency: str = "KES",
        unverified_cap: int = 500_000,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.service = service
        self.engine: Engine = service.engine
        self.currency = currency
        self.unverified_cap = unverified_cap
        self.clock = clock or service.clock
        self._callers: dict[str, Caller] = {}

    def caller(self, provider: str) -> Caller:
        """The channel's own vendor and API key (made on first use, then cached)."""
        found = self._callers.get(provider)
        if found is None:
            found = self._callers[provider] = self.service.registry.channel_caller(provider)
        return found

    # ------------------------------------------------------------------ money in

    def record(self, fact: PaymentFact) -> Recorded:
        """Store a payment the provider says was made (once per provider reference) and queue its vend, in one
        transaction; a repeat adds only the event, or the verification a held payment waited for."""
        if not isinstance(fact.amount, int) or fact.amount <= 0:
            raise VendError("invalid_amount", "a payment's amount is a positive number of minor units")
        caller = self.caller(fact.provider)
        at = self.clock()
        with self.engine.begin() as conn:
            status = S.RECEIVED if fact.verified or fact.amount <= self.unverified_cap else S.HELD
            row = {
                "provider": fact.provider, "kind": fact.kind, "provider_ref": fact.provider_ref,
                "receipt": fact.receipt, "account_ref": fact.account_ref[:40], "meter": fact.meter,
                "amount": fact.amount, "currency": self.currency, "payer": fact.payer[:40],
                "deliver_to": fact.deliver_to, "status": status, "verified": fact.verified,
                "api_key_id": caller.api_key_id, "created_at": at, "updated_at": at,
                "detail": None if status == S.RECEIVED else "unverified callback above the cap: waits for the provider",
            }  # fmt: skip
            stmt = dialect_of(conn).insert(payments).values(row).on_conflict_do_nothing()
            new_id = conn.execute(stmt.returning(payments.c.id)).scalar()
            if new_id is not None:
                self._event(conn, new_id, fact.provider, fact.source, fact.body, at)
                if status == S.RECEIVED:
                    self._queue_vend(conn, new_id, at)
                return Recorded(new_id, status, True)
            current = self._lock(conn, fact.provider, fact.provider_ref, fact.receipt)
            self._event(conn, current.id, fact.provider, fact.source, fact.body, at)
            return Recorded(current.id, self._paid(conn, current, fact, at), False)

    def _paid(self, conn: Connection, current: Any, fact: PaymentFact, at: dt.datetime) -> str:
        """A payment seen again: what a later, better word changes (never a final state's money, never twice)."""
        values: dict[str, Any] = {}
        if fact.receipt and not current.receipt:
            values["receipt"] = fact.receipt
        if fact.verified and not current.verified:
            values["verified"] = True
        status = current.status
        paid_now = fact.verified or current.verified or fact.amount <= self.unverified_cap
        if status in (S.INITIATED, S.CANCELLED, S.FAILED, S.EXPIRED) or (status == S.HELD and paid_now):
            status = S.RECEIVED if paid_now else S.HELD
            values.update(status=status, detail=None if status == S.RECEIVED else current.detail)
        if values:
            values["updated_at"] = at
            conn.execute(update(payments).where(payments.c.id == current.id).values(**values))
        if status == S.RECEIVED and current.status != S.RECEIVED:
            self._queue_vend(conn, current.id, at)
        return str(status)

    def initiate(
        self,
        provider: str,
        origin: str,
        meter: str,
        amount: int,
        phone: str,
        *,
        channel: str,
        delay: dt.timedelta = dt.timedelta(0),
    ) -> Recorded:
        """Ask a provider to collect ``amount`` from ``phone`` for ``meter`` (an STK push): the payment, keyed by
        the origin's purchase code, and the outbox row (``channel``, due after ``delay``: a USSD session must be
        closed before the phone can show the push) that sends the request. The same origin starts nothing new."""
        drn = sts.MeterNumber.parse(meter).drn
        if not isinstance(amount, int) or amount <= 0:
            raise VendError("invalid_amount", "a payment's amount is a positive number of minor units")
        code = purchase_code(origin)
        caller = self.caller(provider)
        at = self.clock()
        with self.engine.begin() as conn:
            row = {
                "provider": provider, "kind": "stk", "provider_ref": code, "account_ref": code, "meter": drn,
                "amount": amount, "currency": self.currency, "payer": phone, "deliver_to": phone,
                "status": S.INITIATED, "verified": False, "api_key_id": caller.api_key_id, "created_at": at,
                "updated_at": at,
            }  # fmt: skip
            new_id = conn.execute(
                dialect_of(conn).insert(payments).values(row).on_conflict_do_nothing().returning(payments.c.id)
            ).scalar()
            if new_id is None:
                current = self._lock(conn, provider, code)
                return Recorded(current.id, current.status, False)
            self._event(conn, new_id, provider, "initiate", {"origin": origin, "meter": drn, "amount": amount}, at)
            payload = {"payment_id": new_id, "code": code, "meter": drn, "amount": amount, "phone": phone}
            enqueue_many(conn, [Outgoing(channel, phone, f"{channel}:{new_id}", payload, at, due=at + delay)])
            return Recorded(new_id, S.INITIATED, True)

    def set_checkout(self, payment_id: int, checkout_id: str) -> None:
        """The provider's id of a push it accepted (its callback and queries name the push by it)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(payments)
                .where(payments.c.id == payment_id, payments.c.checkout_id.is_(None))
                .values(checkout_id=checkout_id, updated_at=self.clock())
            )

    def collected(
        self,
        provider: str,
        *,
        checkout_id: str | None = None,
        code: str | None = None,
        outcome: str,
        receipt: str | None = None,
        amount: int | None = None,
        verified: bool = False,
        detail: str | None = None,
        source: str = "callback",
        body: Mapping[str, Any] | None = None,
    ) -> Recorded | None:
        """What came of a push (by its checkout id, or by its purchase code): ``outcome`` is ``paid`` or a final
        state (cancelled, failed, expired). Final states are sticky: a late "cancelled" after "paid" changes
        nothing; a "paid" after "cancelled" is the provider's record of money, and is vended. None: no such push
        (the event is kept, unmatched)."""
        at = self.clock()
        with self.engine.begin() as conn:
            where = payments.c.checkout_id == checkout_id if checkout_id else payments.c.provider_ref == code
            found = select(payments).where(payments.c.provider == provider, where)
            current = conn.execute(_locked(found, conn)).first()
            self._event(conn, current.id if current else None, provider, source, body or {}, at)
            if current is None:
                return None
            if outcome == "paid":
                fact = PaymentFact(
                    provider, current.kind, current.provider_ref, amount or current.amount, receipt=receipt,
                    verified=verified,
                )  # fmt: skip
                return Recorded(current.id, self._paid(conn, current, fact, at), False)
            new = S(outcome)
            if PAYMENT.allows(current.status, new) and current.status == S.INITIATED:
                self._set(conn, current.id, new, at, detail=detail)
                return Recorded(current.id, new, False)
            return Recorded(current.id, current.status, False)

    # ------------------------------------------------------------------ the vend (the outbox's ``payment`` channel)

    def vend(self, payment_id: int) -> str:
        """Vend a received payment through the vending service, once (its idempotency key is the payment's), then
        mark it vended and queue its delivery; a refusal that a retry cannot change makes it unvendable (a refund
        is asked for). Transient failures raise (the outbox tries again). Returns the payment's state."""
        with self.engine.connect() as conn:
            p = conn.execute(select(payments).where(payments.c.id == payment_id)).first()
        if p is None:
            raise VendError("not_found", f"no payment {payment_id}")
        if p.status != S.RECEIVED:
            return str(p.status)  # vended already, or not (yet) to be vended
        caller = self.caller(p.provider)
        if p.meter is None:
            return self._unvendable(payment_id, f"no meter for account {p.account_ref!r}")
        try:
            # a meter with a key change pending gets its key change tokens with the credit, first in the SMS
            body = {"meter": p.meter, "amount": p.amount, "include_key_change": True}
            issued = self.service.vend(caller, f"pay:{payment_id}", body)
        except VendError as exc:
            if exc.code in TRANSIENT:
                raise
            return self._unvendable(payment_id, f"{exc.code}: {exc}"[:200])
        answer = issued.body
        phone = p.deliver_to or self.service.registry.meter_phone(p.meter)
        at = self.clock()
        with self.engine.begin() as conn:
            current = conn.execute(_locked(select(payments).where(payments.c.id == payment_id), conn)).one()
            if current.status != S.RECEIVED:
                return str(current.status)
            if phone:
                self._set(conn, payment_id, S.VENDED, at, vend_id=answer["id"], deliver_to=phone)
                text = texts.token_sms(answer)
                payload = {"kind": "token", "payment_id": payment_id, "meter": p.meter, "text": text}
                enqueue_many(conn, [Outgoing(SMS_CHANNEL, phone, f"sms:pay:{payment_id}", payload, at)])
                return S.VENDED
            if answer.get("delivery"):  # a connected meter: the head-end carries the tokens to it
                self._set(conn, payment_id, S.VENDED, at, vend_id=answer["id"])
                self._set(conn, payment_id, S.DELIVERED, at, detail="carried to the meter by the head-end")
                return S.DELIVERED
            self._set(conn, payment_id, S.VENDED, at, vend_id=answer["id"])
            self._set(conn, payment_id, S.FLAGGED, at, detail="vended, but no phone to send the token to")
            return S.FLAGGED

    def _unvendable(self, payment_id: int, why: str) -> str:
        at = self.clock()
        with self.engine.begin() as conn:
            current = conn.execute(_locked(select(payments).where(payments.c.id == payment_id), conn)).one()
            if current.status != S.RECEIVED:
                return str(current.status)
            self._set(conn, payment_id, S.UNVENDABLE, at, detail=why)
        return S.UNVENDABLE

    # ------------------------------------------------------------------ later states

    def move(self, payment_id: int, new: str, *, detail: str | None = None, **values: Any) -> str:
        """Move a payment by the lifecycle (a refund asked for or made, a delivery confirmed, a person's
        decision); a move to the state it is in already is a no-op, a move the table refuses is an error."""
        with self.engine.begin() as conn:
            return self.move_in(conn, payment_id, new, self.clock(), detail=detail, **values)

    def move_in(
        self, conn: Connection, payment_id: int, new: str, at: dt.datetime, *, detail: str | None = None, **values: Any
    ) -> str:
        """:meth:`move`, inside the caller's transaction (with the write that is its cause: a delivery report's)."""
        current = conn.execute(_locked(select(payments).where(payments.c.id == payment_id), conn)).first()
        if current is None:
            raise VendError("not_found", f"no payment {payment_id}")
        if current.status == new:
            return new
        PAYMENT.check(current.status, new)
        self._set(conn, payment_id, S(new), at, detail=detail, **values)
        if new == S.RECEIVED:
            self._queue_vend(conn, payment_id, at)
        return new

    def request_refund(self, payment_id: int, channel: str, detail: str | None = None) -> bool:
        """Ask the provider to give an unvendable (or a person's flagged) payment's money back: the payment
        ``refund_pending`` and the outbox row (``channel``, dedupe ``refund:<id>``) in one transaction. False if
        it is not in a state a refund may start from."""
        at = self.clock()
        with self.engine.begin() as conn:
            current = conn.execute(_locked(select(payments).where(payments.c.id == payment_id), conn)).first()
            if current is None or not PAYMENT.allows(current.status, S.REFUND_PENDING):
                return False
            self._set(conn, payment_id, S.REFUND_PENDING, at, detail=detail or current.detail)
            payload = {"payment_id": payment_id}
            enqueue_many(conn, [Outgoing(channel, current.payer, f"refund:{payment_id}", payload, at)])
        return True

    def note_refund(self, payment_id: int, reference: str) -> None:
        """The provider's reference of the reversal it accepted (its result names it)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(payments)
                .where(payments.c.id == payment_id, payments.c.refund_ref.is_(None))
                .values(refund_ref=reference[:64], updated_at=self.clock())
            )

    def refund_result(
        self, provider: str, reference: str, receipt: str | None, ok: bool, detail: str, body: Mapping[str, Any]
    ) -> int | None:
        """A reversal's outcome: refunded, or flagged for a person. Found by the reversed payment's receipt (a
        success names it) or by the reference :meth:`note_refund` kept (a result may overtake that note: the
        success's receipt does not depend on it)."""
        p = payments.c
        with self.engine.connect() as conn:
            by = p.receipt == receipt if receipt else p.refund_ref == reference
            found = conn.execute(select(p.id).where(p.provider == provider, by)).scalar()
        self.event(provider, "refund_result", body, found)
        if found is not None:
            with contextlib.suppress(VendError):  # a repeated result: the payment is final already
                why = None if ok else f"refund refused: {detail}"[:200]
                self.move(found, S.REFUNDED if ok else S.FLAGGED, detail=why)
        return found

    def delivered(self, payment_id: int, detail: str | None = None) -> str:
        """The token reached the customer (a delivery report): the payment's final state."""
        with self.engine.connect() as conn:
            status = conn.execute(select(payments.c.status).where(payments.c.id == payment_id)).scalar()
        if status in (S.DELIVERED, None):
            return str(status)
        return self.move(payment_id, S.DELIVERED, detail=detail)

    def last_purchase(self, drn: str) -> dict[str, Any] | None:
        """A meter's latest purchase that was not reversed (its tokens and receipt), for a customer who asks again
        by SMS or USSD; read as the utility's own staff would (a channel's vendor sees only its own sales)."""
        found = listings.meter_history(self.engine, READER, drn, limit=20)
        return next((v for v in found["items"] if v["kind"] == "purchase" and v["status"] == "completed"), None)

    def get(self, payment_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(payments).where(payments.c.id == payment_id)).first()
        if row is None:
            raise VendError("not_found", f"no payment {payment_id}")
        return dict(row._mapping)

    def verified(self, provider: str, refs: list[str]) -> set[str]:
        """Which of ``refs`` (provider references or receipts) name payments already verified: what a pull of the
        provider's records can skip."""
        p = payments.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(p.provider_ref, p.receipt).where(
                    p.provider == provider, p.verified.is_(True), p.provider_ref.in_(refs) | p.receipt.in_(refs)
                )
            ).all()
        return {r for row in rows for r in row if r}

    def find(self, provider: str, provider_ref: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(payments).where(payments.c.provider == provider, payments.c.provider_ref == provider_ref)
            ).first()
        return None if row is None else dict(row._mapping)

    def unfinished(self, older_than: dt.datetime, limit: int = 1000) -> list[dict[str, Any]]:
        """Payments not in a final state and untouched since ``older_than``: what reconciliation looks at."""
        open_states = [s.value for s in S if s not in PAYMENT_FINAL]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(payments)
                .where(payments.c.status.in_(open_states), payments.c.updated_at <= older_than)
                .order_by(payments.c.updated_at)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ helpers

    def _queue_vend(self, conn: Connection, payment_id: int, at: dt.datetime) -> None:
        enqueue_many(conn, [Outgoing(VEND_CHANNEL, "", f"pay:{payment_id}", {"payment_id": payment_id}, at)])

    @staticmethod
    def _set(conn: Connection, payment_id: int, status: S, at: dt.datetime, **values: Any) -> None:
        conn.execute(update(payments).where(payments.c.id == payment_id).values(status=status, updated_at=at, **values))

    @staticmethod
    def _event(
        conn: Connection, payment_id: int | None, provider: str, source: str, body: Mapping[str, Any], at: dt.datetime
    ) -> None:
        conn.execute(
            insert(payment_events).values(
                payment_id=payment_id, provider=provider, source=source[:20], body=json.loads(json.dumps(body)), at=at
            )
        )

    @staticmethod
    def _lock(conn: Connection, provider: str, ref: str, receipt: str | None = None) -> Any:
        """The payment a conflicting insert met: by the provider's reference, else by its receipt (a pushed
        payment's receipt seen again as a transaction of its own)."""
        p = payments.c
        found = conn.execute(_locked(select(payments).where(p.provider == provider, p.provider_ref == ref), conn))
        row = found.first()
        if row is None and receipt:
            by_receipt = select(payments).where(p.provider == provider, p.receipt == receipt)
            row = conn.execute(_locked(by_receipt, conn)).first()
        if row is None:
            raise VendError("conflict", "the payment conflicts with another and matches none")
        return row

    def event(self, provider: str, source: str, body: Mapping[str, Any], payment_id: int | None = None) -> None:
        """Keep what a provider said that changed nothing (a refused validation, a forged post, a pull page)."""
        with self.engine.begin() as conn:
            self._event(conn, payment_id, provider, source, body, self.clock())


def dialect_of(conn: Connection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def _locked(stmt: Any, conn: Connection) -> Any:
    """``FOR UPDATE`` on PostgreSQL (SQLite's writer lock serialises)."""
    return stmt.with_for_update() if conn.dialect.name == "postgresql" else stmt
