"""Daraja's callbacks (M-Pesa): C2B validation and confirmation, the STK push's result, asynchronous results.

Paths avoid the words Daraja refuses in callback URLs (mpesa, safaricom, query, sql, exe, cmd), and end with the
callback secret (``MITA_HOOK_SECRET``: a wrong one is a 404). Daraja gets its answer only after what it said is
committed: a confirmation it sends again, or one the reconciliation pulls, finds its payment and changes nothing.
A body that is not Daraja's is answered 400, and kept as an event.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from mita.channels.mpesa import PROVIDER, messages
from mita.channels.payments import PaymentFact, Payments
from mita.vend.errors import VendError

from ..channel_deps import Hooks, Pay

#: Why the vending service would not sell, as Daraja's validation refusals (anything else about the meter: C2B00012).
REFUSALS = {
    "invalid_amount": messages.INVALID_AMOUNT,
    "amount_too_small": messages.INVALID_AMOUNT,  # below what the month's fixed charges take first
    "credit_limit": messages.OTHER,  # the channel's own vendor or key is at its limit: not the payer's fault
    "key_credit_limit": messages.OTHER,
}

router = APIRouter(prefix="/hooks/ke1", tags=["channels"], include_in_schema=False)


async def _body(request: Request, payments: Payments, source: str) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested deeper than the parser goes
        await run_in_threadpool(payments.event, PROVIDER, source, {"unparsed": raw[:500].decode("latin-1")})
        raise VendError("mpesa_bad_message", "the body is not JSON") from None


def _refused(exc: VendError, payments: Payments, source: str, body: Any) -> JSONResponse:
    payments.event(PROVIDER, source, {"refused": exc.code, "body": body if isinstance(body, dict) else str(body)[:500]})
    return JSONResponse({"ResultCode": 1, "ResultDesc": exc.code}, status_code=400)


@router.post("/c2b/validate/{secret}")
async def validate(secret: str, request: Request, payments: Pay, hooks: Hooks) -> Any:
    """Accept a payment only for a meter (or a purchase code) Mita can sell to, at an amount it can sell; nothing is
    stored but the event (Daraja gives 8 seconds)."""
    hooks.check(secret)
    body = await _body(request, payments, "c2b_validate")
    return await run_in_threadpool(_validate, payments, body)


def _validate(payments: Payments, body: Any) -> Any:
    try:
        c = messages.c2b(body, validation=True)
    except VendError as exc:
        return _refused(exc, payments, "c2b_validate", body)
    drn, code = messages.account(c.bill_ref)
    answer: dict[str, str] = messages.ACCEPT
    if code is not None:
        found = payments.find(PROVIDER, code)
        if found is None or found["status"] != "initiated" or found["amount"] != c.amount:
            answer = messages.refuse(messages.INVALID_ACCOUNT)
    elif drn is None:
        answer = messages.refuse(messages.INVALID_ACCOUNT)
    else:
        try:
            payments.service.quote(payments.caller(PROVIDER), drn, c.amount)
        except VendError as exc:
            answer = messages.refuse(REFUSALS.get(exc.code, messages.INVALID_ACCOUNT))
    if answer is not messages.ACCEPT:
        payments.event(PROVIDER, "c2b_validate", {"refused": answer["ResultCode"], **body})
    return answer


@router.post("/c2b/confirm/{secret}")
async def confirm(secret: str, request: Request, payments: Pay, hooks: Hooks) -> Any:
    """A completed paybill payment: stored (once per TransID) with its vend queued, then acknowledged. The payer's
    number is masked: the token goes to the phone registered with the meter."""
    hooks.check(secret)
    body = await _body(request, payments, "c2b_confirm")
    return await run_in_threadpool(_confirm, payments, body)


def _confirm(payments: Payments, body: Any) -> Any:
    try:
        c = messages.c2b(body)
    except VendError as exc:
        return _refused(exc, payments, "c2b_confirm", body)
    drn, code = messages.account(c.bill_ref)
    if code is not None:  # a payment for a push Mita started, made at the paybill with its code
        done = payments.collected(PROVIDER, code=code, outcome="paid", receipt=c.trans_id, amount=c.amount,
                                  source="c2b_confirm", body=body)  # fmt: skip
        if done is not None:
            return messages.RECEIVED
    fact = PaymentFact(PROVIDER, "c2b", c.trans_id, c.amount, account_ref=c.bill_ref, meter=drn, payer=c.msisdn,
                       receipt=c.trans_id, source="c2b_confirm", body=body)  # fmt: skip
    payments.record(fact)
    return messages.RECEIVED


@router.post("/stk/{secret}")
async def stk(secret: str, request: Request, payments: Pay, hooks: Hooks) -> Any:
    """The result of a push Mita sent: paid (its vend queued), cancelled, failed or expired; final states stick."""
    hooks.check(secret)
    body = await _body(request, payments, "stk_callback")
    return await run_in_threadpool(_stk, payments, body)


def _stk(payments: Payments, body: Any) -> Any:
    try:
        r = messages.stk_callback(body)
    except VendError as exc:
        return _refused(exc, payments, "stk_callback", body)
    if r.outcome != "pending":
        payments.collected(PROVIDER, checkout_id=r.checkout_id, outcome=r.outcome, receipt=r.receipt, amount=r.amount,
                           detail=f"{r.code}: {r.description}"[:200], source="stk_callback", body=body)  # fmt: skip
    return messages.RECEIVED


@router.post("/result/{secret}")
async def result(secret: str, request: Request, payments: Pay, hooks: Hooks) -> Any:
    """An asynchronous result: a reversal's outcome moves its payment; a Transaction Status saying the payment was
    reversed ends its refund too (the reversal's own result was lost); any other status is kept as an event."""
    hooks.check(secret)
    body = await _body(request, payments, "result")
    return await run_in_threadpool(_result, payments, body)


def _result(payments: Payments, body: Any) -> Any:
    try:
        r = messages.result(body)
    except VendError as exc:
        return _refused(exc, payments, "result", body)
    if r.is_status:  # asked by the reconciliation about a refund whose own result never came
        reversed_receipt = r.reversed_receipt
        if reversed_receipt:
            payments.refund_result(PROVIDER, "", reversed_receipt, True, r.description, body)
        else:
            payments.event(PROVIDER, "status_result", body)
        return messages.RECEIVED
    original = r.parameters.get("OriginalTransactionID") if r.ok else None
    if original or r.conversation_id:
        payments.refund_result(PROVIDER, r.conversation_id, original, r.ok, r.description, body)
    else:
        payments.event(PROVIDER, "result", body)
    return messages.RECEIVED


@router.post("/timeout/{secret}")
async def timeout(secret: str, request: Request, payments: Pay, hooks: Hooks) -> Any:
    """Daraja's queue timed out a request: kept; the reconciliation asks again."""
    hooks.check(secret)
    body = await _body(request, payments, "timeout")
    await run_in_threadpool(payments.event, PROVIDER, "timeout", body if isinstance(body, dict) else {"body": body})
    return messages.RECEIVED
