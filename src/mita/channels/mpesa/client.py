"""Mita's side of Daraja's API: OAuth, STK push and query, Pull, Transaction Status, Reversal.

One access token per process and app, refreshed a minute before it expires or when Daraja calls it invalid
(Daraja's FAQ: each token request invalidates the previous one, so workers must not each ask per call). Errors
name the operation and Daraja's status or error code, never a secret (consumer secret, passkey, credential).
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from mita.settings import ChannelSettings
from mita.vend.errors import VendError

from . import messages

TOKEN_MARGIN_S = 60
INVALID_TOKEN = frozenset({"404.001.03", "400.003.01", "401.003.01"})
#: Synchronous refusals worth a later try (a lock on the subscriber, spike arrest, quota).
BUSY = frozenset({"500.001.1001", "500.003.02", "500.003.03"})


@dataclass(frozen=True)
class Credentials:
    shortcode: str
    consumer_key: str
    consumer_secret: str
    passkey: str
    initiator: str = ""
    credential: str = ""

    def __repr__(self) -> str:  # the secrets never show
        return f"Credentials(shortcode={self.shortcode!r})"

    @classmethod
    def from_settings(cls, s: ChannelSettings) -> Credentials:
        def secret(value: Any) -> str:
            return value.get_secret_value() if value is not None else ""

        return cls(
            s.mpesa_shortcode, secret(s.mpesa_consumer_key), secret(s.mpesa_consumer_secret),
            secret(s.mpesa_passkey), s.mpesa_initiator, secret(s.mpesa_credential),
        )  # fmt: skip


class Daraja:
    """A small, thread-safe client over one pooled HTTP connection set."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,  # tests: Daraja's answers without a server
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise VendError("channels_misconfigured", "MITA_MPESA_URL is http(s)://host[:port]")
        self.base = base_url.rstrip("/")
        self.creds = credentials
        self.http = httpx.Client(base_url=self.base, timeout=timeout, transport=transport)
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ plumbing

    def token(self, *, fresh: bool = False) -> str:
        with self._lock:
            if not fresh and self._token is not None and time.monotonic() < self._token[1]:
                return self._token[0]
            basic = base64.b64encode(f"{self.creds.consumer_key}:{self.creds.consumer_secret}".encode()).decode()
            body = self._call("GET", "/oauth/v1/generate?grant_type=client_credentials", None, f"Basic {basic}")
            try:
                value, lives = str(body["access_token"]), float(body.get("expires_in", 3599))
            except (KeyError, TypeError, ValueError):
                raise VendError("mpesa_unavailable", "Daraja's token answer has no access_token") from None
            self._token = (value, time.monotonic() + max(lives - TOKEN_MARGIN_S, 1))
            return value

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None, auth: str) -> dict[str, Any]:
        what = path.split("?")[0]
        try:
            r = self.http.request(method, path, json=body, headers={"Authorization": auth})
        except httpx.HTTPError as exc:
            raise VendError("mpesa_unavailable", f"{what}: {type(exc).__name__}") from None
        try:
            answer = r.json()
        except ValueError:
            raise VendError("mpesa_unavailable", f"{what}: HTTP {r.status_code}, not JSON") from None
        if not isinstance(answer, dict):
            raise VendError("mpesa_unavailable", f"{what}: HTTP {r.status_code}, not an object")
        if r.status_code >= 400 and "errorCode" not in answer:
            raise VendError("mpesa_unavailable", f"{what}: HTTP {r.status_code}")
        return answer

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A POST with the bearer token; asked again once with a new token if Daraja says it is invalid."""
        answer = self._call("POST", path, body, f"Bearer {self.token()}")
        if answer.get("errorCode") in INVALID_TOKEN:
            answer = self._call("POST", path, body, f"Bearer {self.token(fresh=True)}")
        return answer

    def password(self, at: dt.datetime) -> tuple[str, str]:
        """The push's ``Password`` (base64 of shortcode, passkey and timestamp) and that timestamp."""
        stamp = at.strftime("%Y%m%d%H%M%S")
        raw = f"{self.creds.shortcode}{self.creds.passkey}{stamp}".encode()
        return base64.b64encode(raw).decode(), stamp

    # ------------------------------------------------------------------ operations

    def stk_push(self, *, phone: str, amount: int, reference: str, callback_url: str, at: dt.datetime) -> str:
        """Ask the payer's phone to approve a payment; Daraja's CheckoutRequestID. ``amount`` in cents (Daraja
        takes whole shillings: cents are rounded up, never down)."""
        password, stamp = self.password(at)
        answer = self.post(
            "/mpesa/stkpush/v1/processrequest",
            {
                "BusinessShortCode": self.creds.shortcode, "Password": password, "Timestamp": stamp,
                "TransactionType": "CustomerPayBillOnline", "Amount": -(-amount // 100), "PartyA": phone,
                "PartyB": self.creds.shortcode, "PhoneNumber": phone, "CallBackURL": callback_url,
                "AccountReference": reference[:12], "TransactionDesc": "Prepaid"[:13],
            },
        )  # fmt: skip
        code = str(answer.get("errorCode", ""))
        if code:
            raise VendError("mpesa_busy" if code in BUSY else "mpesa_refused", f"STK push: {code}")
        if str(answer.get("ResponseCode")) != "0" or not answer.get("CheckoutRequestID"):
            raise VendError("mpesa_refused", f"STK push: ResponseCode {str(answer.get('ResponseCode'))[:20]}")
        return str(answer["CheckoutRequestID"])

    def stk_query(self, checkout_id: str, at: dt.datetime) -> messages.StkResult:
        password, stamp = self.password(at)
        body = {"BusinessShortCode": self.creds.shortcode, "Password": password, "Timestamp": stamp,
                "CheckoutRequestID": checkout_id}  # fmt: skip
        return messages.stk_query_answer(self.post("/mpesa/stkpushquery/v1/query", body))

    def pull(self, start: dt.datetime, end: dt.datetime, offset: int = 0) -> list[messages.PullRow]:
        body = {"ShortCode": self.creds.shortcode, "StartDate": f"{start:%Y-%m-%d %H:%M:%S}",
                "EndDate": f"{end:%Y-%m-%d %H:%M:%S}", "OffSetValue": str(offset)}  # fmt: skip
        return messages.pull_page(self.post("/pulltransactions/v1/query", body))

    def _initiated(self, answer: Mapping[str, Any], what: str) -> str:
        if answer.get("errorCode") or str(answer.get("ResponseCode")) != "0":
            code = str(answer.get("errorCode") or answer.get("ResponseCode"))[:20]
            raise VendError("mpesa_busy" if code in BUSY else "mpesa_refused", f"{what}: {code}")
        return str(answer.get("ConversationID") or answer.get("OriginatorConversationID") or "")

    def reverse(self, *, receipt: str, amount: int, result_url: str, timeout_url: str, remarks: str) -> str:
        """Ask for a payment's reversal; the ConversationID (the outcome comes to ``result_url``)."""
        answer = self.post(
            "/mpesa/reversal/v1/request",
            {
                "Initiator": self.creds.initiator, "SecurityCredential": self.creds.credential,
                "CommandID": "TransactionReversal", "TransactionID": receipt, "Amount": -(-amount // 100),
                "ReceiverParty": self.creds.shortcode, "RecieverIdentifierType": "11", "ResultURL": result_url,
                "QueueTimeOutURL": timeout_url, "Remarks": remarks[:100] or "refund", "Occasion": "",
            },
        )  # fmt: skip
        return self._initiated(answer, "reversal")

    def transaction_status(self, receipt: str, result_url: str, timeout_url: str) -> str:
        answer = self.post(
            "/mpesa/transactionstatus/v1/query",
            {
                "Initiator": self.creds.initiator, "SecurityCredential": self.creds.credential,
                "CommandID": "TransactionStatusQuery", "TransactionID": receipt, "PartyA": self.creds.shortcode,
                "IdentifierType": "4", "ResultURL": result_url, "QueueTimeOutURL": timeout_url,
                "Remarks": "reconciliation", "Occasion": "",
            },
        )  # fmt: skip
        return self._initiated(answer, "transaction status")

    def register_urls(self, confirmation_url: str, validation_url: str) -> None:
        answer = self.post(
            "/mpesa/c2b/v2/registerurl",
            {"ShortCode": self.creds.shortcode, "ResponseType": "Completed", "ConfirmationURL": confirmation_url,
             "ValidationURL": validation_url},
        )  # fmt: skip
        if str(answer.get("ResponseCode")) != "0":
            code = str(answer.get("errorCode") or answer.get("ResponseCode"))[:20]
            raise VendError("mpesa_refused", f"URL registration: {code}")
