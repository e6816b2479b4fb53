"""Key change campaigns (mita.campaign) on SQLite and PostgreSQL: plan, generate, deliver, confirm.

The fleet: the vending tests' utility (supply group 123456, DKGA02, KRN 1 on base 2014) with a dozen more
meters of two manufacturers in two areas, two of them still on base 1993, some customers with phones, plus
meters that must never be picked: one already on the target, one retired, one with a key change under way.
The supply group rotates to KRN 2; campaigns move the meters there. Every set a campaign stores is compared
with the single-token engine's set made from decoder keys derived here, independently of the service, and
the virtual meters (legacy-ea07) must accept them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita import campaign, sts
from mita.campaign import service as campaign_service
from mita.meter import Meter
from mita.vend import keyring, registry
from mita.vend.errors import VendError
from mita.vend.schema import campaigns, key_changes, meters, outbox
from vend_fixtures import DRN, SECOND_KEY, SECOND_KEY_HEX, SGC, START, VENDING_KEY, World, build_world, refused

STA = sts.EA.STA
#: (manufacturer, area, base date, phone) of the fleet's meters beside the world's own
SPECS = [
    ("Alpha", "north", 2014, True),
    ("Alpha", "north", 2014, False),
    ("Alpha", "north", 2014, True),
    ("Alpha", "south", 1993, True),
    ("Alpha", "south", 1993, False),
    ("Beta", "south", 2014, True),
    ("Beta", "south", 2014, False),
    ("Beta", "south", 2014, True),
    ("Beta", "north", 2014, False),
    ("Beta", "north", 2014, True),
]
TARGET = {"sgc": SGC, "krn": 2, "base_date": 2014, "ea": 7, "kt": 2, "ken": 255}


def make_drn(i: int) -> str:
    payload = f"47{60000000 + i:08d}"
    return payload + str(sts.luhn_digit(payload))


def old_key(drn: str) -> int:
    return sts.dkga02(VENDING_KEY, sts.MeterNumber.parse(drn), 2, SGC, 1, 1)


def new_key(drn: str) -> int:
    return sts.dkga02(SECOND_KEY, sts.MeterNumber.parse(drn), 2, SGC, 1, 2)


def expected_set(drn: str, base_date: int) -> list[str]:
    """The set a vend would make for this meter (single-token engine, keys derived here)."""
    sections = sts.key_change_set(new_key(drn), key_bits=64, ken=255, krn=2, kt=2, ti=1, ro=int(base_date != 2014))
    return [sts.encode(s, STA, old_key(drn)) for s in sections]


@dataclass
class Fleet:
    w: World
    meters: dict[str, Meter]  # DRN -> the virtual meter in the field
    base: dict[str, int]  # DRN -> the base date it is on
    phones: set[str]  # DRNs whose customer has a phone
    on_target: str
    retired: str
    under_way: str

    def at(self, **delta: float) -> dt.datetime:
        return START + dt.timedelta(**delta)

    def stored(self, cid: int) -> dict[str, dict[str, Any]]:
        """DRN -> the campaign's key_changes row."""
        with self.w.engine.connect() as conn:
            rows = conn.execute(
                select(meters.c.drn, key_changes)
                .join(meters, meters.c.id == key_changes.c.meter_id)
                .where(key_changes.c.campaign_id == cid)
            ).all()
        return {r.drn: r._asdict() for r in rows}

    def meter_row(self, drn: str) -> Any:
        with self.w.engine.connect() as conn:
            return conn.execute(select(meters).where(meters.c.drn == drn)).one()

    def enter(self, drn: str, digits: list[str], now: dt.datetime | None = None) -> list[str]:
        t = now or self.w.now[0]
        return [str(self.meters[drn].enter(d, t + dt.timedelta(seconds=i)).result) for i, d in enumerate(digits)]

    def vend(self, drn: str, amount: int = 5000, **extra: Any) -> dict[str, Any]:
        return self.w.vend(amount, meter=drn, **extra)

    def plan(self, **kwargs: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"name": f"c{len(self.campaign_ids())}", "sgc": SGC, "target": {"krn": 2}}
        return campaign.plan(self.w.engine, self.w.admin, **{**args, "at": self.w.now[0], **kwargs})

    def campaign_ids(self) -> list[int]:
        with self.w.engine.connect() as conn:
            return list(conn.execute(select(campaigns.c.id)).scalars())


