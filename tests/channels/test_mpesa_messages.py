"""Daraja's pure parts and Mita's client, without servers: the account references a payer types (meter numbers in
any spacing, purchase codes in any case) and the amounts Daraja writes read back exactly; the result-code table
says the same for an int and a string; random bytes give typed errors only; the client keeps one token, renews it
when Daraja calls it invalid, signs pushes as documented, never pushes a row twice and never shows a secret."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mita import sts
from mita.channels.hooks import HookSecret
from mita.channels.mpesa import messages
from mita.channels.mpesa.client import Credentials, Daraja
from mita.channels.mpesa.senders import STK, DarajaSender
from mita.channels.payments import Payments, purchase_code
from mita.vend.errors import VendError
from vend_fixtures import DRN, World

SECRETS = ("consumer-secret-xyz", "passkey-abc-123", "credential-qrs-789")
CREDS = Credentials("174379", "consumer-key", SECRETS[0], SECRETS[1], "api-op", SECRETS[2])
OUTCOMES = {"paid", "cancelled", "failed", "expired", "pending"}


def drn_of(body: str) -> str:
    return body + str(sts.luhn_digit(body))


DRNS = st.one_of(st.text("0123456789", min_size=10, max_size=10), st.text("0123456789", min_size=12, max_size=12)).map(
    drn_of
)


@settings(max_examples=200, deadline=None)
@given(DRNS, st.lists(st.sampled_from(["", " ", "-", "  "]), min_size=13, max_size=13))
def test_a_meter_number_in_any_spacing_is_that_meter(drn: str, gaps: list[str]) -> None:
    typed = "".join(d + g for d, g in zip(drn, gaps, strict=False))
    assert messages.account(typed) == (drn, None)
    wrong = drn[:-1] + str((int(drn[-1]) + 1) % 10)
    assert messages.account(wrong) == (None, None)  # a typo in the check digit is no meter


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_a_purchase_code_in_any_case_is_that_code(origin: str, lower: bool) -> None:
    code = purchase_code(origin)
    assert len(code) <= 12  # it fits an STK AccountReference
    typed = f" {code[:4]} {code[4:]} ".lower() if lower else code
    assert messages.account(typed) == (None, code)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=10**11))
def test_amounts_as_daraja_writes_them_read_back_exactly(cents: int) -> None:
    shillings = Decimal(cents) / 100
    assert messages.minor_units(f"{shillings:.2f}") == cents
    if cents % 100 == 0:
        assert messages.minor_units(cents // 100) == cents  # a JSON integer
        assert messages.minor_units(float(cents // 100)) == cents  # 1.0, as an STK callback's Amount


@pytest.mark.parametrize("code", sorted(messages.RESULTS))
def test_a_result_code_means_the_same_as_a_number_and_as_text(code: str) -> None:
    cb = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": int(code), "ResultDesc": "x"}}}
    if code == "0":  # a paid callback carries its receipt
        cb["Body"]["stkCallback"]["CallbackMetadata"] = {"Item": [{"Name": "MpesaReceiptNumber", "Value": "R1"}]}
    by_callback = messages.stk_callback(cb)
    by_query = messages.stk_query_answer({"CheckoutRequestID": "ws_CO_1", "ResultCode": code})
    assert by_callback.outcome == by_query.outcome in OUTCOMES
    assert {messages.RESULTS["1032"][0], messages.RESULTS["1037"][0], messages.RESULTS["4999"][0]} == {
        "cancelled",
        "expired",
        "pending",
    }


def test_an_unknown_result_code_fails_and_a_query_still_processing_waits() -> None:
    assert messages.stk_query_answer({"CheckoutRequestID": "c", "ResultCode": "SFC_IC0003"}).outcome == "failed"
    assert messages.stk_query_answer({"errorCode": "500.001.1001", "errorMessage": "being processed"}).outcome == (
        "pending"
    )
    with pytest.raises(VendError) as err:
        messages.stk_query_answer({"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"})
    assert err.value.code == "mpesa_unavailable"


def test_a_reversal_result_is_an_int_on_success_a_string_on_failure_and_a_status_names_the_reversed() -> None:
    ok = messages.result({"Result": {"ResultCode": 0, "ConversationID": "AG_1", "TransactionID": "V1"}})
    failed = messages.result({"Result": {"ResultCode": "R000002", "TransactionID": "SKE0000000"}})
    assert ok.ok and not failed.ok and not ok.is_status
    params = [{"Key": "ReceiptNo", "Value": "RKL51ZDR4F"}, {"Key": "TransactionStatus", "Value": "Reversed"}]
    status = messages.result({"Result": {"ResultCode": 0, "ResultParameters": {"ResultParameter": params}}})
    assert status.is_status and status.reversed_receipt == "RKL51ZDR4F"
    params[1]["Value"] = "Completed"
    completed = messages.result({"Result": {"ResultCode": "0", "ResultParameters": {"ResultParameter": params}}})
    assert completed.is_status and completed.reversed_receipt is None
    one = {"Key": "TransactionStatus", "Value": "Reversed"}  # a single parameter comes as an object, not a list
    assert messages.result({"Result": {"ResultCode": 0, "ResultParameters": {"ResultParameter": one}}}).is_status


def test_validation_answers_are_daraja_s() -> None:
    assert messages.ACCEPT == {"ResultCode": "0", "ResultDesc": "Accepted"}
    assert messages.refuse(messages.INVALID_ACCOUNT) == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    assert messages.refuse(messages.INVALID_AMOUNT)["ResultCode"] == "C2B00013"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_refused_with_a_typed_error(raw: bytes) -> None:
    try:
        body = json.loads(raw)
    except ValueError:
        return  # the route answers 400 and keeps the bytes as an event
    for parse in (messages.c2b, messages.stk_callback, messages.stk_query_answer, messages.result, messages.pull_page):
        try:
            parse(body)
        except VendError as exc:
            assert exc.code in ("mpesa_bad_message", "mpesa_unavailable")


# ---------------------------------------------------------------------------------------------------- the client


class FakeDaraja:
    """Daraja's answers as an httpx transport: ``answers[path]`` (a body, or a function of the request)."""

    def __init__(self, **answers: Any) -> None:
        self.answers: dict[str, Any] = {
            "/oauth/v1/generate": lambda r: {
                "access_token": f"tok{self.count('/oauth/v1/generate')}",
                "expires_in": "3599",
            },
            "/mpesa/stkpush/v1/processrequest": {"CheckoutRequestID": "ws_CO_1", "ResponseCode": "0"},
            **answers,
        }
        self.seen: list[httpx.Request] = []

    def count(self, path: str) -> int:
        return sum(r.url.path == path for r in self.seen)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.get(request.url.path)
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        if answer is None:
            return httpx.Response(404, json={"errorCode": "404.001.01", "errorMessage": "no such path"})
        status = 500 if "errorCode" in answer else 200
        return httpx.Response(status, json=answer)


