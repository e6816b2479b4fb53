"""SMS out through Kannel's HTTP ``sendsms`` interface, with delivery reports back to Mita.

Each outbox row of channel ``sms`` (a token receipt, a low-credit warning, a key change, an answer to an inbound
SMS) becomes one ``sms_messages`` row before Kannel is called, so that its id can ride in the ``dlr-url``: Kannel's
sendsms answers no message id, and Mita's own id is the only reliable way to match a report to its message.

Kannel's answers (its user guide): 202 ``0: Accepted for delivery`` or ``3: Queued for later delivery`` (no SMSC
connected: kept in its store) are sent; a 4xx (a refused login, a bad number) cannot change: dead; a 503, a refused
connection or a timeout are tried again later. sendsms has no idempotency key, so a retry after a lost answer may
send twice: the same text (a token SMS twice is harmless; the meter refuses a used token).

sendsms takes the login, the text (a token) and the dlr-url (the callback secret) in its query string, and httpx
logs every request's URL at INFO, which ``mita worker`` shows: :class:`HideQuery` cuts the query from those lines.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import Engine, select, update

from mita.outbox.senders import Message, SendError
from mita.vend.schema import sms_messages

from ..hooks import HookSecret
from ..payments import dialect_of

#: dlr-mask: delivered to the phone (1), not delivered (2), at the SMSC (8), not at the SMSC (16)
DLR_MASK = 1 | 2 | 8 | 16


class HideQuery(logging.Filter):
    """On httpx's logger: a sendsms request's line names the path only, never the password, text or secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_hidden(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _hidden(url: httpx.URL) -> httpx.URL:
    return url.copy_with(query=None) if url.path.endswith("/sendsms") else url


_HIDE = HideQuery()


def kind_of(message: Message) -> str:
    payload: Any = message.payload
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if isinstance(kind, str) and kind:
        return kind[:20]
    key = message.dedupe_key
    if "campaign" in key or ":kc:" in key:
        return "key_change"
    if "low_credit" in key:
        return "low_credit"
    return "notice"


class KannelSender:
    def __init__(
        self,
        engine: Engine,
        url: str,
        user: str,
        password: str,
        sender: str,
        hooks: HookSecret,
        public_url: str,
        clock: Callable[[], dt.datetime],
        *,
        timeout: float = 10.0,
    ) -> None:
        self.engine = engine
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/cgi-bin/sendsms") else "/cgi-bin/sendsms")
        self._login = (user, password)
        self.sender = sender
        self.dlr_base = hooks.path(public_url, "kannel/dlr")
        self.clock = clock
        self.http = httpx.Client(timeout=timeout)
        logging.getLogger("httpx").addFilter(_HIDE)  # once: the same filter object is added once

    def _row(self, message: Message) -> int:
        """The message's ``sms_messages`` row (made once per dedupe key; a resend counts a submit)."""
        payload: Any = message.payload
        at = self.clock()
        row = {"dedupe_key": message.dedupe_key, "phone": message.recipient[:30], "kind": kind_of(message),
               "payment_id": payload.get("payment_id") if isinstance(payload, dict) else None,
               "status": "submitted", "submits": 0, "created_at": at, "updated_at": at}  # fmt: skip
        m = sms_messages.c
        with self.engine.begin() as conn:
            conn.execute(dialect_of(conn).insert(sms_messages).values(row).on_conflict_do_nothing())
            conn.execute(update(sms_messages).where(m.dedupe_key == message.dedupe_key).values(submits=m.submits + 1))
            return int(conn.execute(select(m.id).where(m.dedupe_key == message.dedupe_key)).scalar_one())

    def send(self, message: Message) -> None:
        payload: Any = message.payload
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text or not message.recipient:
            raise SendError("an SMS needs a phone and a text", permanent=True)
        sms_id = self._row(message)
        dlr = f"{self.dlr_base}?d={sms_id}&type=%d&reply=%A"
        params = {"username": self._login[0], "password": self._login[1], "from": self.sender,
                  "to": message.recipient, "text": text, "dlr-mask": str(DLR_MASK), "dlr-url": dlr}  # fmt: skip
        try:
            r = self.http.get(self.url, params=params)
        except httpx.HTTPError as exc:  # the class only: the URL holds the password
            raise SendError(f"kannel: {type(exc).__name__}") from None
        if r.status_code in (200, 202) and r.text.lstrip()[:1] in ("0", "3"):
            return
        permanent = 400 <= r.status_code < 500
        raise SendError(f"kannel: HTTP {r.status_code} {quote(r.text[:60])}", permanent=permanent)

    def close(self) -> None:
        self.http.close()
