"""A fake Daraja for tests, benchmarks and the demo: it keeps a ledger and makes real HTTP callbacks, with faults.

No installable peer does this (``daraja-mock`` sends no callbacks, has no C2B, and is not open source), so Mita
ships its own. It speaks the parts of Daraja Mita uses, as Daraja shapes them (string and integer result codes,
``Balance`` without a value, masked payer numbers), and injects, by a seeded policy, what the field does: callbacks
sent twice (at once or later), dropped (the money is in the ledger, the callback never comes: only the pull finds
it), delayed (so they arrive out of order), and forged confirmations on demand.

Daraja's side: ``GET /oauth/v1/generate``, ``POST /mpesa/c2b/v{1,2}/registerurl``, ``/mpesa/stkpush/v1/processrequest``,
``/mpesa/stkpushquery/v1/query``, ``/pulltransactions/v1/query``, ``/mpesa/transactionstatus/v1/query``,
``/mpesa/reversal/v1/request``.

The control side (for a test or the benchmark, plays the customers):

- ``POST /fake/c2b`` ``{"msisdn", "amount" (shillings), "bill_ref"}``: a customer pays the paybill: validation (if
  URLs are registered), then the confirmation callback; answers ``{"trans_id", "accepted"}``;
- ``POST /fake/forge`` ``{"amount", "bill_ref"}``: a confirmation for money never paid (in no ledger, no pull);
- ``POST /fake/outcome`` ``{"phone", "code"}``: the result code pushes to this phone end with (default 0, paid);
- ``GET /fake/ledger``: the completed payments (``trans_id``, ``amount`` in cents, ``bill_ref``, ``kind``,
  ``reversed``);
- ``GET /fake/stats``: payments, callbacks sent, dropped, duplicated, forged, refused by validation, in flight,
  pushes, results dropped (``Faults.reversal_drop_rate``: a reversal's result lost, for the Transaction Status path).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SHORTCODE, PASSKEY = "174379", "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"  # the sandbox's
PAGE = 100


@dataclass
class Faults:
    """The seeded fault policy of the callbacks."""

    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    delay_ms: int = 0  # each callback waits a random 0..delay_ms: they overtake each other
    seed: int = 1
    reversal_drop_rate: float = 0.0  # a reversal's result never sent (a Transaction Status then tells)


@dataclass
class Ledger:
    """The fake's state: what was paid, what was pushed, what it sent."""

    faults: Faults
    shortcode: str = SHORTCODE
    passkey: str = PASSKEY
    validation_url: str = ""
    confirmation_url: str = ""
    paid: list[dict[str, Any]] = field(default_factory=list)
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    counter: int = 0

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.faults.seed)
        for name in (
            "payments",
            "callbacks",
            "dropped",
            "duplicated",
            "forged",
            "refused",
            "in_flight",
            "pushes",
            "results_dropped",
        ):
            self.stats.setdefault(name, 0)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter:08d}"[-10:]


def _mask(msisdn: str) -> str:
    return f"{msisdn[:4]} ***** {msisdn[-3:]}" if len(msisdn) > 7 else "***"


def _now() -> str:
    return dt.datetime.now().strftime("%Y%m%d%H%M%S")


