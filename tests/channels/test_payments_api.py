"""The operators' payments API (/v1/payments): the list with filters and keyset pages, a payment with its events,
a refund of what could not be vended, a person's resolution of a flagged payment; vendors refused; audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from mita.channels.payments import PaymentFact, Payments
from mita.channels.senders import PaymentSender
from mita.vend.schema import audit, outbox
from vend_fixtures import DRN, OTHER_DRN, World

from .channel_api import Api, api
from .channel_world import Collect


def fact(ref: str, amount: int = 10_000, meter: str | None = DRN) -> PaymentFact:
    return PaymentFact("mpesa", "c2b", ref, amount, account_ref=meter or "??", meter=meter, payer="2547 ***** 126")


def setup(world: World, payments: Payments, drain: Any) -> dict[str, int]:
    """One payment in each state an operator meets: vended, unvendable, flagged unvended, flagged after its vend."""
    ids = {
        "vended": payments.record(fact("T-VENDED")).id,
        "unvendable": payments.record(fact("T-UNKNOWN", meter=OTHER_DRN)).id,
        "held": payments.record(fact("T-HELD", amount=200_000, meter=OTHER_DRN)).id,  # above the cap, unverified
        "undelivered": payments.record(fact("T-NOPHONE")).id,
    }
    drain({"payment": PaymentSender(payments), "sms": Collect(), "receipt": Collect()})
    payments.move(ids["held"], "flagged", detail="never confirmed by the provider's records")
    payments.move(ids["undelivered"], "flagged", detail="every delivery report failed")
    return ids


def get(a: Api, path: str, role: str = "operator") -> Any:
    r = a.client.get(path, headers=a.auth(role))
    assert r.status_code == 200, r.text
    return r.json()


def test_the_list_filters_and_pages_and_vendors_are_refused(
    world: World, payments: Payments, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = setup(world, payments, drain)
    with api(world, monkeypatch) as a:
        everything = get(a, "/v1/payments")
        assert {p["id"] for p in everything["items"]} == set(ids.values()) and everything["next"] is None
        assert [p["id"] for p in get(a, "/v1/payments?status=unvendable")["items"]] == [ids["unvendable"]]
        assert len(get(a, f"/v1/payments?meter={OTHER_DRN}&provider=mpesa")["items"]) == 2
        assert get(a, "/v1/payments?provider=airtel")["items"] == []
        seen: list[int] = []
        cursor = ""
        while True:
            page = get(a, f"/v1/payments?limit=1{cursor}", role="admin")
            seen += [p["id"] for p in page["items"]]
            if page["next"] is None:
                break
            cursor = f"&after={page['next']}"
        assert seen == [p["id"] for p in everything["items"]] and len(seen) == 4  # newest first, none twice
        assert all("api_key_id" not in p for p in everything["items"])
        for path in ("/v1/payments", f"/v1/payments/{ids['vended']}"):
            assert a.client.get(path, headers=a.auth("vendor")).status_code == 403
        bad = a.client.get("/v1/payments?after=not-a-cursor", headers=a.auth("operator"))
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
        one = get(a, f"/v1/payments/{ids['vended']}")
        assert one["status"] == "vended" and one["vend_id"] and [e["source"] for e in one["events"]] == ["callback"]
        assert a.client.get("/v1/payments/999999", headers=a.auth("operator")).status_code == 404


def test_a_refund_of_what_could_not_be_vended(
    world: World, payments: Payments, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = setup(world, payments, drain)
    note = {"note": "meter number mistyped; the customer asked for the money back"}
    with api(world, monkeypatch) as a:
        first = a.client.post(f"/v1/payments/{ids['unvendable']}/refund", json=note, headers=a.auth("operator"))
        again = a.client.post(f"/v1/payments/{ids['unvendable']}/refund", json=note, headers=a.auth("operator"))
        assert first.status_code == again.status_code == 200
        assert first.json()["status"] == again.json()["status"] == "refund_pending"
        assert [e["source"] for e in again.json()["events"]][-1] == "payment_refund"
        vended = a.client.post(f"/v1/payments/{ids['vended']}/refund", json=note, headers=a.auth("admin"))
        assert vended.status_code == 409 and vended.json()["code"] == "conflict"  # its tokens exist
        held = a.client.post(f"/v1/payments/{ids['held']}/refund", json=note, headers=a.auth("admin"))
        assert held.status_code == 200 and held.json()["status"] == "refund_pending"  # flagged, never vended
        undelivered = payments.get(ids["undelivered"])
        blocked = a.client.post(f"/v1/payments/{ids['undelivered']}/refund", json=note, headers=a.auth("admin"))
        assert blocked.status_code == 409 and blocked.json()["code"] == "conflict"
        world.svc.reverse(world.admin, undelivered["vend_id"], "refunded instead")  # on the world's clock
        after = a.client.post(f"/v1/payments/{ids['undelivered']}/refund", json=note, headers=a.auth("admin"))
        assert after.status_code == 200 and after.json()["status"] == "refund_pending"
        assert a.client.post("/v1/payments/1/refund", json=note, headers=a.auth("vendor")).status_code == 403
    with world.engine.connect() as conn:
        refunds = conn.execute(select(outbox.c.dedupe_key).where(outbox.c.channel == "mpesa.refund")).scalars().all()
        audited = conn.execute(select(audit.c.entity_id).where(audit.c.action == "payment_refund")).scalars().all()
    wanted = sorted(f"refund:{ids[k]}" for k in ("unvendable", "held", "undelivered"))
    assert sorted(refunds) == wanted  # one refund asked per payment, however often the button was pressed
    assert sorted(audited) == sorted(str(ids[k]) for k in ("unvendable", "held", "undelivered"))


def test_a_person_resolves_a_flagged_payment(
    world: World, payments: Payments, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = setup(world, payments, drain)
    with api(world, monkeypatch) as a:
        fix = {"action": "vend", "meter": DRN, "note": "customer called: the meter is 47500150231"}
        sold = a.client.post(f"/v1/payments/{ids['held']}/resolve", json=fix, headers=a.auth("operator"))
        assert sold.status_code == 200 and sold.json()["status"] == "received" and sold.json()["meter"] == DRN
        twice = a.client.post(f"/v1/payments/{ids['held']}/resolve", json=fix, headers=a.auth("operator"))
        assert twice.status_code == 409 and twice.json()["code"] == "invalid_transition"
        resell = {"action": "vend", "note": "try again"}
        vended = a.client.post(f"/v1/payments/{ids['undelivered']}/resolve", json=resell, headers=a.auth("admin"))
        assert vended.status_code == 409 and vended.json()["code"] == "conflict"  # sold once already
        close = {"action": "close", "note": "token read out to the customer on the phone"}
        closed = [
            a.client.post(f"/v1/payments/{ids['undelivered']}/resolve", json=close, headers=a.auth("admin"))
            for _ in range(2)
        ]
        assert [r.status_code for r in closed] == [200, 200] and closed[1].json()["status"] == "delivered"
        wrong = a.client.post(f"/v1/payments/{ids['vended']}/resolve", json=close, headers=a.auth("admin"))
        assert wrong.status_code == 409
    drain({"payment": PaymentSender(payments), "sms": Collect(), "receipt": Collect()})
    assert payments.get(ids["held"])["status"] == "vended"  # sold after all, once
    with world.engine.connect() as conn:
        audited = conn.execute(select(audit.c.detail).where(audit.c.action == "payment_resolve")).scalars().all()
    assert [d["decision"] for d in audited] == ["vend", "close"]
