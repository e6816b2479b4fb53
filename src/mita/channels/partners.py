"""Partners (banking apps, aggregators): their vends and the vends' deliveries posted to their webhooks, signed, so
a partner's app shows the token as soon as Mita made it.

A partner is a vendor with a webhook name (``vendors.webhook``, set by :func:`set_webhook`); the name's URL comes
from ``MITA_WEBHOOK_URLS`` (``name=url`` pairs) and every body is signed with ``MITA_WEBHOOK_SECRET`` by the
outbox's :class:`~mita.outbox.senders.WebhookSender` (``X-Mita-Signature: sha256=<hex HMAC>``, the event's id as
``Idempotency-Key``: a partner drops a repeat, since after a crash an event may come twice, never zero times).

| event | when | outbox channel |
|---|---|---|
| ``vend.created`` | every vend (its row, written in the vend's own transaction) | ``receipt`` |
| ``vend.delivered``, ``vend.delivery_failed`` | a final delivery report (:func:`queue_delivery_event`) | ``partner`` |

The sender (kind ``partner``) looks the vend's vendor up: no webhook, nothing to post (the row is done); a webhook
name with no URL configured is a dead row (a person fixes the configuration and requeues it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import Connection, Engine

from mita.outbox.queue import Outgoing, enqueue_many
from mita.outbox.senders import Message, SendError, WebhookSender
from mita.settings import Settings
from mita.vend import registry
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.service import VendingService
from mita.vend.walltime import with_offset

from .payments import READER, Payments

KIND = "partner"
#: The vend's own row (every vend writes one) and the channel of later events about it.
RECEIPT_CHANNEL, EVENT_CHANNEL = "receipt", "partner"
CREATED, DELIVERED, DELIVERY_FAILED = "vend.created", "vend.delivered", "vend.delivery_failed"


webhook_of = registry.webhook_of_vend  # the vend's vendor's webhook name (None: not a partner's vend)


class PartnerSender:
    """Posts a partner's events to its webhook, signed; every other vend's receipt row is done at once."""

    def __init__(self, engine: Engine, service: VendingService, poster: WebhookSender) -> None:
        self.engine = engine
        self.service = service
        self.poster = poster

    def send(self, message: Message) -> None:
        if message.vend_id is None:
            raise SendError("a partner event names its vend", permanent=True)
        with self.engine.connect() as conn:
            name = webhook_of(conn, message.vend_id)
        if name is None:
            return  # not a partner's vend: nothing to tell anyone
        if name not in self.poster.urls:
            raise SendError(f"no URL for webhook {name[:40]!r} in MITA_WEBHOOK_URLS", permanent=True)
        if message.channel == RECEIPT_CHANNEL:
            event = self.created(message.vend_id)
        elif isinstance(message.payload, dict) and "event" in message.payload:
            event = message.payload
        else:
            raise SendError("a partner event without its body", permanent=True)
        self.poster.send(dataclasses.replace(message, recipient=name, payload=event, dedupe_key=event["id"]))

    def created(self, vend_id: str) -> dict[str, Any]:
        """``vend.created``: the vend as its vendor got it (tokens in entry order, the receipt)."""
        try:
            vend = self.service.get_vend(READER, vend_id)
        except VendError as exc:
            raise SendError(exc.code, permanent=exc.code == "not_found") from None
        tokens = [{"kind": t["kind"], "digits": t["digits"], "units": t["units"]} for t in vend["tokens"]]
        return {
            "id": f"{CREATED}:{vend_id}", "event": CREATED, "vend_id": vend_id, "meter": vend["meter"],
            "created_at": vend["created_at"], "status": vend.get("status"), "tokens": tokens,
            "receipt": vend["receipt"],
        }  # fmt: skip


def queue_delivery_event(
    conn: Connection,
    vend_id: str,
    at: dt.datetime,
    *,
    delivered: bool = True,
    via: str = "sms",
    detail: str | None = None,
) -> bool:
    """Queue ``vend.delivered`` (or ``vend.delivery_failed``) for the partner whose vend it is, in the caller's
    transaction (the one that records the delivery report); False if the vend is not a partner's, or the event is
    queued already. The SMS channel calls it when a delivery report is final::

        queue_delivery_event(conn, vend_id, at, delivered=status == "delivered", via="sms", detail=report)
    """
    name = webhook_of(conn, vend_id)
    if name is None:
        return False
    event = DELIVERED if delivered else DELIVERY_FAILED
    key = f"{event}:{vend_id}"
    payload = {"id": key, "event": event, "vend_id": vend_id, "via": via,
               "at": with_offset(at), "detail": (detail or "")[:200] or None}  # fmt: skip
    return enqueue_many(conn, [Outgoing(EVENT_CHANNEL, name, key, payload, at, vend_id=vend_id)]) == 1


def configured(settings: Settings) -> dict[str, str]:
    """The webhook names and URLs of ``MITA_WEBHOOK_URLS`` (``name=url`` pairs, comma or space separated)."""
    found: dict[str, str] = {}
    for item in re.split(r"[,\s]+", settings.webhook_urls.strip()):
        name, sep, url = item.partition("=")
        if sep and name and url:
            found[name] = url
    return found


def set_webhook(
    engine: Engine, caller: Caller, vendor_id: int, name: str | None, known: Collection[str], at: dt.datetime
) -> dict[str, Any]:
    """Make a vendor a partner (its events go to the webhook ``name``, one of ``known``: the configured names), or
    not (``None``); admin only, audited, by the vending service's registry. For ``PUT /v1/vendors/{id}/webhook``."""
    if name is not None and name not in known:
        caller.require("admin")
        raise VendError("invalid_request", f"no webhook named {name[:40]!r}: name one of MITA_WEBHOOK_URLS")
    return registry.Registry(engine, lambda: at).set_webhook(caller, vendor_id, name)


def install(payments: Payments, settings: Settings, register: Callable[..., Any]) -> dict[str, str]:
    """With webhooks configured (``MITA_WEBHOOK_URLS``): every vend's receipt row, and the partners' delivery
    events, go through the ``partner`` sender; without, nothing changes (receipts stay with the default sender)."""
    if not configured(settings):
        return {}
    register(KIND, lambda ctx: PartnerSender(ctx.engine, payments.service, WebhookSender.from_env(ctx.env)))
    return {RECEIPT_CHANNEL: KIND, EVENT_CHANNEL: KIND}
