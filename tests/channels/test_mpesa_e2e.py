"""M-Pesa end to end: the fake Daraja makes real callbacks to Mita's API on loopback, with duplicates, drops and
delays; the reconciliation pulls what was lost; every payment makes exactly one vend and one token SMS."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mita.channels.hooks import HookSecret
from mita.channels.mpesa import fake
from mita.channels.mpesa.client import Credentials, Daraja
from mita.channels.mpesa.reconcile import Policy, reconcile
from mita.channels.mpesa.senders import DarajaSender
from mita.channels.payments import Payments
from mita.channels.senders import PaymentSender
from mita.vend.schema import payments as payments_table
from mita.vend.schema import vends
from vend_fixtures import DRN, OTHER_DRN, World

from .channel_world import PHONE, Collect
from .servers import SECRET, mita_server

pytestmark = pytest.mark.slow
CREDS = Credentials(fake.SHORTCODE, "key", "secret", fake.PASSKEY, "api-op", "credential")


@pytest.fixture
def daraja(world: World) -> Iterator[fake.Served]:
    world.now[0] = dt.datetime.now().replace(microsecond=0)  # the fake's ledger is on the wall clock
    served = fake.serve(faults=fake.Faults(duplicate_rate=0.3, drop_rate=0.25, delay_ms=300, seed=7))
    yield served
    served.stop()


def settle(served: fake.Served, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while served.ledger.stats["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.ledger.stats["in_flight"] == 0


def statuses(world: World) -> dict[str, int]:
    with world.engine.connect() as conn:
        rows = conn.execute(select(payments_table.c.status, func.count()).group_by(payments_table.c.status)).all()
    return {s: int(n) for s, n in rows}


def test_c2b_payments_with_faults_each_make_one_vend_and_one_sms(
    world: World, payments: Payments, daraja: fake.Served, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Daraja(daraja.url, CREDS)
    sms = Collect()
    with mita_server(str(world.engine.url), monkeypatch, mpesa_url=daraja.url) as base:
        hooks = HookSecret(SECRET)
        client.register_urls(hooks.path(base, "ke1/c2b/confirm"), hooks.path(base, "ke1/c2b/validate"))
        with httpx.Client(base_url=daraja.url) as http:
            paid = [http.post("/fake/c2b", json={"msisdn": PHONE, "amount": 50, "bill_ref": DRN}).json()
                    for _ in range(12)]  # fmt: skip
            refused = http.post("/fake/c2b", json={"msisdn": PHONE, "amount": 50, "bill_ref": OTHER_DRN}).json()
        settle(daraja)
        assert all(p["accepted"] for p in paid) and refused == {"trans_id": None, "accepted": False}
        stats = daraja.ledger.stats
        assert stats["dropped"] > 0 and stats["duplicated"] > 0  # the faults were there
        before = sum(statuses(world).values())
        assert before == 12 - stats["dropped"]  # a duplicate made nothing twice
        counts = reconcile(payments, client)
        assert counts.recovered == stats["dropped"]
        drain({"payment": PaymentSender(payments), "sms": sms, "receipt": Collect()})
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(vends)).scalar() == 12
        refs = conn.execute(select(payments_table.c.provider_ref)).scalars().all()
    assert sorted(refs) == sorted(p["trans_id"] for p in paid)
    assert statuses(world) == {"vended": 12} and len(sms.sent) == 12
    assert {m.recipient for m in sms.sent} == {PHONE}  # the meter's registered phone, not the masked payer
    assert reconcile(payments, client).recovered == 0  # a second pass changes nothing


def test_pushes_paid_cancelled_and_unanswered_end_where_they_should(
    world: World, payments: Payments, daraja: fake.Served, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Daraja(daraja.url, CREDS)
    with mita_server(str(world.engine.url), monkeypatch, mpesa_url=daraja.url) as base, httpx.Client() as http:
        http.post(f"{daraja.url}/fake/outcome", json={"phone": "254700001032", "code": "1032"})
        http.post(f"{daraja.url}/fake/outcome", json={"phone": "254700001037", "code": "1037"})
        started = {phone: payments.initiate("mpesa", f"ussd:{phone}", DRN, 10_000, phone, channel="mpesa.stk")
                   for phone in (PHONE, "254700001032", "254700001037")}  # fmt: skip
        sender = DarajaSender(payments, client, HookSecret(SECRET), base, lambda: world.now[0])
        drain({"mpesa.stk": sender})
        settle(daraja)
        world.advance(minutes=2)
        reconcile(payments, client, Policy(query_after=dt.timedelta(seconds=30)))  # the dropped callbacks
        drain({"payment": PaymentSender(payments), "sms": Collect(), "receipt": Collect()})
    got = {phone: payments.get(r.id)["status"] for phone, r in started.items()}
    assert got == {PHONE: "vended", "254700001032": "cancelled", "254700001037": "expired"}
    assert payments.get(started[PHONE].id)["deliver_to"] == PHONE


def test_a_forged_confirmation_above_the_cap_is_held_then_flagged_and_an_unknown_meter_refunded(
    world: World, payments: Payments, daraja: fake.Served, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Daraja(daraja.url, CREDS)
    cap = str(payments.unverified_cap)
    with mita_server(str(world.engine.url), monkeypatch, mpesa_url=daraja.url, mpesa_unverified_cap=cap) as base, \
            httpx.Client() as http:  # fmt: skip
        hooks = HookSecret(SECRET)
        client.register_urls(hooks.path(base, "ke1/c2b/confirm"), "")  # validation off: unknown meters are paid
        forged = http.post(f"{daraja.url}/fake/forge", json={"amount": 5000, "bill_ref": DRN}).json()
        http.post(f"{daraja.url}/fake/c2b", json={"msisdn": PHONE, "amount": 30, "bill_ref": OTHER_DRN})
        wrong = http.post(f"{base}/hooks/ke1/c2b/confirm/not-the-secret", json={}).status_code
        settle(daraja)
        reconcile(payments, client)  # the dropped ones
        drain({"payment": PaymentSender(payments), "sms": Collect(), "receipt": Collect()})
        world.advance(hours=3)
        counts = reconcile(payments, client)
        assert counts.flagged == 1 and counts.refunds == 1
        sender = DarajaSender(payments, client, hooks, base, lambda: world.now[0])
        drain({"mpesa.refund": sender})
        deadline = time.monotonic() + 10
        while statuses(world).get("refunded") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert wrong == 404
    assert payments.find("mpesa", forged["trans_id"])["status"] == "flagged"  # type: ignore[index]
    assert statuses(world) == {"flagged": 1, "refunded": 1}
    assert any(p["reversed"] for p in daraja.ledger.paid)


@pytest.fixture
def silent(world: World) -> Iterator[fake.Served]:
    """A fake Daraja whose callbacks and reversal results are all lost: only queries, the pull and Transaction
    Status tell Mita anything."""
    world.now[0] = dt.datetime.now().replace(microsecond=0)
    served = fake.serve(faults=fake.Faults(drop_rate=1.0, reversal_drop_rate=1.0, seed=3))
    yield served
    served.stop()


def test_with_every_callback_lost_queries_pull_and_transaction_status_close_every_gap(
    world: World, payments: Payments, silent: fake.Served, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Daraja(silent.url, CREDS)
    with mita_server(str(world.engine.url), monkeypatch, mpesa_url=silent.url) as base, httpx.Client() as http:
        hooks = HookSecret(SECRET)
        results = (hooks.path(base, "ke1/result"), hooks.path(base, "ke1/timeout"))
        client.register_urls(hooks.path(base, "ke1/c2b/confirm"), "")  # no validation: an unknown meter is paid
        http.post(f"{silent.url}/fake/outcome", json={"phone": "254700001032", "code": "1032"})
        pushed = {phone: payments.initiate("mpesa", f"sms:{phone}", DRN, 10_000, phone, channel="mpesa.stk")
                  for phone in (PHONE, "254700001032")}  # fmt: skip
        sender = DarajaSender(payments, client, hooks, base, lambda: world.now[0])
        drain({"mpesa.stk": sender})
        http.post(f"{silent.url}/fake/c2b", json={"msisdn": PHONE, "amount": 30, "bill_ref": OTHER_DRN})
        http.post(f"{silent.url}/fake/c2b", json={"msisdn": PHONE, "amount": 40, "bill_ref": DRN})
        settle(silent)
        assert sum(statuses(world).values()) == 2  # only the pushes: nothing was called back
        world.advance(minutes=1)
        first = reconcile(payments, client, results=results)
        assert (first.verified, first.queried, first.recovered) == (1, 1, 2)  # the paid push was in the pull
        drain({"payment": PaymentSender(payments), "sms": Collect(), "receipt": Collect()})
        world.advance(minutes=1)
        assert reconcile(payments, client, results=results).refunds == 1
        drain({"mpesa.refund": sender})
        settle(silent)
        assert silent.ledger.stats["results_dropped"] == 1 and statuses(world)["refund_pending"] == 1
        world.advance(minutes=11)
        assert reconcile(payments, client, results=results).statuses == 1
        deadline = time.monotonic() + 10
        while statuses(world).get("refunded") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert statuses(world) == {"vended": 2, "cancelled": 1, "refunded": 1}
    assert payments.get(pushed[PHONE].id)["receipt"] is not None  # the pull brought the push's receipt
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(vends)).scalar() == 2