@pytest.fixture
def fleet(engine: Engine) -> Fleet:  # noqa: F811 - the imported fixture
    w = build_world(engine)
    a = w.admin
    fleet_meters = {DRN: w.meter}
    base = {DRN: 2014}
    phones = set()
    for i, (mfr, area, base_date, phone) in enumerate(SPECS):
        drn = make_drn(i)
        customer = None
        if phone:
            customer = f"P-{i}"
            registry.Registry(engine).create_customer(
                a, account=customer, name=f"Customer {i}", phone=f"+2782000{i:04d}"
            )
            phones.add(drn)
        registry.Registry(engine).create_meter(
            a,
            drn=drn,
            sgc=SGC,
            tariff="domestic",
            manufacturer=mfr,
            area=area,
            base_date=base_date,
            customer=customer,
        )
        fleet_meters[drn] = Meter.create(
            drn=drn, ea=7, decoder_key=old_key(drn), sgc=SGC, ti=1, krn=1, kt=2, profile="legacy-ea07"
        )
        base[drn] = base_date
    # meters no campaign may pick
    on_target, retired, under_way = make_drn(50), make_drn(51), make_drn(52)
    registry.Registry(engine).create_meter(a, drn=on_target, sgc=SGC, tariff="domestic", manufacturer="Alpha", krn=2)
    registry.Registry(engine).create_meter(a, drn=retired, sgc=SGC, tariff="domestic", manufacturer="Alpha")
    registry.Registry(engine).set_meter_status(a, retired, "retired")
    registry.Registry(engine).create_meter(a, drn=under_way, sgc=SGC, tariff="domestic", manufacturer="Alpha")
    keyring.add_key(engine, a, sgc=SGC, krn=2, dkga=2, key_hex=SECOND_KEY_HEX, at=START)
    keyring.activate_key(engine, a, sgc=SGC, krn=2, at=START)
    w.svc.request_key_change(w.operator, under_way, {"krn": 2})  # an operator's change, not yet confirmed
    return Fleet(w, fleet_meters, base, phones, on_target, retired, under_way)


def counts(f: Fleet, cid: int) -> dict[str, int]:
    return campaign.get_campaign(f.w.engine, cid)["meters"]


# ---------------------------------------------------------------------------------------------- plan


def test_plan_selects_by_each_filter_and_never_picks_a_meter_twice(fleet: Fleet) -> None:
    f = fleet
    by = {drn: spec for drn, spec in zip([make_drn(i) for i in range(len(SPECS))], SPECS, strict=True)}

    def picked(cid: int) -> set[str]:
        return set(f.stored(cid))

    c1 = f.plan(selection={"base_date": 1993})
    assert picked(c1["id"]) == {d for d, s in by.items() if s[2] == 1993}
    c2 = f.plan(selection={"manufacturer": "Beta", "area": "north"})
    assert picked(c2["id"]) == {d for d, s in by.items() if s[0] == "Beta" and s[1] == "north"}
    c3 = f.plan(selection={"area": "south"})  # the 1993 meters in the south are taken already
    assert picked(c3["id"]) == {d for d, s in by.items() if s[1] == "south" and s[2] == 2014}
    c4 = f.plan(selection={"krn": 1, "manufacturer": "Alpha"})
    assert picked(c4["id"]) == {d for d, s in by.items() if s[0] == "Alpha" and s[1] == "north"}
    rest = f.plan()  # no selection: what is left of the group
    assert picked(rest["id"]) == {DRN}
    assert f.plan(selection={"area": "nowhere"})["planned"] == 0
    everyone = set().union(*(picked(c["id"]) for c in (c1, c2, c3, c4, rest)))
    assert everyone == set(f.meters)
    for left_out in (f.on_target, f.retired, f.under_way):
        assert left_out not in everyone
    for c in (c1, c2, c3, c4, rest):
        assert c["planned"] == len(picked(c["id"])) and c["status"] == "planned"
        assert c["meters"] == {"planned": c["planned"], "issued": 0, "delivered": 0, "confirmed": 0, "cancelled": 0}
        assert c["target"] == {**TARGET, "ea": None, "kt": None, "dkga": 2}  # meters keep their own EA and KT
    assert c2["selection"] == {"manufacturer": "Beta", "area": "north"}
    # planning sends nothing: no meter's record changed
    assert all(f.meter_row(d).pending_key is None for d in f.meters)


