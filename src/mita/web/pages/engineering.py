"""Engineering tokens: clear tamper, clear credit, power limits, tariff rate, meter tests. Each is the vending
service's ``engineering`` call under the operator's key (audited), with an Idempotency-Key made when the form is
shown, so a form sent twice gives the same token."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita import sts
from mita.sts.errors import StsError
from mita.vend.errors import VendError

from ..console import Posted, Signed, field, go, render, runtime

router = APIRouter()

#: What each kind does, and what its value is (None: it takes none).
KINDS = {
    "clear_tamper": ("Clear tamper", None),
    "clear_credit": ("Clear credit", "Register (empty: all registers)"),
    "set_power_limit": ("Set power limit", "Watts"),
    "set_phase_unbalance_limit": ("Set phase unbalance limit", "Watts"),
    "set_tariff_rate": ("Set tariff rate", "Rate, 0 to 65535"),
    "test": ("Meter test or display", "Control bits (empty: 1, test all)"),
}


def _form(request: Request, status: int = 200, **values: object) -> Response:
    context = {"meter": "", "kind": "clear_tamper", "value": "", "errors": {}, **values}
    return render(
        request,
        "engineering.html",
        status,
        title="Engineering tokens",
        kinds=KINDS,
        key=f"console:{uuid.uuid4()}",
        **context,
    )


@router.get("/engineering")
def engineering_form(request: Request, session: Signed, meter: str = "") -> Response:
    return _form(request, meter=meter)


@router.post("/engineering")
def engineering(request: Request, session: Posted) -> Response:
    form = request.state.form
    meter, kind, text, key = field(form, "meter"), field(form, "kind"), field(form, "value"), field(form, "key")
    if kind not in KINDS:
        return _form(request, 422, meter=meter, kind=kind, value=text, errors={"kind": "Choose what the token does."})
    if text and not text.isdigit():
        return _form(request, 422, meter=meter, kind=kind, value=text, errors={"value": "A whole number, or nothing."})
    try:
        drn = sts.MeterNumber.parse(meter).drn
        issued = runtime(request).services.engineering(
            session.caller, drn, kind, int(text) if text else None, key or None
        )
    except (VendError, StsError) as exc:
        where = "meter" if exc.code in ("not_found", "check_digit_error", "format_error", "meter_blocked") else "value"
        return _form(request, 422, meter=meter, kind=kind, value=text, errors={where: exc.message})
    return go(request, f"/vends/{issued.body['id']}")
