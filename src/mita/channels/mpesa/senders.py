"""The outbox sender of Daraja's outbound requests: STK pushes (``mpesa.stk``) and reversals (``mpesa.refund``).

A push is sent once: a row whose payment already has Daraja's checkout id (the worker died after the push was
accepted) is not pushed again but left to the reconciliation's query (Daraja refuses a second identical push within
two minutes anyway, and the payer would see two prompts). A busy answer (a subscriber lock, spike arrest) is tried
again later; a refusal ends the payment as failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from mita.outbox.senders import Message, SendError
from mita.vend.errors import VendError

from ..hooks import HookSecret
from ..payments import Payments
from .client import Daraja

STK, REFUND = "mpesa.stk", "mpesa.refund"


class DarajaSender:
    def __init__(
        self, payments: Payments, daraja: Daraja, hooks: HookSecret, public_url: str, clock: Callable[[], dt.datetime]
    ) -> None:
        self.payments = payments
        self.daraja = daraja
        self.hooks = hooks
        self.public_url = public_url
        self.clock = clock

    def send(self, message: Message) -> None:
        try:
            if message.channel == REFUND:
                self._refund(int(message.payload["payment_id"]))
            else:
                self._push(int(message.payload["payment_id"]))
        except VendError as exc:
            raise SendError(exc.code, permanent=exc.code not in ("mpesa_busy", "mpesa_unavailable")) from None
        except (KeyError, TypeError, ValueError):
            raise SendError("payload without a payment id", permanent=True) from None

    def _push(self, payment_id: int) -> None:
        p = self.payments.get(payment_id)
        if p["status"] != "initiated" or p["checkout_id"]:
            return  # decided already, or pushed by a worker that died before it could say so: the query decides
        try:
            checkout = self.daraja.stk_push(
                phone=p["deliver_to"] or p["payer"], amount=p["amount"], reference=p["provider_ref"],
                callback_url=self.hooks.path(self.public_url, "ke1/stk"), at=self.clock(),
            )  # fmt: skip
        except VendError as exc:
            if exc.code == "mpesa_refused":
                self.payments.collected(p["provider"], code=p["provider_ref"], outcome="failed", detail=str(exc)[:200],
                                        source="stk_push", body={"error": str(exc)[:200]})  # fmt: skip
                return
            raise
        self.payments.set_checkout(payment_id, checkout)

    def _refund(self, payment_id: int) -> None:
        p = self.payments.get(payment_id)
        if p["status"] != "refund_pending" or p["refund_ref"]:
            return
        if not p["receipt"]:
            self.payments.move(payment_id, "flagged", detail="refund asked, but the payment has no receipt")
            return
        conversation = self.daraja.reverse(
            receipt=p["receipt"], amount=p["amount"], result_url=self.hooks.path(self.public_url, "ke1/result"),
            timeout_url=self.hooks.path(self.public_url, "ke1/timeout"), remarks=f"refund {p['provider_ref']}",
        )  # fmt: skip
        self.payments.note_refund(payment_id, conversation)
