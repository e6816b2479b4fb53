"""Daraja's callbacks under /hooks/ke1 through Mita's app (FastAPI's TestClient): validation refuses what cannot be
sold with Daraja's codes and stores nothing; a confirmation is stored once however often it comes, without the
masked payer as a delivery phone; garbage is a 400 kept as an event; a Transaction Status that says reversed ends a
refund whose own result was lost."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from mita.channels.mpesa import fake
from mita.channels.payments import PaymentFact, Payments, purchase_code
from mita.vend.schema import payment_events
from mita.vend.schema import payments as payments_table
from vend_fixtures import DRN, OTHER_DRN, World

from .channel_api import SECRET, api

BASE = "/hooks/ke1"


def c2b(trans_id: str, amount: str, bill_ref: str) -> dict[str, Any]:
    return {
        "TransactionType": "Pay Bill", "TransID": trans_id, "TransTime": "20261204101112", "TransAmount": amount,
        "BusinessShortCode": fake.SHORTCODE, "BillRefNumber": bill_ref, "InvoiceNumber": "", "OrgAccountBalance": "",
        "ThirdPartyTransID": "", "MSISDN": "2547 ***** 126", "FirstName": "John",
    }  # fmt: skip


def count(world: World, table: Any) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_validation_refuses_what_cannot_be_sold_and_stores_nothing(
    world: World, payments: Payments, monkeypatch: pytest.MonkeyPatch
) -> None:
    with api(world, monkeypatch) as a:

        def validate(amount: str, bill_ref: str) -> Any:
            r = a.client.post(f"{BASE}/c2b/validate/{SECRET}", json={**c2b("", amount, bill_ref), "TransID": ""})
            assert r.status_code == 200
            return r.json()["ResultCode"]

        assert validate("50.00", DRN) == "0"
        assert validate("50.00", "4750-0150-231") == "0"  # typed with dashes
        assert validate("50.00", OTHER_DRN) == "C2B00012"  # a valid number, no such meter
        assert validate("50.00", "47500150232") == "C2B00012"  # a wrong check digit
        assert validate("50.00", "hello") == "C2B00012"
        assert validate("50.00", purchase_code("ussd:none")) == "C2B00012"  # no such purchase
        assert validate("0.01", DRN) == "C2B00013"  # buys nothing
        assert validate("2000000000", DRN) == "C2B00013"  # absurd
        assert a.client.post(f"{BASE}/c2b/validate/wrong-secret-0123456789", json={}).status_code == 404
    assert count(world, payments_table) == 0  # refusals leave events only


def test_a_confirmation_is_stored_once_and_the_masked_payer_is_no_delivery_phone(
    world: World, payments: Payments, monkeypatch: pytest.MonkeyPatch
) -> None:
    with api(world, monkeypatch) as a:
        for _ in range(3):
            r = a.client.post(f"{BASE}/c2b/confirm/{SECRET}", json=c2b("RKL51ZDR4F", "50.00", "4750 0150 231"))
            assert r.status_code == 200 and r.json()["ResultCode"] == 0
    found = payments.find("mpesa", "RKL51ZDR4F")
    assert found is not None and count(world, payments_table) == 1
    assert (found["meter"], found["amount"], found["deliver_to"], found["status"]) == (DRN, 5000, None, "received")


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[" * 100_000, b"[]", b'{"Body": 1}', b'{"TransID": "X", "TransAmount": "-5"}', b"\xff\xfe"],
)
def test_a_body_that_is_not_daraja_s_is_a_400_kept_as_an_event(
    world: World, payments: Payments, monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    routes = ("c2b/validate", "c2b/confirm", "stk", "result")
    with api(world, monkeypatch) as a:
        for route in routes:
            r = a.client.post(f"{BASE}/{route}/{SECRET}", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, route
    assert count(world, payments_table) == 0 and count(world, payment_events) == len(routes)


def status_result(receipt: str, status: str) -> dict[str, Any]:
    params = [{"Key": "ReceiptNo", "Value": receipt}, {"Key": "TransactionStatus", "Value": status}]
    return {
        "Result": {
            "ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": "o-1", "ConversationID": "AG_status", "TransactionID": receipt,
            "ResultParameters": {"ResultParameter": params},
        }
    }  # fmt: skip


def test_a_status_saying_reversed_ends_a_refund_whose_result_was_lost(
    world: World, payments: Payments, monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = payments.record(PaymentFact("mpesa", "c2b", "RKL0000001", 3000, account_ref=OTHER_DRN, meter=OTHER_DRN,
                                       receipt="RKL0000001", source="test", body={}))  # fmt: skip
    assert payments.vend(paid.id) == "unvendable"
    assert payments.request_refund(paid.id, "mpesa.refund")
    payments.note_refund(paid.id, "AG_reversal")
    with api(world, monkeypatch) as a:
        post = a.client.post
        assert post(f"{BASE}/result/{SECRET}", json=status_result("RKL0000001", "Completed")).status_code == 200
        assert payments.get(paid.id)["status"] == "refund_pending"  # completed proves nothing about the refund
        for _ in range(2):
            assert post(f"{BASE}/result/{SECRET}", json=status_result("RKL0000001", "Reversed")).status_code == 200
        assert post(f"{BASE}/result/{SECRET}", json=status_result("RKL9999999", "Reversed")).status_code == 200
        assert post(f"{BASE}/timeout/{SECRET}", json={"Result": {"ResultCode": 1}}).status_code == 200
    assert payments.get(paid.id)["status"] == "refunded"
