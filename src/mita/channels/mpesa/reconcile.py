"""One reconciliation pass: Mita's payments against Daraja's records, repairing what a lost callback left.

- a push nobody answered (``initiated`` with a checkout id, older than ``query_after``): the STK query decides
  (paid, cancelled, failed, expired; pending waits for the next pass);
- a push never accepted (``initiated`` without a checkout id, older than ``give_up``): failed;
- a confirmation lost (in the Pull of the last ``window``, paged, and not in Mita): recorded, verified, vended;
- a payment by an unverified callback above the cap (``held``): vended once the Pull shows it, flagged after
  ``hold_for`` if it never does (a forged callback, or money Daraja does not know);
- money Mita cannot sell for (``unvendable``): a reversal asked of Daraja (``refund_pending``); a reversal whose
  result has not come after ``status_after``: a Transaction Status of the payment's receipt (its result, on the
  ResultURL, ends the refund if it says reversed); flagged if nothing settles it within ``give_up``.

Every repair goes through the same pipeline steps as a callback (:mod:`mita.channels.payments`), so running the pass
twice, or at the same time as the callbacks, changes nothing twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from mita.vend.errors import VendError

from ..payments import PaymentFact, Payments
from . import PROVIDER, messages
from .client import Daraja
from .senders import REFUND

MAX_PAGES = 1000
SKEW = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Policy:
    window: dt.timedelta = dt.timedelta(hours=2)  # the pull's reach (Daraja keeps 48 h)
    query_after: dt.timedelta = dt.timedelta(seconds=45)
    hold_for: dt.timedelta = dt.timedelta(hours=2)
    give_up: dt.timedelta = dt.timedelta(hours=1)
    status_after: dt.timedelta = dt.timedelta(minutes=10)  # a reversal's result this late: ask Transaction Status
    refund: bool = True  # ask for a reversal of unvendable payments (else they wait for a person)


@dataclass
class Counts:
    queried: int = 0
    pulled: int = 0
    recovered: int = 0  # payments the pull brought that no callback had
    verified: int = 0
    flagged: int = 0
    refunds: int = 0
    statuses: int = 0  # Transaction Status requests (their results come to the ResultURL)
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def reconcile(
    payments: Payments, daraja: Daraja, policy: Policy = Policy(), results: tuple[str, str] | None = None
) -> Counts:
    """One pass; Daraja's failures are counted, not raised (the next pass tries again). ``results``: the ResultURL
    and QueueTimeOutURL Daraja posts asynchronous answers to (without them no Transaction Status is asked)."""
    counts = Counts()
    now = payments.clock()
    try:
        # the window's end a little ahead: the provider's clock and the utility's are never quite the same
        _pull(payments, daraja, now - policy.window, now + SKEW, counts)
    except VendError as exc:
        counts.errors[exc.code] = counts.errors.get(exc.code, 0) + 1
    for p in payments.unfinished(now):
        age = now - p["updated_at"]
        try:
            if p["provider"] != PROVIDER:
                continue
            if p["status"] == "initiated" and p["checkout_id"] and age >= policy.query_after:
                counts.queried += 1
                r = daraja.stk_query(p["checkout_id"], now)
                if r.outcome != "pending":
                    payments.collected(
                        PROVIDER,
                        checkout_id=p["checkout_id"],
                        outcome=r.outcome,
                        verified=True,
                        detail=f"{r.code}: {r.description}"[:200],
                        source="stk_query",
                        body={"ResultCode": r.code, "ResultDesc": r.description},
                    )
            elif p["status"] == "initiated" and not p["checkout_id"] and age >= policy.give_up:
                payments.collected(
                    PROVIDER,
                    code=p["provider_ref"],
                    outcome="failed",
                    source="reconcile",
                    detail="the push was never accepted by the provider",
                )
                counts.failed += 1
            elif p["status"] == "held" and age >= policy.hold_for:
                payments.move(p["id"], "flagged", detail="not in the provider's records: a forged callback?")
                counts.flagged += 1
            elif p["status"] == "unvendable" and policy.refund:
                counts.refunds += payments.request_refund(p["id"], REFUND)
            elif p["status"] == "refund_pending" and age >= policy.give_up:
                payments.move(p["id"], "flagged", detail="the provider never confirmed the refund")
                counts.flagged += 1
            elif p["status"] == "refund_pending" and age >= policy.status_after and p["refund_ref"] and results:
                counts.statuses += 1  # counted when asked: a refusal below is counted as an error too
                daraja.transaction_status(p["receipt"], *results)
        except VendError as exc:
            counts.errors[exc.code] = counts.errors.get(exc.code, 0) + 1
    return counts


def _pull(payments: Payments, daraja: Daraja, start: dt.datetime, end: dt.datetime, counts: Counts) -> None:
    """Every completed payment Daraja lists in the window, through the pipeline as verified."""
    offset = 0
    for _ in range(MAX_PAGES):
        rows = daraja.pull(start, end, offset)
        if not rows:
            return
        offset += len(rows)
        counts.pulled += len(rows)
        known = payments.verified(PROVIDER, [r.trans_id for r in rows])
        for row in rows:
            if row.trans_id in known:
                continue
            drn, code = messages.account(row.bill_ref)
            if code is not None:
                done = payments.collected(
                    PROVIDER,
                    code=code,
                    outcome="paid",
                    receipt=row.trans_id,
                    amount=row.amount,
                    verified=True,
                    source="pull",
                    body=row.__dict__,
                )
                if done is not None:
                    counts.verified += 1
                    continue
            fact = PaymentFact(
                PROVIDER,
                "c2b",
                row.trans_id,
                row.amount,
                account_ref=row.bill_ref,
                meter=drn,
                payer=row.msisdn,
                receipt=row.trans_id,
                verified=True,
                source="pull",
                body=row.__dict__,
            )
            r = payments.record(fact)
            counts.recovered += r.new
            counts.verified += not r.new
