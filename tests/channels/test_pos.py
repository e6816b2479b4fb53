"""Retail tills with PUSI semantics (/v1/pos): a purchase id vends once (a second create is duplicate_record, a
retry answers the same tokens), advices are answered the same however often and in whatever order they come, a
reversal after confirmation is refused, a trial changes nothing, a reprint gives the stored tokens."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from mita.channels.pos import Tills, settle_unconfirmed
from mita.vend import registry
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.schema import pos_purchases, vends
from vend_fixtures import DRN, OTHER_DRN, World

from .channel_api import Api, api

BODY = {"meter": DRN, "amount": 5000}


def count(world: World, table: Any, *where: Any) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def buy(a: Api, purchase_id: str, body: dict[str, Any] | None = None, role: str = "vendor") -> Any:
    return a.client.post(f"/v1/pos/purchases/{purchase_id}", json=body or BODY, headers=a.auth(role))


def advise(a: Api, purchase_id: str, kind: str, advice_id: str, role: str = "vendor") -> Any:
    return a.client.post(f"/v1/pos/purchases/{purchase_id}/{kind}/{advice_id}", headers=a.auth(role))


def digits(answer: dict[str, Any]) -> list[str]:
    return [t["digits"] for t in answer["vend"]["tokens"]]


def test_a_purchase_id_vends_once_and_a_retry_answers_the_same_tokens(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with api(world, monkeypatch) as a:
        made = buy(a, "p-1")
        assert made.status_code == 201, made.text
        answer = made.json()
        assert answer["purchase_id"] == "p-1" and answer["status"] == "issued" and digits(answer)
        for body in (BODY, {**BODY, "amount": 6000}):  # the same id again, with any body: refused, nothing made
            again = buy(a, "p-1", body)
            assert again.status_code == 400 and again.json()["code"] == "duplicate_record"
        retries = [a.client.post("/v1/pos/purchases/p-1/retry", headers=a.auth("vendor")) for _ in range(3)]
        assert {r.status_code for r in retries} == {200}
        assert all(digits(r.json()) == digits(answer) for r in retries)
        never = a.client.post("/v1/pos/purchases/p-never/retry", headers=a.auth("vendor"))
        assert never.status_code == 404 and never.json()["code"] == "not_found"  # buy with a new id
        other = a.client.post("/v1/pos/purchases/p-1/retry", headers=a.auth("other"))
        assert other.status_code == 404  # ids are the till's own: another key's p-1 is another purchase
        assert buy(a, "p-1", role="other").status_code == 201
    assert count(world, vends) == 2 and count(world, pos_purchases) == 2


def test_a_create_that_died_before_its_row_is_repaired_by_the_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with api(world, monkeypatch) as a:
        till = registry.authenticate(world.engine, a.keys["vendor"])
        # the vend committed, then the process died before the pos_purchases row
        first = world.svc.vend(till, "p-crash", {**BODY, "include_key_change": True}).body
        second = world.svc.vend(till, "p-crash-2", {**BODY, "include_key_change": True}).body
        retry = a.client.post("/v1/pos/purchases/p-crash/retry", headers=a.auth("vendor"))
        assert retry.status_code == 200 and retry.json()["vend"]["id"] == first["id"]
        assert digits(retry.json()) == [t["digits"] for t in first["tokens"]]
        again = buy(a, "p-crash-2")  # the till resent its create instead: refused, and the row is written
        assert again.status_code == 400 and again.json()["code"] == "duplicate_record"
        confirmed = advise(a, "p-crash-2", "confirmations", "c-1")
        assert confirmed.status_code == 202 and confirmed.json()["vend_id"] == second["id"]
    assert count(world, vends) == 2 and count(world, pos_purchases) == 2


def test_advices_repeated_and_out_of_order_get_the_same_answers(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with api(world, monkeypatch) as a:
        for pid in ("a", "b", "c"):
            assert buy(a, pid).status_code == 201
        # the till's queue sends in parallel: b's reversal and c's confirmation overtake a's confirmation
        rb = advise(a, "b", "reversals", "rb")
        cc = advise(a, "c", "confirmations", "cc")
        ca = advise(a, "a", "confirmations", "ca")
        assert (rb.status_code, cc.status_code, ca.status_code) == (202, 202, 202)
        assert (rb.json()["status"], cc.json()["status"], ca.json()["status"]) == ("reversed", "confirmed", "confirmed")
        # each sent again (no answer reached the till): the same answer, nothing done twice
        assert advise(a, "b", "reversals", "rb").json() == rb.json()
        assert advise(a, "a", "confirmations", "ca").json() == ca.json()
        assert advise(a, "a", "confirmations", "ca-2").json() == ca.json()  # another confirmation: the first stands
        # a reversal after confirmation: refused, the same way each time, pointing at a reprint
        refused = [advise(a, "a", "reversals", "ra") for _ in range(2)]
        assert {(r.status_code, r.json()["code"]) for r in refused} == {(400, "reversal_refused")}
        assert "reprint" in refused[0].json()["detail"]
        # a confirmation after a reversal, and advices for a purchase never made
        late = advise(a, "b", "confirmations", "cb")
        assert late.status_code == 409 and late.json()["code"] == "reversed"
        assert advise(a, "zzz", "confirmations", "cz").status_code == 404
        assert advise(a, "zzz", "reversals", "rz").status_code == 404
        # the reversed purchase's vend is reversed, once; its tokens are not handed out again
        vend_b = rb.json()["vend_id"]
        assert a.client.get(f"/v1/vends/{vend_b}", headers=a.auth("vendor")).json()["status"] == "reversed"
        assert a.client.post("/v1/pos/purchases/b/retry", headers=a.auth("vendor")).json()["code"] == "reversed"
        gone = a.client.post("/v1/pos/reprints/r-b", json={"purchase_id": "b"}, headers=a.auth("vendor"))
        assert gone.status_code == 409 and gone.json()["code"] == "reversed"
    with world.engine.connect() as conn:
        rows = dict(conn.execute(select(pos_purchases.c.purchase_id, pos_purchases.c.advice_id)).all())
        reversed_vends = conn.execute(select(func.count()).where(vends.c.status == "reversed")).scalar()
    assert rows == {"a": "ca", "b": "rb", "c": "cc"} and reversed_vends == 1


def test_a_trial_changes_nothing_and_a_reprint_gives_the_stored_tokens(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with api(world, monkeypatch) as a:
        trial = a.client.post("/v1/pos/trials/t-1", json=BODY, headers=a.auth("vendor"))
        assert trial.status_code == 200 and trial.json()["request_id"] == "t-1"
        assert trial.json()["receipt"]["paid"] == 5000 and "tokens" not in trial.json()
        assert count(world, vends) == 0 and count(world, pos_purchases) == 0
        unknown = a.client.post("/v1/pos/trials/t-2", json={**BODY, "meter": OTHER_DRN}, headers=a.auth("vendor"))
        assert unknown.status_code == 404
        made = buy(a, "p-9").json()
        by_id = a.client.post("/v1/pos/reprints/r-1", json={"purchase_id": "p-9"}, headers=a.auth("vendor"))
        by_meter = a.client.post("/v1/pos/reprints/r-2", json={"meter": DRN}, headers=a.auth("vendor"))
        for r in (by_id, by_meter):
            assert r.status_code == 200 and r.json()["vend"]["reprint"] is True
            assert digits(r.json()) == digits(made)
        neither = a.client.post("/v1/pos/reprints/r-3", json={}, headers=a.auth("vendor"))
        assert neither.status_code == 422
        none = a.client.post("/v1/pos/reprints/r-4", json={"purchase_id": "nope"}, headers=a.auth("vendor"))
        assert none.status_code == 404
    assert count(world, vends) == 1


def test_a_reversal_past_the_window_is_refused_and_unconfirmed_purchases_are_settled(world: World) -> None:
    tills = Tills(world.svc)
    till = world.vendor
    tills.purchase(till, "late", dict(BODY))
    tills.purchase(till, "early", dict(BODY))
    tills.purchase(till, "fresh", dict(BODY))
    assert tills.reverse(till, "early", "r-early")["status"] == "reversed"
    world.advance(hours=25)  # past the vending service's 24 h reversal window
    with pytest.raises(VendError) as refused:
        tills.reverse(till, "late", "r-late")
    assert refused.value.code == "reversal_refused"
    assert tills.retry(till, "late")["status"] == "issued"  # refused: it stands as it was
    tills.purchase(till, "new", dict(BODY))
    settled = settle_unconfirmed(world.engine, world.now[0] - world.svc.reversal_window, at=world.now[0])
    assert settled == 2  # late and fresh; early is reversed, new is within its window
    assert tills.confirm(till, "late", "c-late")["advice_id"] is None  # a late confirmation: the same settled state
    assert tills.retry(till, "new")["status"] == "issued"
    assert settle_unconfirmed(world.engine, world.now[0] - world.svc.reversal_window) == 0


def test_two_creates_of_one_id_at_once_make_one_vend(world: World) -> None:
    tills = Tills(world.svc)
    till: Caller = world.vendor
    outcomes: list[str] = []

    def create() -> None:
        try:
            tills.purchase(till, "same", dict(BODY))
            outcomes.append("issued")
        except VendError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["duplicate_record"] * 3 + ["issued"]
    assert count(world, vends) == 1 and count(world, pos_purchases) == 1
