"""The token doctor: a token as the customer typed it, and a meter (or a decoder key and its algorithm); the
answer in plain words (:mod:`mita.meter.doctor`, through ``VendingService.doctor``). A decoder key typed here goes
to the service and nowhere else: the form field is a password field, and the page never shows it back."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita.sts.errors import StsError
from mita.vend.errors import VendError

from ..console import Posted, Signed, field, render, runtime

router = APIRouter()
#: How each verdict is headed on the page.
VERDICTS = {
    "accepted": "Accepted",
    "used": "Used",
    "old": "Old",
    "key_expired": "Key expired",
    "wrong_key": "Wrong key",
    "crc_error": "Refused: the token does not check (CRC)",
    "format_error": "Not a token",
    "refused": "Refused",
}
WHERE = {"not_found": "meter", "check_digit_error": "meter", "invalid_decoder_key": "decoder_key", "unsupported": "ea"}


def _page(request: Request, code: int = 200, **values: object) -> Response:
    context = {"token": "", "meter": "", "ea": "11", "errors": {}, "d": None, **values}
    return render(request, "doctor.html", code, title="Token doctor", verdicts=VERDICTS, **context)


@router.get("/doctor")
def doctor_form(request: Request, session: Signed, meter: str = "") -> Response:
    return _page(request, meter=meter)


@router.post("/doctor")
def doctor(request: Request, session: Posted) -> Response:
    form = request.state.form
    token, meter, key, ea = field(form, "token"), field(form, "meter"), field(form, "decoder_key"), field(form, "ea")
    errors: dict[str, str] = {}
    if not token:
        errors["token"] = "Type or paste the token as the customer has it."
    if not meter and not key:
        errors["meter"] = "Choose the meter, or give its decoder key below."
    if key and ea not in ("7", "9", "11"):
        errors["ea"] = "Choose the meter's encryption algorithm."
    if errors:
        return _page(request, 422, token=token, meter=meter, ea=ea, errors=errors)
    try:
        answer = runtime(request).services.doctor(
            session.caller, token, drn=meter or None,
            decoder_key=None if meter else key, ea=None if meter else int(ea),
        )  # fmt: skip
    except (VendError, StsError) as exc:
        return _page(request, 422, token=token, meter=meter, ea=ea, errors={WHERE.get(exc.code, "token"): exc.message})
    return _page(request, token=token, meter=meter, ea=ea, d=answer)