def test_plan_splits_into_batches_in_meter_order(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(batch_size=3)
    assert c["planned"] == len(f.meters) == 11 and c["batches"] == 4
    with f.w.engine.connect() as conn:
        rows = conn.execute(
            select(key_changes.c.batch, key_changes.c.meter_id)
            .where(key_changes.c.campaign_id == c["id"])
            .order_by(key_changes.c.meter_id)
        ).all()
    assert [r.batch for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]


def test_plan_refusals(fleet: Fleet) -> None:
    f = fleet
    refused("invalid_request", f.plan, selection={"colour": "red"})
    refused("invalid_request", f.plan, delivery="pigeon")
    refused("invalid_request", f.plan, batch_size=0)
    refused("invalid_request", f.plan, name="")
    refused("invalid_request", f.plan, target={"base_date": 2014})
    refused("invalid_request", f.plan, target={"krn": 2, "sgc": "654321"})
    refused("no_vending_key", f.plan, target={"krn": 7})
    refused("invalid_dkga", f.plan, target={"krn": 2, "ea": 11})
    refused("range_error", f.plan, target={"krn": 2, "ken": 256})
    refused("not_found", f.plan, sgc="999999")
    refused("forbidden", campaign.plan, f.w.engine, f.w.operator, name="x", sgc=SGC, target={"krn": 2}, at=START)
    assert f.campaign_ids() == []  # a refused plan leaves nothing behind


# ---------------------------------------------------------------------------------------------- generate


def test_generate_is_resumable_and_makes_the_single_path_sets(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(batch_size=4, delivery="csv")
    seen: list[tuple[int, int]] = []
    first = campaign.generate(
        f.w.engine, f.w.admin, c["id"], at=f.at(hours=1), max_batches=1, progress=lambda d, n: seen.append((d, n))
    )
    assert first["meters"]["issued"] == 4 and first["meters"]["planned"] == 7 and first["status"] == "generating"
    assert seen == [(0, 11), (4, 11)]
    before = f.stored(c["id"])
    done_first = {d for d, r in before.items() if r["status"] == "issued"}
    assert len(done_first) == 4 and all(before[d]["batch"] == 0 for d in done_first)

    seen.clear()
    second = campaign.generate(
        f.w.engine, f.w.admin, c["id"], at=f.at(hours=2), progress=lambda d, n: seen.append((d, n))
    )
    assert second["status"] == "generated" and second["meters"]["issued"] == 11 and second["meters"]["planned"] == 0
    assert seen == [(4, 11), (8, 11), (11, 11)]
    after = f.stored(c["id"])
    for drn, row in after.items():
        # generated once: the first batch kept its issue time, the rest carry the second run's
        assert row["issued_at"] == (f.at(hours=1) if drn in done_first else f.at(hours=2))
        assert row["tokens"] == expected_set(drn, f.base[drn])
        assert row["from_key"] == {**TARGET, "krn": 1, "base_date": f.base[drn], "ti": 1}
        assert row["to_key"] == {**TARGET, "ti": 1}
        pending = f.meter_row(drn).pending_key
        assert pending == {**TARGET, "ti": 1, "last_tid": -1, "attach": False, "campaign": c["id"]}
    with f.w.engine.connect() as conn:
        per_meter = conn.execute(
            select(func.count()).select_from(key_changes).group_by(key_changes.c.meter_id).having(func.count() > 1)
        ).all()
    assert per_meter == []
    # a third run finds nothing to do and changes nothing
    assert campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=3))["meters"] == second["meters"]
    assert f.stored(c["id"]) == after
    # and every set moves its meter: RO = 1 for the 1993 meters
    for drn, row in after.items():
        assert f.enter(drn, row["tokens"], f.at(hours=4)) == ["kct_pending", "key_changed"]
        assert f.meters[drn].state.decoder_key == new_key(drn) and f.meters[drn].state.krn == 2