def client(fake: FakeDaraja) -> Daraja:
    return Daraja("http://daraja.test", CREDS, transport=httpx.MockTransport(fake))


def push(d: Daraja) -> str:
    at = dt.datetime(2026, 12, 4, 10, 11, 12)
    return d.stk_push(phone="254708374149", amount=10_050, reference="PABCDEFGHIJ", callback_url="http://x/", at=at)


def test_one_token_for_many_calls_a_new_one_when_daraja_calls_it_invalid() -> None:
    invalid_once: list[str] = []

    def stk(request: httpx.Request) -> dict[str, str]:
        if request.headers["authorization"] == "Bearer tok1" and len(invalid_once) == 0 and len(fake.seen) > 4:
            invalid_once.append("x")
            return {"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}
        return {"CheckoutRequestID": "ws_CO_1", "ResponseCode": "0"}

    fake = FakeDaraja(**{"/mpesa/stkpush/v1/processrequest": stk})
    d = client(fake)
    for _ in range(5):
        assert push(d) == "ws_CO_1"
    assert fake.count("/oauth/v1/generate") == 2  # once, then once more after "Invalid Access Token"
    oauth = next(r for r in fake.seen if r.url.path == "/oauth/v1/generate")
    assert (
        oauth.headers["authorization"] == "Basic " + base64.b64encode(b"consumer-key:" + SECRETS[0].encode()).decode()
    )
    assert fake.seen[-1].headers["authorization"] == "Bearer tok2"


def test_a_token_is_renewed_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("mita.channels.mpesa.client.time.monotonic", lambda: now[0])
    fake = FakeDaraja()
    d = client(fake)
    push(d)
    now[0] += 3599 - 61
    push(d)
    assert fake.count("/oauth/v1/generate") == 1
    now[0] += 2  # within a minute of its end
    push(d)
    assert fake.count("/oauth/v1/generate") == 2


def test_a_push_is_signed_as_documented_in_whole_shillings_rounded_up() -> None:
    fake = FakeDaraja()
    push(client(fake))
    body = json.loads(next(r for r in fake.seen if "stkpush" in r.url.path).content)
    assert body["Timestamp"] == "20261204101112"
    assert base64.b64decode(body["Password"]).decode() == "174379" + SECRETS[1] + "20261204101112"
    assert body["Amount"] == 101 and body["AccountReference"] == "PABCDEFGHIJ"
    assert body["PartyB"] == body["BusinessShortCode"] == "174379"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"errorCode": "500.001.1001", "errorMessage": "Unable to lock subscriber"}, "mpesa_busy"),
        ({"errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}, "mpesa_busy"),
        ({"errorCode": "400.002.02", "errorMessage": "Invalid CallBackURL"}, "mpesa_refused"),
        ({"ResponseCode": "1", "ResponseDescription": "no"}, "mpesa_refused"),
        (httpx.ConnectTimeout("slow"), "mpesa_unavailable"),
        (lambda r: httpx.Response(503, text="<html>down</html>"), "mpesa_unavailable"),
    ],
)
def test_daraja_s_refusals_are_typed_and_show_no_secret(answer: Any, code: str) -> None:
    d = client(FakeDaraja(**{"/mpesa/stkpush/v1/processrequest": answer}))
    with pytest.raises(VendError) as err:
        push(d)
    assert err.value.code == code
    shown = f"{err.value} {err.value!r} {d.creds!r}"
    assert not any(s in shown for s in SECRETS)


