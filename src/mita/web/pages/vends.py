"""Selling and what follows: the vend form (quote first, then confirm), the receipt (printable), reprint and
reversal, and the list of vends.

A vend from the console is a vend like any other (``VendingService.vend``) under the operator's key. Its
Idempotency-Key is made when the quote is shown and travels in the confirmation form, so a double click or a
resubmitted form gives the same vend, never a second one.
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita import sts
from mita.sts.errors import StsError
from mita.vend import listings
from mita.vend.errors import VendError

from ..console import Posted, Signed, field, go, render, runtime

router = APIRouter()

#: Which form field a service's error code belongs to (the rest are shown above the form).
FIELD_OF = {
    "check_digit_error": "meter",
    "format_error": "meter",
    "not_found": "meter",
    "meter_blocked": "meter",
    "no_tariff": "meter",
    "invalid_amount": "amount",
    "amount_too_small": "amount",
    "credit_limit": "amount",
    "invalid_request": "reason",
}


def minor_units(text: str) -> int:
    """``50``, ``50.5`` or ``1,250.00`` as cents; ``invalid_amount`` otherwise."""
    try:
        value = Decimal(text.replace(",", "").replace(" ", ""))
    except InvalidOperation:
        raise VendError("invalid_amount", "type the amount as a number, for example 50 or 50.00") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise VendError("invalid_amount", "the amount is a positive number with at most two decimals")
    return int(value * 100)


def errors_of(exc: VendError | StsError) -> dict[str, str]:
    return {FIELD_OF.get(exc.code, "form"): exc.message}


@router.get("/vend")
def vend_form(request: Request, session: Signed, meter: str = "") -> Response:
    return render(request, "vend.html", title="Vend", meter=meter, amount="", errors={}, quote=None)


@router.post("/vend/quote")
def quote(request: Request, session: Posted) -> Response:
    form = request.state.form
    meter, amount = field(form, "meter"), field(form, "amount")
    rt = runtime(request)
    try:
        drn = sts.MeterNumber.parse(meter).drn
        cents = minor_units(amount)
        priced = rt.services.quote(session.caller, drn, cents)
    except (VendError, StsError) as exc:
        return render(
            request, "vend.html", 422, title="Vend", meter=meter, amount=amount, errors=errors_of(exc), quote=None
        )
    return render(
        request, "vend.html", title="Vend", meter=drn, amount=amount, errors={}, quote=priced, cents=cents,
        key=f"console:{uuid.uuid4()}",
    )  # fmt: skip


@router.post("/vend")
def vend(request: Request, session: Posted) -> Response:
    form = request.state.form
    meter, amount, key = field(form, "meter"), field(form, "amount"), field(form, "key")
    rt = runtime(request)
    try:
        cents = minor_units(amount)
        issued = rt.services.vend(session.caller, key, {"meter": meter, "amount": cents})
    except (VendError, StsError) as exc:
        return render(
            request, "vend.html", 422, title="Vend", meter=meter, amount=amount, errors=errors_of(exc), quote=None
        )
    return go(request, f"/vends/{issued.body['id']}")


@router.get("/vends")
def vends(
    request: Request, session: Signed, meter: str = "", status: str = "", kind: str = "", after: str | None = None
) -> Response:
    rt = runtime(request)
    f = listings.VendFilter(meter=meter or None, status=status or None, kind=kind or None)
    page = listings.list_vends(rt.engine, session.caller, f, 25, after)
    keep = {k: v for k, v in (("meter", meter), ("status", status), ("kind", kind)) if v}
    return render(request, "vends.html", title="Vends", history=page, keep=keep, meter=meter, status=status, kind=kind)


def _receipt(request: Request, session: Any, vend: dict[str, Any], status: int = 200, **more: Any) -> Response:
    rt = runtime(request)
    window = rt.services.ctx.reversal_window
    return render(
        request,
        "receipt.html",
        status,
        title="Receipt",
        v=vend,
        window_h=int(window.total_seconds() // 3600),
        errors={},
        **more,
    )


@router.get("/vends/{vend_id}")
def receipt(request: Request, session: Signed, vend_id: str) -> Response:
    return _receipt(request, session, runtime(request).services.get_vend(session.caller, vend_id[:40]))


@router.post("/vends/{vend_id}/reprint")
def reprint(request: Request, session: Posted, vend_id: str) -> Response:
    """A reprint is audited (who handed the tokens out again, when): it is its own page, marked REPRINT."""
    rt = runtime(request)
    return _receipt(request, session, rt.services.reprint(session.caller, vend_id[:40]))


@router.post("/vends/{vend_id}/reverse")
def reverse(request: Request, session: Posted, vend_id: str) -> Response:
    form = request.state.form
    reason = field(form, "reason")
    rt = runtime(request)
    if not reason:
        vend = rt.services.get_vend(session.caller, vend_id[:40])
        return _receipt(request, session, vend, 422, reason_error="Say why the vend is reversed (kept in the audit).")
    try:
        rt.services.reverse(session.caller, vend_id[:40], reason[:500])
    except VendError as exc:
        vend = rt.services.get_vend(session.caller, vend_id[:40])
        return _receipt(request, session, vend, 409 if exc.code != "invalid_request" else 422, reason_error=exc.message)
    return go(request, f"/vends/{vend_id}")