def build_app(ledger: Ledger) -> Starlette:
    client: dict[str, httpx.AsyncClient] = {}
    tasks: set[asyncio.Task[None]] = set()

    def http() -> httpx.AsyncClient:
        if "c" not in client:
            client["c"] = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32))
        return client["c"]

    async def post(url: str, body: Mapping[str, Any], delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            await http().post(url, json=body)
            ledger.stats["callbacks"] += 1
        except httpx.HTTPError:
            ledger.stats["callbacks_failed"] = ledger.stats.get("callbacks_failed", 0) + 1
        finally:
            ledger.stats["in_flight"] -= 1

    def callback(url: str, body: Mapping[str, Any], *, faults: bool = True) -> None:
        """Send (or drop, or double) one callback, after the policy's delay."""
        f, rnd = ledger.faults, ledger.rnd
        if faults and rnd.random() < f.drop_rate:
            ledger.stats["dropped"] += 1
            return
        copies = 2 if faults and rnd.random() < f.duplicate_rate else 1
        ledger.stats["duplicated"] += copies - 1
        for _ in range(copies):
            ledger.stats["in_flight"] += 1
            task = asyncio.get_running_loop().create_task(post(url, body, rnd.uniform(0, f.delay_ms) / 1000))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ Daraja's side

    async def oauth(request: Request) -> JSONResponse:
        if not request.headers.get("authorization", "").startswith("Basic "):
            return JSONResponse({"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}, 400)
        return JSONResponse({"access_token": "fake" + ledger.next_id("T"), "expires_in": "3599"})

    async def register(request: Request) -> JSONResponse:
        b = await body_of(request)
        ledger.confirmation_url, ledger.validation_url = (
            str(b.get("ConfirmationURL", "")),
            str(b.get("ValidationURL", "")),
        )
        return JSONResponse(
            {"OriginatorCoversationID": ledger.next_id("R"), "ResponseCode": "0", "ResponseDescription": "Success"}
        )

    async def stk_push(request: Request) -> JSONResponse:
        b = await body_of(request)
        stamp = str(b.get("Timestamp", ""))
        expected = base64.b64encode(f"{ledger.shortcode}{ledger.passkey}{stamp}".encode()).decode()
        if b.get("Password") != expected:
            return JSONResponse(
                {"requestId": "x", "errorCode": "500.001.1001", "errorMessage": "Wrong credentials"}, 500
            )
        ref = str(b.get("AccountReference", ""))
        if len(ref) > 12:
            return JSONResponse(
                {"requestId": "x", "errorCode": "400.002.02", "errorMessage": "Invalid AccountReference"}, 400
            )
        checkout = "ws_CO_" + ledger.next_id("C")
        phone, amount = str(b.get("PhoneNumber", "")), int(b.get("Amount", 0))
        code = ledger.outcomes.get(phone, "0")
        push = {
            "phone": phone,
            "amount": amount * 100,
            "ref": ref,
            "code": code,
            "done": False,
            "receipt": None,
            "url": str(b.get("CallBackURL", "")),
        }
        ledger.pushes[checkout] = push
        ledger.stats["pushes"] += 1
        ledger.stats["in_flight"] += 1  # the prompt on the phone: settled in a moment
        asyncio.get_running_loop().call_later(0.05, _settle, checkout)
        return JSONResponse(
            {
                "MerchantRequestID": ledger.next_id("M"),
                "CheckoutRequestID": checkout,
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            }
        )

    def _settle(checkout: str) -> None:
        """The payer answered the prompt: the push's outcome, its ledger entry if paid, and its callback."""
        push = ledger.pushes[checkout]
        push["done"] = True
        ledger.stats["in_flight"] -= 1
        cb: dict[str, Any] = {"MerchantRequestID": "m", "CheckoutRequestID": checkout, "ResultCode": int(push["code"])}
        if push["code"] == "0":
            receipt = ledger.next_id("S")
            push["receipt"] = receipt
            ledger.paid.append(
                {
                    "trans_id": receipt,
                    "amount": push["amount"],
                    "bill_ref": push["ref"],
                    "kind": "stk",
                    "msisdn": push["phone"],
                    "at": _now(),
                    "reversed": False,
                }
            )
            ledger.stats["payments"] += 1
            cb["ResultDesc"] = "The service request is processed successfully."
            cb["CallbackMetadata"] = {
                "Item": [
                    {"Name": "Amount", "Value": push["amount"] // 100},
                    {"Name": "MpesaReceiptNumber", "Value": receipt},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": int(_now())},
                    {"Name": "PhoneNumber", "Value": int(push["phone"]) if push["phone"].isdigit() else push["phone"]},
                ]
            }
        else:
            cb["ResultDesc"] = {"1032": "Request cancelled by user", "1037": "DS timeout user cannot be reached"}.get(
                push["code"], "failed"
            )
        callback(push["url"], {"Body": {"stkCallback": cb}})

    async def stk_query(request: Request) -> JSONResponse:
        b = await body_of(request)
        checkout = str(b.get("CheckoutRequestID", ""))
        push = ledger.pushes.get(checkout)
        if push is None or not push["done"]:
            return JSONResponse(
                {"requestId": "x", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"},
                500,
            )
        return JSONResponse(
            {
                "ResponseCode": "0",
                "ResponseDescription": "accepted",
                "MerchantRequestID": "m",
                "CheckoutRequestID": checkout,
                "ResultCode": str(push["code"]),
                "ResultDesc": "done",
            }
        )

    async def pull(request: Request) -> JSONResponse:
        b = await body_of(request)
        offset = int(str(b.get("OffSetValue", "0")) or 0)
        start, end = str(b.get("StartDate", "")), str(b.get("EndDate", "9999"))

        def stamp(text: str) -> str:
            return "".join(c for c in text if c.isdigit())

        rows = [p for p in ledger.paid if stamp(start) <= p["at"] <= stamp(end) or not start]
        page = rows[offset : offset + PAGE]
        if not page:
            return JSONResponse(
                {"ResponseRefID": "x", "ResponseCode": "1001", "ResponseMessage": "No records found", "Response": [[]]}
            )
        return JSONResponse(
            {
                "ResponseRefID": "x",
                "ResponseCode": "1000",
                "ResponseMessage": "Success",
                "Response": [
                    [
                        {
                            "transactionId": p["trans_id"],
                            "trxDate": p["at"],
                            "msisdn": int(p["msisdn"]) if p["msisdn"].isdigit() else p["msisdn"],
                            "transactiontype": "c2b-pay-bill-debit",
                            "billreference": p["bill_ref"],
                            "amount": f"{p['amount'] / 100:.2f}",
                            "organizationname": "Customer",
                        }
                        for p in page
                    ]
                ],
            }
        )

    def _result(
        url: str,
        code: Any,
        desc: str,
        transaction: str,
        params: list[dict[str, Any]],
        conversation: str = "",
        lossy: bool = False,
    ) -> None:
        """An asynchronous result, half a second or more after the request (as Daraja's come); a reversal's may be
        lost."""
        rate = ledger.faults.reversal_drop_rate if lossy else 0.0
        if rate and ledger.rnd.random() < rate:
            ledger.stats["results_dropped"] += 1
            return
        ledger.stats["in_flight"] += 1
        body = {
            "Result": {
                "ResultType": 0,
                "ResultCode": code,
                "ResultDesc": desc,
                "OriginatorConversationID": ledger.next_id("O"),
                "ConversationID": conversation or ledger.next_id("A"),
                "TransactionID": transaction,
                "ResultParameters": {"ResultParameter": params},
            }
        }
        task = asyncio.get_running_loop().create_task(post(url, body, 0.5 + ledger.rnd.uniform(0, 0.5)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def status(request: Request) -> JSONResponse:
        b = await body_of(request)
        found = next((p for p in ledger.paid if p["trans_id"] == b.get("TransactionID")), None)
        if found is None:
            _result(str(b.get("ResultURL")), "R000001", "The transaction is not found", "SKE0000000", [])
        else:
            _result(
                str(b.get("ResultURL")),
                0,
                "The service request is processed successfully.",
                found["trans_id"],
                [
                    {"Key": "ReceiptNo", "Value": found["trans_id"]},
                    {"Key": "TransactionStatus", "Value": "Reversed" if found["reversed"] else "Completed"},
                    {"Key": "Amount", "Value": found["amount"] / 100},
                ],
            )
        return JSONResponse(
            {
                "OriginatorConversationID": "o",
                "ConversationID": ledger.next_id("A"),
                "ResponseCode": "0",
                "ResponseDescription": "Accept the service request successfully.",
            }
        )

    async def reversal(request: Request) -> JSONResponse:
        b = await body_of(request)
        found = next((p for p in ledger.paid if p["trans_id"] == b.get("TransactionID")), None)
        conversation = ledger.next_id("A")
        if found is None or found["reversed"]:
            _result(
                str(b.get("ResultURL")),
                "R000002",
                "The OriginalTransactionID is invalid.",
                "SKE0000000",
                [],
                conversation,
                lossy=True,
            )
        else:
            found["reversed"] = True
            _result(
                str(b.get("ResultURL")),
                0,
                "The service request is processed successfully.",
                ledger.next_id("V"),
                [
                    {"Key": "OriginalTransactionID", "Value": found["trans_id"]},
                    {"Key": "Amount", "Value": found["amount"] / 100},
                ],
                conversation,
                lossy=True,
            )
        return JSONResponse(
            {
                "OriginatorConversationID": "o",
                "ConversationID": conversation,
                "ResponseCode": "0",
                "ResponseDescription": "Accept the service request successfully.",
            }
        )

    # ------------------------------------------------------------------ the control side

    def c2b_body(trans_id: str, amount: int, bill_ref: str, msisdn: str) -> dict[str, Any]:
        return {
            "TransactionType": "Pay Bill",
            "TransID": trans_id,
            "TransTime": _now(),
            "TransAmount": f"{amount / 100:.2f}",
            "BusinessShortCode": ledger.shortcode,
            "BillRefNumber": bill_ref,
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": _mask(msisdn),
            "FirstName": "John",
            "MiddleName": "",
            "LastName": "",
        }

    async def pay(request: Request) -> JSONResponse:
        b = await body_of(request)
        msisdn, bill_ref = str(b.get("msisdn", "254708374149")), str(b.get("bill_ref", ""))
        amount = round(float(b.get("amount", 0)) * 100)
        trans_id = ledger.next_id("Q")
        body = c2b_body(trans_id, amount, bill_ref, msisdn)
        if ledger.validation_url:
            try:
                answer = (await http().post(ledger.validation_url, json={**body, "TransID": ""}, timeout=8)).json()
                accepted = str(answer.get("ResultCode")) == "0"
            except (httpx.HTTPError, ValueError, AttributeError):
                accepted = True  # no answer in time: the registered default action, Completed
            if not accepted:
                ledger.stats["refused"] += 1
                return JSONResponse({"trans_id": None, "accepted": False})
        ledger.paid.append(
            {
                "trans_id": trans_id,
                "amount": amount,
                "bill_ref": bill_ref,
                "kind": "c2b",
                "msisdn": msisdn,
                "at": _now(),
                "reversed": False,
            }
        )
        ledger.stats["payments"] += 1
        if ledger.confirmation_url:
            callback(ledger.confirmation_url, body)
        return JSONResponse({"trans_id": trans_id, "accepted": True})

    async def forge(request: Request) -> JSONResponse:
        b = await body_of(request)
        trans_id = "F" + ledger.next_id("F")[1:]
        ledger.stats["forged"] += 1
        callback(
            ledger.confirmation_url,
            c2b_body(trans_id, round(float(b.get("amount", 0)) * 100), str(b.get("bill_ref", "")), "254700000000"),
            faults=False,
        )
        return JSONResponse({"trans_id": trans_id})

    async def outcome(request: Request) -> JSONResponse:
        b = await body_of(request)
        ledger.outcomes[str(b.get("phone", ""))] = str(b.get("code", "0"))
        return JSONResponse({"ok": True})

    async def show_ledger(request: Request) -> JSONResponse:
        return JSONResponse(ledger.paid)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(ledger.stats)

    async def closing() -> None:
        if tasks:
            await asyncio.wait(set(tasks), timeout=5)
        if "c" in client:
            await client["c"].aclose()

    routes = [
        Route("/oauth/v1/generate", oauth, methods=["GET"]),
        Route("/mpesa/c2b/v1/registerurl", register, methods=["POST"]),
        Route("/mpesa/c2b/v2/registerurl", register, methods=["POST"]),
        Route("/mpesa/stkpush/v1/processrequest", stk_push, methods=["POST"]),
        Route("/mpesa/stkpushquery/v1/query", stk_query, methods=["POST"]),
        Route("/pulltransactions/v1/query", pull, methods=["POST"]),
        Route("/mpesa/transactionstatus/v1/query", status, methods=["POST"]),
        Route("/mpesa/reversal/v1/request", reversal, methods=["POST"]),
        Route("/fake/c2b", pay, methods=["POST"]),
        Route("/fake/forge", forge, methods=["POST"]),
        Route("/fake/outcome", outcome, methods=["POST"]),
        Route("/fake/ledger", show_ledger, methods=["GET"]),
        Route("/fake/stats", stats, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await closing()

    return Starlette(routes=routes, lifespan=lifespan)


@dataclass
class Served:
    """A fake Daraja running on a thread of its own."""

    url: str
    ledger: Ledger
    stop: Callable[[], None]


def serve(port: int = 0, faults: Faults | None = None, host: str = "127.0.0.1") -> Served:
    """Start the fake on ``host:port`` (0: a free port) in a thread; ``Served.stop()`` ends it."""
    import uvicorn

    ledger = Ledger(faults or Faults())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(build_app(ledger), log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-daraja", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return Served(f"http://{host}:{sock.getsockname()[1]}", ledger, stop)
