"""The pure parts of the channels: Daraja's bodies read defensively, the SMS grammar, the SMS texts. Random input
gives a typed error or a help answer, never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mita import sts
from mita.channels import texts
from mita.channels.mpesa import messages
from mita.channels.payments import purchase_code
from mita.channels.sms import inbound
from mita.vend.errors import VendError

DRN = "47500150231"
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=20,
)


def test_daraja_bodies_as_documented_with_their_inconsistencies() -> None:
    callback = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "m",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": 0,
                "ResultDesc": "ok",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": 1.0},
                        {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
                        {"Name": "Balance"},
                        {"Name": "TransactionDate", "Value": 20191219102115},
                        {"Name": "PhoneNumber", "Value": 254708374149},
                    ]
                },
            }
        }
    }
    r = messages.stk_callback(callback)
    assert (r.outcome, r.receipt, r.amount, r.phone) == ("paid", "NLJ7RT61SV", 100, "254708374149")
    cancelled = messages.stk_callback({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_2", "ResultCode": 1032}}})
    assert cancelled.outcome == "cancelled" and cancelled.receipt is None
    assert messages.stk_query_answer({"errorCode": "500.001.1001", "errorMessage": "processing"}).outcome == "pending"
    assert messages.stk_query_answer({"CheckoutRequestID": "x", "ResultCode": "1037"}).outcome == "expired"
    c = messages.c2b(
        {
            "TransID": "RKL51ZDR4F",
            "TransAmount": "5.00",
            "BusinessShortCode": "600000",
            "BillRefNumber": "4750 0150 231",
            "MSISDN": "2547 ***** 126",
        }
    )
    assert (c.amount, c.msisdn) == (500, "2547 ***** 126")
    assert messages.account(c.bill_ref) == (DRN, None)
    assert messages.account(purchase_code("ussd:1")) == (None, purchase_code("ussd:1"))
    assert messages.account("47500150232") == (None, None)  # a wrong check digit
    assert messages.pull_page({"ResponseCode": "1001", "Response": [[]]}) == []
    rows = messages.pull_page(
        {
            "ResponseCode": "1000",
            "Response": [[{"transactionId": "R1", "amount": "20.50", "billreference": DRN, "msisdn": 2547}]],
        }
    )
    assert rows[0].amount == 2050 and rows[0].msisdn == "2547"
    failed = messages.result(
        {"Result": {"ResultCode": "R000002", "ResultDesc": "invalid", "TransactionID": "SKE0000000"}}
    )
    assert not failed.ok
    ok = messages.result(
        {
            "Result": {
                "ResultCode": 0,
                "ConversationID": "A1",
                "ResultParameters": {"ResultParameter": [{"Key": "OriginalTransactionID", "Value": "R1"}]},
            }
        }
    )
    assert ok.ok and ok.parameters["OriginalTransactionID"] == "R1"


@pytest.mark.parametrize("amount", ["-1", "0", "1.001", "abc", "1e30", True, None, [], "NaN", "inf"])
def test_amounts_that_are_not_money_are_refused(amount: Any) -> None:
    with pytest.raises(VendError) as err:
        messages.minor_units(amount)
    assert err.value.code == "mpesa_bad_message"


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_any_json_is_a_daraja_body_or_a_typed_refusal(body: Any) -> None:
    for parse in (messages.c2b, messages.stk_callback, messages.stk_query_answer, messages.result, messages.pull_page):
        try:
            parse(body)
        except VendError as exc:
            assert exc.code in ("mpesa_bad_message", "mpesa_unavailable")
    json.dumps(body)


def test_the_sms_grammar() -> None:
    assert inbound.parse(f"buy {DRN} 150") == inbound.Command("buy", DRN, 150)
    assert inbound.parse("BUY 4750-0150-231 150") == inbound.Command("buy", DRN, 150)
    assert inbound.parse(f"Last {DRN}") == inbound.Command("last", DRN)
    assert inbound.parse(f"token {DRN}").verb == "last"
    assert inbound.parse(f"BAL {DRN}").verb == "bal"
    assert inbound.parse(f"BUY {DRN}").verb == "help"
    assert inbound.parse(f"BUY {DRN} 0").verb == "help"
    assert "not valid" in inbound.parse("LAST 47500150232").problem
    assert inbound.parse("hello").problem == inbound.HELP


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_command_or_help(text: str) -> None:
    command = inbound.parse(text)
    assert command.verb in ("buy", "last", "bal", "help")
    if command.verb != "help":
        assert sts.MeterNumber.parse(command.meter).drn == command.meter


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=20, max_size=20), min_size=1, max_size=4), st.text(max_size=40))
def test_a_token_sms_is_one_gsm7_message(tokens: list[str], meter: str) -> None:
    answer = {
        "id": "2477365b-c332",
        "meter": meter,
        "tokens": [{"kind": "credit", "digits": d} for d in tokens],
        "receipt": {"quantity": "55.9", "unit": "kWh", "paid": 10_000, "currency": "KES"},
    }
    text = texts.token_sms(answer)
    assert len(text) <= texts.SMS_MAX and set(text) <= texts.GSM7
    if len(tokens) <= 2 and len(meter) <= 13:
        assert all(texts.grouped(d) in text for d in tokens)