def test_generation_that_crashes_resumes_at_the_unfinished_batch(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    f = fleet
    c = f.plan(batch_size=5)
    real = campaign_service._generate_batch
    calls: list[int] = []

    def flaky(conn: Any, cid: int, batch: int, *args: Any) -> int:
        calls.append(batch)
        if batch == 1:
            real(conn, cid, batch, *args)  # written, then the process dies before the commit
            raise RuntimeError("power cut")
        return real(conn, cid, batch, *args)

    monkeypatch.setattr(campaign_service, "_generate_batch", flaky)
    with pytest.raises(RuntimeError):
        campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    assert counts(f, c["id"])["issued"] == 5 and counts(f, c["id"])["planned"] == 6
    stored = f.stored(c["id"])
    assert all(f.meter_row(d).pending_key is None for d, r in stored.items() if r["batch"] == 1)  # rolled back
    monkeypatch.setattr(campaign_service, "_generate_batch", real)
    out = campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=2))
    assert out["status"] == "generated" and out["meters"]["issued"] == 11
    assert calls == [0, 1]
    for drn, row in f.stored(c["id"]).items():
        assert row["tokens"] == expected_set(drn, f.base[drn])


def test_generate_refuses_a_closed_campaign_and_needs_admin(fleet: Fleet) -> None:
    f = fleet
    c = f.plan()
    refused("forbidden", campaign.generate, f.w.engine, f.w.operator, c["id"], at=START)
    with f.w.engine.begin() as conn:
        conn.execute(update(campaigns).where(campaigns.c.id == c["id"]).values(status="closed"))
    refused("conflict", campaign.generate, f.w.engine, f.w.admin, c["id"], at=START)
    refused("not_found", campaign.generate, f.w.engine, f.w.admin, 999, at=START)


# ---------------------------------------------------------------------------------------------- delivery


