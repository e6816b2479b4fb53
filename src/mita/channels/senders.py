"""The outbox senders of the channels, and what ``mita worker`` routes to them.

- ``payment`` (kind ``payment``): vends a received payment (:meth:`~.payments.Payments.vend`), queues its delivery;
- ``sms`` (kind ``kannel``; ``log`` without ``MITA_KANNEL_URL``): an SMS through Kannel (:mod:`.sms`);
- ``mpesa.stk``, ``mpesa.refund`` (kind ``mpesa``): asks Daraja to collect (STK push) or to reverse a payment;
- ``receipt`` (kind ``partner``, where vendors have webhooks): a vend posted to its vendor's webhook, signed.
"""

from __future__ import annotations

from collections.abc import Callable

from mita.outbox.senders import Message, Sender, SenderContext, SendError
from mita.settings import Settings
from mita.vend.errors import VendError

from . import mpesa, partners, sms
from .payments import TRANSIENT, VEND_CHANNEL, Payments

Register = Callable[[str, Callable[[SenderContext], Sender]], None]


class PaymentSender:
    """The ``payment`` channel: one row per received payment (dedupe key ``pay:<id>``), vended once."""

    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    def send(self, message: Message) -> None:
        try:
            self.payments.vend(int(message.payload["payment_id"]))
        except VendError as exc:
            raise SendError(exc.code, permanent=exc.code not in TRANSIENT) from None
        except (KeyError, TypeError, ValueError):
            raise SendError("payload without a payment id", permanent=True) from None


def install(payments: Payments, settings: Settings, register: Register) -> dict[str, str]:
    """Register the channels' sender kinds; the routes (outbox channel -> kind) they add to the worker's."""
    register("payment", lambda ctx: PaymentSender(payments))
    routes = {VEND_CHANNEL: "payment"}
    routes.update(mpesa.install(payments, settings, register))
    routes.update(sms.install(payments, settings, register))
    routes.update(partners.install(payments, settings, register))
    return routes
