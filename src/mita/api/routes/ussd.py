"""The USSD aggregator's callback (Africa's Talking): ``POST /hooks/at/ussd/<secret>``, one per hop.

The form (``sessionId``, ``serviceCode``, ``phoneNumber``, ``networkCode``, ``text``) goes through the pure menu
(:mod:`mita.channels.ussd`); this route does only the I/O the menu asks for, and answers ``text/plain``
``CON ...`` or ``END ...`` well inside the aggregator's limit (10 to 15 s; a quote is one database read):

- a quote (``VendingService.quote`` as the ``channel:ussd`` vendor) for the confirmation screen;
- on Pay, the quote again, then :meth:`Payments.initiate` keyed ``ussd:<sessionId>`` (a repeated hop starts
  nothing new) with the STK push due two seconds later: the phone cannot show the push while the USSD session is
  open, so the session's ``END`` goes first;
- the last token and the last purchase only to the phone registered with the meter.

The secret path segment authenticates the aggregator (``MITA_HOOK_SECRET``; a wrong one is a 404). A form without
a session or a phone is a 400.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from mita.channels import ussd
from mita.channels.payments import Payments
from mita.vend.errors import VendError

from ..channel_deps import Hooks, Pay

router = APIRouter(prefix="/hooks", tags=["channels"], include_in_schema=False)

#: How long after the session's END the payment prompt is sent.
PUSH_DELAY = dt.timedelta(seconds=2)
PROVIDER, CHANNEL = "mpesa", "mpesa.stk"
MAX_FORM = 4096


@router.post("/at/ussd/{secret}", response_class=PlainTextResponse)
async def at_ussd(secret: str, request: Request, payments: Pay, hooks: Hooks) -> PlainTextResponse:
    """One hop of a USSD session: the next screen."""
    hooks.check(secret)
    raw = (await request.body())[:MAX_FORM].decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
    session, phone = form.get("sessionId", "").strip(), _digits(form.get("phoneNumber", ""))
    if not session or len(session) > 100 or not phone:
        raise VendError("bad_request", "a USSD hop carries sessionId and phoneNumber")
    body = await run_in_threadpool(answer, payments, session, phone, form.get("text", ""))
    return PlainTextResponse(body, headers={"Cache-Control": "no-store"})


def answer(payments: Payments, session: str, phone: str, text: str) -> str:
    """The screen for a hop, with the menu's effect carried out."""
    s = ussd.step(text, ussd.Menu(currency=payments.currency))
    if s.effect is ussd.Effect.NONE or s.meter is None:
        return s.screen.body
    if s.effect in (ussd.Effect.QUOTE, ussd.Effect.PAY):
        assert s.amount is not None
        minor = s.amount * 100
        try:
            quote = payments.service.quote(payments.caller("ussd"), s.meter, minor)
            if s.effect is ussd.Effect.QUOTE:
                return ussd.quoted(s, quote["receipt"]).body
            payments.initiate(PROVIDER, f"ussd:{session}", s.meter, minor, phone, channel=CHANNEL, delay=PUSH_DELAY)
        except VendError as exc:
            return ussd.refused(s, exc.code).body
        return s.screen.body
    registered = payments.service.registry.meter_phone(s.meter)
    allowed = registered is not None and _digits(registered) == phone
    last = payments.last_purchase(s.meter) if allowed else None
    shown = ussd.last_token if s.effect is ussd.Effect.LAST else ussd.balance
    return shown(s, last, allowed).body


def _digits(phone: str) -> str:
    """``+254 712 345 678`` as ``254712345678``: how phones are compared and pushed to."""
    return "".join(c for c in phone if c.isdigit())[:15]