def test_a_reversal_and_a_status_carry_the_credential_and_answer_a_conversation() -> None:
    accepted = {"ConversationID": "AG_1", "OriginatorConversationID": "o", "ResponseCode": "0"}
    fake = FakeDaraja(**{"/mpesa/reversal/v1/request": accepted, "/mpesa/transactionstatus/v1/query": accepted})
    d = client(fake)
    assert d.reverse(receipt="R1", amount=5_000, result_url="http://r", timeout_url="http://t", remarks="x") == "AG_1"
    assert d.transaction_status("R1", "http://r", "http://t") == "AG_1"
    bodies = [json.loads(r.content) for r in fake.seen if r.method == "POST"]
    assert [b["CommandID"] for b in bodies] == ["TransactionReversal", "TransactionStatusQuery"]
    assert all(b["SecurityCredential"] == SECRETS[2] and b["Initiator"] == "api-op" for b in bodies)
    assert bodies[0]["RecieverIdentifierType"] == "11" and bodies[0]["Amount"] == 50


def test_the_pull_pages_until_no_records() -> None:
    row = {"transactionId": "R1", "amount": "20.00", "billreference": DRN, "msisdn": 254708374149}
    pages = {"0": {"ResponseCode": "1000", "Response": [[row]]}, "1": {"ResponseCode": "1001", "Response": [[]]}}
    fake = FakeDaraja(**{"/pulltransactions/v1/query": lambda r: pages[json.loads(r.content)["OffSetValue"]]})
    d = client(fake)
    start = dt.datetime(2026, 12, 4, 8)
    assert [r.trans_id for r in d.pull(start, start + dt.timedelta(hours=2), 0)] == ["R1"]
    assert d.pull(start, start + dt.timedelta(hours=2), 1) == []


# ---------------------------------------------------------------------------------------------------- the sender


@pytest.fixture
def pushes(world: World, payments: Payments) -> Callable[[FakeDaraja], Any]:
    def run(fake: FakeDaraja) -> DarajaSender:
        hooks = HookSecret("hook-secret-for-tests-0123456789")
        return DarajaSender(payments, client(fake), hooks, "http://mita.test", lambda: world.now[0])

    return run


def test_a_push_is_sent_once_and_a_row_with_a_checkout_is_never_pushed_again(
    payments: Payments, pushes: Callable[[FakeDaraja], DarajaSender], drain: Any
) -> None:
    fake = FakeDaraja()
    started = payments.initiate("mpesa", "ussd:1", DRN, 10_000, "254708374149", channel=STK)
    assert drain({STK: pushes(fake)})["sent"] == 1
    assert payments.get(started.id)["checkout_id"] == "ws_CO_1"
    assert fake.count("/mpesa/stkpush/v1/processrequest") == 1
    callback = json.loads(next(r for r in fake.seen if "stkpush" in r.url.path).content)["CallBackURL"]
    assert callback.startswith("http://mita.test/hooks/ke1/stk/") and "mpesa" not in callback.lower()
    sender = pushes(fake)
    sender._push(started.id)  # the worker died after the push: the outbox row comes again
    assert fake.count("/mpesa/stkpush/v1/processrequest") == 1


def test_a_busy_subscriber_is_tried_again_and_a_refusal_fails_the_payment(
    payments: Payments, pushes: Callable[[FakeDaraja], DarajaSender], drain: Any
) -> None:
    busy = FakeDaraja(**{"/mpesa/stkpush/v1/processrequest": {"errorCode": "500.001.1001", "errorMessage": "lock"}})
    first = payments.initiate("mpesa", "ussd:busy", DRN, 10_000, "254708374149", channel=STK)
    assert drain({STK: pushes(busy)})["retried"] == 1
    assert payments.get(first.id)["status"] == "initiated"
    refused = FakeDaraja(**{"/mpesa/stkpush/v1/processrequest": {"errorCode": "400.002.02", "errorMessage": "bad"}})
    second = payments.initiate("mpesa", "ussd:refused", DRN, 10_000, "254708374149", channel=STK)
    pushes(refused)._push(second.id)
    assert payments.get(second.id)["status"] == "failed"
