"""The payment pipeline: one vend per provider transaction, whatever repeats; every payment to a final state."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from mita.channels.payments import PaymentFact, Payments, purchase_code
from mita.channels.senders import PaymentSender
from mita.vend.schema import outbox, payment_events, vends
from mita.vend.schema import payments as payments_table
from vend_fixtures import DRN, OTHER_DRN, World

from .channel_world import PHONE, Collect


def fact(ref: str = "RKL51ZDR4F", amount: int = 10_000, **kw: Any) -> PaymentFact:
    return PaymentFact("mpesa", "c2b", ref, amount, account_ref=DRN, meter=kw.pop("meter", DRN), **kw)


def count(world: World, table: Any, *where: Any) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def test_a_payment_recorded_three_times_vends_once_and_delivers_one_sms(
    world: World, payments: Payments, drain: Any
) -> None:
    first = payments.record(fact())
    again = [payments.record(fact(source="pull", verified=True)) for _ in range(2)]
    assert first.new and first.status == "received"
    assert {r.id for r in again} == {first.id} and not any(r.new for r in again)
    sms = Collect()
    drain({"payment": PaymentSender(payments), "sms": sms, "receipt": Collect()})
    drain({"payment": PaymentSender(payments), "sms": sms, "receipt": Collect()})
    assert count(world, vends) == 1
    assert len(sms.sent) == 1 and sms.sent[0].recipient == PHONE
    assert "Token: " in sms.sent[0].payload["text"] and DRN in sms.sent[0].payload["text"]
    p = payments.get(first.id)
    assert p["status"] == "vended" and p["verified"] and p["vend_id"]
    assert count(world, payment_events, payment_events.c.payment_id == first.id) == 3
    assert payments.delivered(first.id) == "delivered"
    assert payments.delivered(first.id) == "delivered"  # a second report changes nothing


def test_a_vend_that_ran_but_was_not_marked_is_not_made_again(world: World, payments: Payments) -> None:
    r = payments.record(fact())
    caller = payments.caller("mpesa")
    world.svc.vend(
        caller, f"pay:{r.id}", {"meter": DRN, "amount": 10_000, "include_key_change": True}
    )  # the worker died after the vend
    assert payments.vend(r.id) == "vended"
    assert count(world, vends) == 1


def test_an_unknown_meter_is_unvendable_and_asks_for_a_refund(world: World, payments: Payments) -> None:
    r = payments.record(fact(meter=OTHER_DRN))
    assert payments.vend(r.id) == "unvendable"
    assert "not_found" in payments.get(r.id)["detail"]
    none = payments.record(fact("RKL51ZDR4G", meter=None))
    assert payments.vend(none.id) == "unvendable"
    assert payments.move(none.id, "refund_pending") == "refund_pending"
    assert payments.move(none.id, "refunded", refund_ref="RV1") == "refunded"
    with pytest.raises(Exception, match="cannot go from refunded"):
        payments.move(none.id, "received")


def test_an_unverified_callback_above_the_cap_waits_for_the_provider(world: World, payments: Payments) -> None:
    r = payments.record(fact(amount=200_000))
    assert r.status == "held"
    assert count(world, outbox, outbox.c.channel == "payment") == 0
    again = payments.record(fact(amount=200_000, verified=True, source="pull"))
    assert again.status == "received"
    assert count(world, outbox, outbox.c.channel == "payment") == 1


def test_a_push_is_started_once_per_origin_and_its_outcomes_are_sticky(world: World, payments: Payments) -> None:
    a = payments.initiate("mpesa", "ussd:abc", DRN, 5_000, PHONE, channel="mpesa.stk")
    b = payments.initiate("mpesa", "ussd:abc", DRN, 5_000, PHONE, channel="mpesa.stk")
    assert a.new and not b.new and a.id == b.id
    assert payments.get(a.id)["provider_ref"] == purchase_code("ussd:abc") and len(purchase_code("x")) <= 12
    payments.set_checkout(a.id, "ws_CO_1")
    paid = payments.collected("mpesa", checkout_id="ws_CO_1", outcome="paid", receipt="NLJ7RT61SV")
    assert paid is not None and paid.status == "received"
    late = payments.collected("mpesa", checkout_id="ws_CO_1", outcome="cancelled")
    assert late is not None and late.status == "received"
    assert payments.collected("mpesa", checkout_id="ws_CO_nobody", outcome="paid") is None
    with world.engine.connect() as conn:
        assert (
            conn.execute(select(payments_table.c.receipt).where(payments_table.c.id == a.id)).scalar() == "NLJ7RT61SV"
        )
    c = payments.initiate("mpesa", "ussd:def", DRN, 5_000, PHONE, channel="mpesa.stk")
    payments.set_checkout(c.id, "ws_CO_2")
    cancelled = payments.collected("mpesa", checkout_id="ws_CO_2", outcome="cancelled")
    assert cancelled is not None and cancelled.status == "cancelled"
    # the provider's record of money wins over an earlier "cancelled"
    assert payments.record(fact(purchase_code("ussd:def"), 5_000, verified=True, receipt="R2")).status == "received"