def test_an_attach_campaign_rides_on_the_next_purchase(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(delivery="attach", selection={"manufacturer": "Beta"})
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    stored = f.stored(c["id"])
    drn = next(iter(sorted(stored)))
    f.w.advance(hours=2)
    v = f.vend(drn)  # no include_key_change: the campaign asked for it
    kinds = [t["kind"] for t in v["tokens"]]
    assert kinds[:2] == ["key_change", "key_change"] and set(kinds[2:]) <= {"credit", "fbe"}
    assert [t["digits"] for t in v["tokens"][:2]] == stored[drn]["tokens"] == expected_set(drn, 2014)
    assert v["key"]["krn"] == 2
    before = f.meters[drn].registers().get("electricity", 0)
    assert f.enter(drn, [t["digits"] for t in v["tokens"]]) == ["kct_pending", "key_changed"] + ["accept"] * (
        len(kinds) - 2
    )
    assert f.meters[drn].registers()["electricity"] == before + sum(t["units"] for t in v["tokens"])
    row = f.stored(c["id"])[drn]
    assert row["status"] == "delivered" and row["vend_id"] == v["id"] and row["tokens"] == stored[drn]["tokens"]
    assert counts(f, c["id"])["delivered"] == 1
    f.w.svc.vend_accepted(f.w.operator, v["id"])
    assert counts(f, c["id"])["confirmed"] == 1 and f.stored(c["id"])[drn]["status"] == "confirmed"
    m = f.meter_row(drn)
    assert (m.krn, m.base_date, m.pending_key) == (2, 2014, None)
    f.w.advance(hours=1)
    v2 = f.vend(drn)
    assert [t["kind"] for t in v2["tokens"]] == ["credit"]
    assert f.enter(drn, [t["digits"] for t in v2["tokens"]]) == ["accept"]


def test_a_csv_campaign_meter_needs_the_key_change_asked_for(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(delivery="csv", selection={"area": "north"})
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    stored = f.stored(c["id"])
    drn = sorted(stored)[0]
    f.w.advance(hours=2)
    refused("key_change_required", f.w.svc.vend, f.w.vendor, "csv-1", {"meter": drn, "amount": 5000})
    v = f.vend(drn, include_key_change=True)
    assert [t["digits"] for t in v["tokens"][:2]] == stored[drn]["tokens"]
    assert f.enter(drn, [t["digits"] for t in v["tokens"]])[:2] == ["kct_pending", "key_changed"]
    assert f.stored(c["id"])[drn]["status"] == "delivered"


def test_export_csv_lists_the_meters_still_to_confirm(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(delivery="csv", selection={"manufacturer": "Alpha"})
    assert list(campaign.export_csv(f.w.engine, c["id"])) == [",".join(campaign_service.CSV_COLUMNS) + "\n"]
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    rows = list(csv.DictReader(io.StringIO("".join(campaign.export_csv(f.w.engine, c["id"])))))
    assert sorted(r["meter"] for r in rows) == sorted(make_drn(i) for i in range(5))
    for r in rows:
        i = int(r["meter"][2:10]) - 60000000
        mfr, area, base_date, phone = SPECS[i]
        assert (r["manufacturer"], r["area"]) == (mfr, area)
        assert r["account"] == (f"P-{i}" if phone else "")
        assert (r["from_krn"], r["from_base_date"], r["to_krn"], r["to_base_date"]) == (
            "1",
            str(base_date),
            "2",
            "2014",
        )
        assert [r["token_1"], r["token_2"]] == expected_set(r["meter"], base_date)
        assert r["token_3"] == r["token_4"] == ""
    # a confirmed meter leaves the list
    done = rows[0]["meter"]
    assert campaign.mark(f.w.svc, f.w.operator, c["id"], [done], "confirmed", at=f.at(hours=2))["marked"] == 1
    again = list(csv.DictReader(io.StringIO("".join(campaign.export_csv(f.w.engine, c["id"])))))
    assert len(again) == len(rows) - 1 and done not in {r["meter"] for r in again}
    refused("not_found", lambda: list(campaign.export_csv(f.w.engine, 999)))


def test_queue_sms_once_per_meter_with_a_phone(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(delivery="sms")
    assert campaign.queue_sms(f.w.engine, f.w.operator, c["id"], at=START) == 0  # nothing generated yet
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    stored = f.stored(c["id"])
    assert campaign.queue_sms(f.w.engine, f.w.operator, c["id"], at=f.at(hours=2)) == len(f.phones) == 6
    with f.w.engine.connect() as conn:
        sms = [r.payload for r in conn.execute(select(outbox).where(outbox.c.channel == "sms"))]
    assert sorted(p["meter"] for p in sms) == sorted(f.phones)
    for p in sms:
        assert p["campaign"] == c["id"] and p["key_change_id"] == stored[p["meter"]]["id"]
        assert p["phone"].startswith("+2782000")
        assert p["text"].endswith(" ".join(stored[p["meter"]]["tokens"]))
    assert campaign.queue_sms(f.w.engine, f.w.operator, c["id"], at=f.at(hours=3)) == 0  # idempotent
    with f.w.engine.connect() as conn:
        assert conn.execute(select(func.count()).where(outbox.c.channel == "sms")).scalar_one() == 6
    refused("forbidden", campaign.queue_sms, f.w.engine, f.w.vendor, c["id"], at=START)


def test_mark_delivered_and_confirmed(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(delivery="csv")
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    stored = f.stored(c["id"])
    alpha = [make_drn(i) for i in (0, 1, 3)]  # two on base 2014, one on base 1993
    f.w.advance(hours=2)
    out = campaign.mark(f.w.svc, f.w.operator, c["id"], [*alpha, f.on_target], "delivered", at=f.w.now[0])
    assert out == {"marked": 3, "not_in_campaign": 1}
    assert counts(f, c["id"]) == {"planned": 0, "issued": 8, "delivered": 3, "confirmed": 0, "cancelled": 0}
    assert all(f.stored(c["id"])[d]["delivered_at"] == f.w.now[0] for d in alpha)
    for drn in alpha:  # the field team keys them in
        assert f.enter(drn, stored[drn]["tokens"]) == ["kct_pending", "key_changed"]
    f.w.advance(hours=1)
    out = campaign.mark(f.w.svc, f.w.operator, c["id"], [*alpha[:2], make_drn(5)], "confirmed", at=f.w.now[0])
    assert out == {"marked": 3, "not_in_campaign": 0}
    assert counts(f, c["id"]) == {"planned": 0, "issued": 7, "delivered": 1, "confirmed": 3, "cancelled": 0}
    # confirming twice: the meter is no longer waiting in this campaign
    assert campaign.mark(f.w.svc, f.w.operator, c["id"], alpha[:1], "confirmed", at=f.w.now[0])["not_in_campaign"] == 1
    for drn in alpha[:2]:
        m = f.meter_row(drn)
        assert (m.krn, m.base_date, m.ken, m.pending_key, m.last_tid) == (2, 2014, 255, None, -1)
        f.w.advance(minutes=5)
        v = f.vend(drn)
        assert [t["kind"] for t in v["tokens"]] in (["credit"], ["credit", "fbe"])  # no key change tokens
        assert v["key"] == {"sgc": SGC, "krn": 2, "kt": 2, "ti": 1, "ea": 7, "base_date": 2014, "ken": 255}
        before = f.meters[drn].registers().get("electricity", 0)
        assert f.enter(drn, [t["digits"] for t in v["tokens"]]) == ["accept"] * len(v["tokens"])
        assert f.meters[drn].registers()["electricity"] == before + sum(t["units"] for t in v["tokens"])
    # the 1993 meter, delivered and keyed in but not yet confirmed, is vended the change again when asked
    f.w.advance(minutes=5)
    v = f.vend(alpha[2], include_key_change=True)
    assert [t["digits"] for t in v["tokens"][:2]] == stored[alpha[2]]["tokens"]
    assert f.enter(alpha[2], [t["digits"] for t in v["tokens"][2:]]) == ["accept"] * (len(v["tokens"]) - 2)
    refused("invalid_request", campaign.mark, f.w.svc, f.w.operator, c["id"], alpha, "lost", at=f.w.now[0])
    refused("forbidden", campaign.mark, f.w.svc, f.w.vendor, c["id"], alpha, "delivered", at=f.w.now[0])


def test_a_vend_that_delivered_the_change_first_is_not_overwritten(fleet: Fleet) -> None:
    f = fleet
    c = f.plan(delivery="csv", batch_size=4)
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1), max_batches=1)
    planned = sorted(d for d, r in f.stored(c["id"]).items() if r["status"] == "planned")
    early = planned[-1]  # in the last batch, which generation has not reached
    f.w.advance(hours=2)
    v = f.vend(early, include_key_change=True)
    vend_tokens = [t["digits"] for t in v["tokens"] if t["kind"] == "key_change"]
    credit_tid = max(t["tid"] for t in v["tokens"] if t["tid"] is not None)
    assert vend_tokens == expected_set(early, f.base[early])
    row = f.stored(c["id"])[early]
    assert row["status"] == "delivered" and row["vend_id"] == v["id"] and row["tokens"] == vend_tokens
    pending = f.meter_row(early).pending_key
    assert pending["last_tid"] == credit_tid

    out = campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=3))
    assert out["status"] == "generated"
    assert out["meters"] == {"planned": 0, "issued": 10, "delivered": 1, "confirmed": 0, "cancelled": 0}
    row = f.stored(c["id"])[early]
    assert row["status"] == "delivered" and row["vend_id"] == v["id"] and row["tokens"] == vend_tokens
    assert row["issued_at"] == f.w.now[0]  # the vend's, not the generation's
    assert f.meter_row(early).pending_key == pending  # the TIDs issued under the new key are still counted
    # the field list still shows the meter (delivered, not confirmed) with the tokens it was given
    rows = {r["meter"]: r for r in csv.DictReader(io.StringIO("".join(campaign.export_csv(f.w.engine, c["id"]))))}
    assert [rows[early]["token_1"], rows[early]["token_2"]] == vend_tokens
    assert (rows[early]["from_krn"], rows[early]["to_krn"]) == ("1", "2")
    # and the meter's next purchase continues above the vend's TID
    assert f.enter(early, [t["digits"] for t in v["tokens"]])[:2] == ["kct_pending", "key_changed"]
    f.w.svc.vend_accepted(f.w.operator, v["id"])
    v2 = f.vend(early)
    assert min(t["tid"] for t in v2["tokens"]) > credit_tid
    assert f.enter(early, [t["digits"] for t in v2["tokens"]]) == ["accept"] * len(v2["tokens"])
    assert counts(f, c["id"])["confirmed"] == 1


def test_campaign_of_an_unknown_id(fleet: Fleet) -> None:
    refused("not_found", campaign.get_campaign, fleet.w.engine, 12345)
    refused("not_found", campaign.queue_sms, fleet.w.engine, fleet.w.admin, 12345, at=START)
    with pytest.raises(VendError):
        campaign.mark(fleet.w.svc, fleet.w.admin, 12345, [DRN], "confirmed", at=START)


def test_an_operator_change_after_planning_is_not_overwritten(fleet: Fleet) -> None:
    """An operator's change issued between plan and generation wins: its tokens may be in the meter already."""
    f = fleet
    c = f.plan(delivery="csv")
    drn = make_drn(0)
    r = f.w.svc.request_key_change(f.w.operator, drn, {"krn": 2, "ken": 200})
    theirs = f.meter_row(drn).pending_key
    assert theirs["ken"] == 200
    out = campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    assert out["status"] == "generated"
    assert out["meters"] == {"planned": 0, "issued": 10, "delivered": 0, "confirmed": 0, "cancelled": 1}
    assert f.stored(c["id"])[drn]["status"] == "cancelled" and f.stored(c["id"])[drn]["tokens"] is None
    assert f.meter_row(drn).pending_key == theirs
    assert f.enter(drn, [t["digits"] for t in r["tokens"]]) == ["kct_pending", "key_changed"]
    f.w.svc.confirm_key_change(f.w.operator, drn)
    assert f.meter_row(drn).ken == f.meters[drn].state.ken == 200  # the record says what the meter holds


def test_a_vend_that_delivered_a_planned_change_records_from_and_to(fleet: Fleet) -> None:
    """A vend that carries the change of a meter whose campaign row is still ``planned`` records the change's
    from and to on that row (it used to leave them NULL: the history showed a change from nothing to nothing,
    and ``export_csv`` crashed on the row)."""
    f = fleet
    c = f.plan(delivery="csv")
    drn = make_drn(3)  # a 1993 meter
    v = f.vend(drn, include_key_change=True)
    (row,) = [h for h in f.w.svc.key_change_history(f.w.operator, drn) if h["campaign"] == c["id"]]
    assert row["status"] == "delivered" and row["vend"] == v["id"]
    assert (row["from"], row["to"]) == ({**TARGET, "krn": 1, "base_date": 1993, "ti": 1}, {**TARGET, "ti": 1}), (
        f"the campaign row a vend delivered has from={row['from']} to={row['to']}"
    )


def test_a_vend_after_the_change_was_marked_delivered_can_be_reported_accepted(fleet: Fleet) -> None:
    """The SMS gateway reported the set delivered; the customer then buys, asking for the change again, keys it
    all in and reports the vend's tokens accepted.

    BUG (src/mita/vend/service.py, VendingService._key_change_delivered): for a meter whose campaign row is
    already ``delivered`` the vend neither updates that row (it only takes ``planned``/``issued``) nor inserts
    one (one ``delivered`` row exists), so no row carries the vend's id and ``vend_accepted`` answers
    ``no_pending_key`` ("carried no key change") although the vend did carry it. The same happens to an attach
    campaign's meter marked delivered before its next purchase.
    """
    f = fleet
    c = f.plan(delivery="sms")
    campaign.generate(f.w.engine, f.w.admin, c["id"], at=f.at(hours=1))
    drn = make_drn(0)
    assert campaign.mark(f.w.svc, f.w.operator, c["id"], [drn], "delivered", at=f.at(hours=2))["marked"] == 1
    f.w.advance(hours=3)
    v = f.vend(drn, include_key_change=True)
    assert f.enter(drn, [t["digits"] for t in v["tokens"]])[:2] == ["kct_pending", "key_changed"]
    try:
        f.w.svc.vend_accepted(f.w.operator, v["id"])
    except VendError as exc:
        pytest.fail(f"vend_accepted for a vend that carried the key change was refused: {exc.code}: {exc}")
    assert counts(f, c["id"])["confirmed"] == 1


# ---------------------------------------------------------------------------------------------- the rules


def test_a_roll_over_under_the_same_krn_is_refused(fleet: Fleet) -> None:
    """RO = 1 under an unchanged key would let a customer re-enter the set and replay every credit token."""
    f = fleet
    refused("invalid_key_change", f.plan, target={"krn": 2, "base_date": 2035}, selection={"krn": 2})
    refused("invalid_key_change", f.w.svc.request_key_change, f.w.operator, f.on_target, {"base_date": 2035})


def test_an_ea_move_other_than_07_to_11_is_refused(fleet: Fleet) -> None:
    f = fleet
    refused("invalid_key_change", f.plan, target={"krn": 2, "ea": 9})
    refused("invalid_key_change", f.w.svc.request_key_change, f.w.operator, make_drn(0), {"krn": 2, "ea": 9})


def test_generation_waits_for_the_key_to_be_active(fleet: Fleet) -> None:
    f = fleet
    keyring.add_key(f.w.engine, f.w.admin, sgc=SGC, krn=3, dkga=2, at=START)
    c = f.plan(target={"krn": 3})  # planning ahead is fine
    refused("key_not_active", campaign.generate, f.w.engine, f.w.admin, c["id"], at=START)
    assert counts(f, c["id"])["issued"] == 0 and f.meter_row(make_drn(0)).pending_key is None
    keyring.activate_key(f.w.engine, f.w.admin, sgc=SGC, krn=3, at=START)
    assert campaign.generate(f.w.engine, f.w.admin, c["id"], at=START)["status"] == "generated"


def test_meters_whose_old_key_is_gone_are_cancelled_and_the_rest_generated(fleet: Fleet) -> None:
    f = fleet
    keyring.add_key(f.w.engine, f.w.admin, sgc=SGC, krn=3, dkga=2, at=START)
    keyring.activate_key(f.w.engine, f.w.admin, sgc=SGC, krn=3, at=START)
    on_two = f.on_target  # the one meter on KRN 2
    keyring.retire_key(f.w.engine, f.w.admin, sgc=SGC, krn=1, at=START, destroy=True)
    c = f.plan(target={"krn": 3}, batch_size=1000)
    done = campaign.generate(f.w.engine, f.w.admin, c["id"], at=START)
    assert done["status"] == "generated"
    assert done["meters"]["issued"] == 1 and done["meters"]["cancelled"] == c["planned"] - 1
    assert f.stored(c["id"])[on_two]["status"] == "issued"


def test_acceptance_of_an_old_vend_does_not_confirm_a_newer_change(fleet: Fleet) -> None:
    f = fleet
    drn = make_drn(1)  # on KRN 1, base 2014 (SPECS)
    assert f.base[drn] == 2014
    first = f.vend(drn, include_key_change=True)  # carries KRN 1 -> 2
    f.w.svc.cancel_key_change(f.w.operator, drn)
    f.w.svc.request_key_change(f.w.operator, drn, {"krn": 2, "ken": 200})
    refused("key_change_superseded", f.w.svc.vend_accepted, f.w.operator, first["id"])
    assert f.meter_row(drn).krn == 1 and f.meter_row(drn).pending_key["ken"] == 200
