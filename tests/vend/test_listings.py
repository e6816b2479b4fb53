"""Listing vends and campaigns (mita.vend.listings, mita.campaign.listing) on SQLite and PostgreSQL.

The world of the vending tests, with a second vendor, a second meter and customer; purchases by both vendors and
by an operator, a reversal and an engineering token, each a minute apart. Every filter is checked against the
vends made, pages are walked to the end, and a vendor's key sees its own vendor's vends only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita import campaign
from mita.campaign.listing import list_campaigns
from mita.vend import keyring, listings, registry
from mita.vend.callers import Caller
from mita.vend.listings import VendFilter
from mita.vend.sample import meter_number
from vend_fixtures import BAD_CHECK_DIGIT, DRN, OTHER_DRN, SECOND_KEY_HEX, SGC, START, World, build_world, refused

SECOND_DRN = meter_number("4750015026")  # not OTHER_DRN, which stays unregistered


class Shop:
    """The world, and what was made in it, newest last."""

    def __init__(self, w: World) -> None:
        self.w = w
        a = w.admin
        reg = registry.Registry(w.engine)
        reg.create_customer(a, account="C-002", name="Second customer")
        reg.create_meter(a, drn=SECOND_DRN, sgc=SGC, customer="C-002", tariff="domestic")
        other = reg.create_vendor(a, "Other shop")
        _, key = reg.create_api_key("other till", "vendor", int(other["id"]))
        self.other = registry.authenticate(w.engine, key)
        self.made: list[dict[str, Any]] = []
        for caller, meter, amount in (
            (w.vendor, DRN, 5000),
            (self.other, DRN, 3000),
            (w.vendor, SECOND_DRN, 4000),
            (w.operator, DRN, 2000),
            (w.vendor, DRN, 6000),
        ):
            self.made.append(w.vend(amount, caller=caller, meter=meter) | {"by": caller, "kind": "purchase"})
            w.advance(minutes=1)
        w.svc.reverse(w.operator, self.made[2]["id"], "wrong meter")
        eng = w.svc.engineering(w.operator, DRN, "clear_tamper").body
        self.made.append(eng | {"by": w.operator, "kind": "engineering"})

    def ids(self, f: VendFilter | None = None, caller: Caller | None = None, limit: int = 500) -> list[str]:
        """Every page of the listing, walked to the end."""
        f = f or VendFilter()
        out: list[str] = []
        after = None
        while True:
            page = listings.list_vends(self.w.engine, caller or self.w.admin, f, limit, after)
            assert len(page["items"]) <= limit
            out += [v["id"] for v in page["items"]]
            after = page["next"]
            if after is None:
                return out

    def newest_first(self, pick: Any = lambda v: True) -> list[str]:
        return [v["id"] for v in reversed(self.made) if pick(v)]


@pytest.fixture
def shop(engine: Engine) -> Shop:  # noqa: F811 - the imported fixture
    return Shop(build_world(engine))


def test_every_filter_finds_exactly_its_vends(shop: Shop) -> None:
    w = shop.w
    assert shop.ids() == shop.newest_first()
    assert shop.ids(VendFilter(meter=DRN)) == shop.newest_first(lambda v: v["meter"] == DRN)
    assert shop.ids(VendFilter(customer="C-002")) == [shop.made[2]["id"]]
    assert shop.ids(VendFilter(vendor_id=w.vendor.vendor_id)) == shop.newest_first(lambda v: v["by"] == w.vendor)
    assert shop.ids(VendFilter(kind="engineering")) == [shop.made[-1]["id"]]
    assert shop.ids(VendFilter(status="reversed")) == [shop.made[2]["id"]]
    assert shop.ids(VendFilter(meter=OTHER_DRN)) == []  # a meter that is not registered finds nothing
    assert shop.ids(VendFilter(customer="nobody")) == []
    # a period with offsets: [START + 1 min, START + 3 min) in the utility's wall clock
    since, until = (START + dt.timedelta(minutes=1)).astimezone(), (START + dt.timedelta(minutes=3)).astimezone()
    assert shop.ids(VendFilter(since=since, until=until)) == [shop.made[2]["id"], shop.made[1]["id"]]
    in_utc = VendFilter(since=since.astimezone(dt.UTC), until=until.astimezone(dt.UTC))  # the same instants
    assert shop.ids(in_utc) == [shop.made[2]["id"], shop.made[1]["id"]]
    both = VendFilter(meter=DRN, vendor_id=w.vendor.vendor_id, kind="purchase", status="completed")
    assert shop.ids(both) == [shop.made[4]["id"], shop.made[0]["id"]]


def test_pages_walk_every_vend_once_newest_first_even_while_vends_are_made(shop: Shop) -> None:
    w = shop.w
    everything = shop.newest_first()
    for limit in (1, 2, 3):
        assert shop.ids(limit=limit) == everything
    first = listings.list_vends(w.engine, w.admin, limit=2)
    w.vend(1000)  # sold between two page reads: newer than the cursor, so not on a later page
    rest: list[str] = []
    after = first["next"]
    while after:
        page = listings.list_vends(w.engine, w.admin, VendFilter(), 2, after)
        rest += [v["id"] for v in page["items"]]
        after = page["next"]
    assert [v["id"] for v in first["items"]] + rest == everything


def test_items_carry_their_tokens_receipt_and_reversal(shop: Shop) -> None:
    w = shop.w
    items = {v["id"]: v for v in listings.list_vends(w.engine, w.admin)["items"]}
    sold = shop.made[0]
    item = items[sold["id"]]
    assert item["kind"] == "purchase" and item["status"] == "completed" and item["meter"] == DRN
    assert item["amount"] == 5000 and item["currency"] == "ZAR" and item["customer"] == "C-001"
    assert item["vendor_id"] == w.vendor.vendor_id and item["api_key_id"] == w.vendor.api_key_id
    assert [t["digits"] for t in item["tokens"]] == [t["digits"] for t in sold["tokens"]]
    assert item["units"] == sum(t["units"] for t in sold["tokens"])
    assert item["receipt"]["paid"] == 5000 and "key" not in item["receipt"]
    assert dt.datetime.fromisoformat(item["created_at"]).utcoffset() is not None  # RFC 3339 with an offset
    reversed_ = items[shop.made[2]["id"]]
    assert reversed_["status"] == "reversed" and reversed_["reversed_at"] is not None
    engineering = items[shop.made[-1]["id"]]
    assert engineering["amount"] == 0 and engineering["receipt"]["engineering"] == "clear_tamper"


def test_a_vendor_sees_its_own_vendors_vends_only(shop: Shop) -> None:
    w = shop.w
    own = shop.newest_first(lambda v: v["by"] == w.vendor)
    assert shop.ids(caller=w.vendor) == own
    assert shop.ids(VendFilter(vendor_id=shop.other.vendor_id), caller=w.vendor) == []
    assert shop.ids(caller=shop.other) == [shop.made[1]["id"]]
    history = listings.meter_history(w.engine, w.vendor, DRN)["items"]
    assert [v["id"] for v in history] == [i for i in own if i != shop.made[2]["id"]]
    assert shop.ids(caller=w.operator) == shop.newest_first()


def test_a_meters_history_is_the_same_query(shop: Shop) -> None:
    w = shop.w
    history = listings.meter_history(w.engine, w.operator, DRN, limit=2)
    assert [v["id"] for v in history["items"]] == shop.newest_first(lambda v: v["meter"] == DRN)[:2]
    assert history["next"] is not None
    refused("not_found", listings.meter_history, w.engine, w.operator, OTHER_DRN)
    refused("check_digit_error", listings.meter_history, w.engine, w.operator, BAD_CHECK_DIGIT)


def test_refusals(shop: Shop) -> None:
    w = shop.w
    refused("invalid_cursor", listings.list_vends, w.engine, w.admin, VendFilter(), 10, "not a cursor")
    refused("invalid_kind", listings.list_vends, w.engine, w.admin, VendFilter(kind="gift"))
    refused("invalid_status", listings.list_vends, w.engine, w.admin, VendFilter(status="lost"))
    refused("invalid_period", listings.list_vends, w.engine, w.admin, VendFilter(since=START, until=START))
    refused("check_digit_error", listings.list_vends, w.engine, w.admin, VendFilter(meter=BAD_CHECK_DIGIT))


def test_campaigns_are_listed_by_status_and_supply_group(shop: Shop) -> None:
    w = shop.w
    keyring.add_key(w.engine, w.admin, sgc=SGC, krn=2, dkga=2, key_hex=SECOND_KEY_HEX, at=START)
    keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=2, at=START)
    made = [
        campaign.plan(w.engine, w.admin, name=f"rotate {i}", sgc=SGC, target={"krn": 2}, at=START, batch_size=1)
        for i in range(3)
    ]
    page = list_campaigns(w.engine, w.operator, limit=2)
    assert [c["id"] for c in page["items"]] == [made[0]["id"], made[1]["id"]] and page["next"] == made[1]["id"]
    rest = list_campaigns(w.engine, w.operator, limit=2, after=page["next"])
    assert [c["id"] for c in rest["items"]] == [made[2]["id"]] and rest["next"] is None
    first = page["items"][0]
    assert first == campaign.get_campaign(w.engine, made[0]["id"]) | {"created_at": first["created_at"]}
    assert first["meters"]["planned"] == made[0]["planned"] == 2  # both meters of the group, in the first plan
    assert [c["id"] for c in list_campaigns(w.engine, w.admin, status="planned")["items"]] == [c["id"] for c in made]
    assert list_campaigns(w.engine, w.admin, status="closed")["items"] == []
    assert len(list_campaigns(w.engine, w.admin, sgc=SGC)["items"]) == 3
    assert list_campaigns(w.engine, w.admin, sgc="654321")["items"] == []
    refused("invalid_status", list_campaigns, w.engine, w.admin, status="lost")
    refused("forbidden", list_campaigns, w.engine, w.vendor)
