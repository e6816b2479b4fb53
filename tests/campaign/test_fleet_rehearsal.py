"""Fleet rehearsal of the TID roll-over (SPEC.md §10), on SQLite and PostgreSQL, with 2,400 virtual meters.

Base date 1993 runs out on 2024-11-24 20:16: from that minute no TID on it fits in 24 bits. The remedy
(SPEC.md §10, tidrollover.com) is a key change with RO = 1 to a new KRN whose tokens count from base 2014.
This is the whole operation, rehearsed the way a utility would run it:

* two supply groups on base 1993, KRN 1: "A" (DKGA02, EA07, 1,600 legacy-ea07 meters) and "B" (DKGA04,
  500 Edition 2 meters on EA07 and 300 on EA11);
* every meter accepts 1993 credit a few days before the roll-over (the vending service warns of it);
* KRN 2 keys are imported and activated on base 2014; group B moves to EA11 at the same time, so its EA07
  meters migrate with the 4-token set, and its new key carries KEN 200;
* a campaign per group is planned and generated (group A resumed after a stop), each meter keys in its
  stored set (half before the roll-over, half after: the meter has no clock, it only compares TIDs);
* the field reports come back (``mark(..., "confirmed")``), and every meter buys credit through the
  vending service: accepted, the credit register rising by exactly the token's units;
* tokens of the old world entered after the change are refused.

The virtual meters hold decoder keys derived here with ``mita.sts.derive_decoder_key``, independently of
the service's keystore; they see nothing but 20 digits.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, insert, select
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita import campaign, sts
from mita.keys.software import key_check_value
from mita.meter import Meter
from mita.sts import EA, BaseDate, bulk
from mita.vend import keyring, registry
from mita.vend.errors import VendError
from mita.vend.schema import key_changes, meters, supply_groups, tariffs
from mita.vend.service import Caller, VendingService

SGC_A, SGC_B = "600100", "600200"
OLD_KEY_A, NEW_KEY_A = "0123456789abcdef", "fedcba9876543210"  # DKGA02 vending keys (KRN 1, KRN 2)
OLD_KEY_B = "abababababababab949494949494949401234567"  # DKGA04 (160 bits), as in the compliance suites
NEW_KEY_B = "5a5a5a5a5a5a5a5a3c3c3c3c3c3c3c3c76543210"
NEW_KEN_B = 200  # group B's new key expires (KEN) in 2039: see the 1993-era TID check below
PRICE = {"blocks": [{"up_to": None, "price": "2.00"}]}  # per kWh, no VAT, no fixed charge: 1000c = 5 kWh

ROLLOVER = BaseDate.Y1993.rollover  # 2024-11-24 20:16
T_OLD_CREDIT = dt.datetime(2024, 11, 20, 10, 0)  # the last purchases on base 1993
T_ACTIVATE = dt.datetime(2024, 11, 21, 9, 0)  # KRN 2 activated, campaigns planned and generated
T_FIELD_EARLY = dt.datetime(2024, 11, 22, 8, 0)  # half the fleet keys its set in before the roll-over ...
T_FIELD_LATE = dt.datetime(2024, 11, 25, 8, 0)  # ... the other half after it
T_CONFIRM = dt.datetime(2024, 11, 25, 18, 0)
T_NEW_CREDIT = dt.datetime(2024, 11, 26, 10, 0)  # the first purchases on base 2014
T_LATE_1993 = dt.datetime(2024, 11, 23, 12, 0)  # a 1993 token bought before the roll-over, keyed in late


@dataclass
class FieldMeter:
    drn: str
    group: str  # "A" or "B"
    old_ea: EA
    meter: Meter
    old_key: int  # decoder keys derived here, not by the service
    new_key: int


@dataclass
class Rehearsal:
    engine: Engine
    svc: VendingService
    now: list[dt.datetime]
    operator: Caller
    fleet: list[FieldMeter]
    admin: Caller = registry.SYSTEM
    keys: Any = field(default_factory=lambda: iter(range(10**9)))

    def vend(self, drn: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
        issued = self.svc.vend(self.operator, f"v{next(self.keys)}", {"meter": drn, "amount": amount, **extra})
        assert not issued.replayed
        return issued.body

    def of(self, group: str) -> list[FieldMeter]:
        return [m for m in self.fleet if m.group == group]


def drn(prefix: str, i: int) -> str:
    payload = f"{prefix}{i:08d}"
    return payload + str(sts.luhn_digit(payload))


def derive(dkga: int, vk: str, number: str, sgc: str, krn: int, base: int, ea: EA) -> int:
    meter = sts.MeterNumber.parse(number)
    return sts.derive_decoder_key(dkga, bytes.fromhex(vk), meter, 2, sgc, 1, krn, BaseDate(base), ea)


def build(engine: Engine, n_a: int, n_b07: int, n_b11: int) -> Rehearsal:  # noqa: F811 - not the fixture
    """The two supply groups on base 1993, the tariff, the meters (one bulk INSERT) and their twins in the field."""
    admin = registry.SYSTEM
    registry.Registry(engine).create_supply_group(
        admin, sgc=SGC_A, name="Group A", vending_key=OLD_KEY_A, dkga=2, ea=7, kt=2, krn=1, base_date=1993
    )
    registry.Registry(engine).create_supply_group(
        admin, sgc=SGC_B, name="Group B", vending_key=OLD_KEY_B, dkga=4, ea=7, kt=2, krn=1, base_date=1993
    )
    registry.Registry(engine).create_tariff(
        admin, name="flat", currency="ZAR", spec=PRICE, effective_from=dt.datetime(2020, 1, 1)
    )
    with engine.connect() as conn:
        gid = dict(conn.execute(select(supply_groups.c.sgc, supply_groups.c.id)).all())  # type: ignore[arg-type]
        tariff_id = conn.execute(select(tariffs.c.id)).scalar_one()
    plan = [("A", SGC_A, EA.STA, "47", i) for i in range(n_a)]
    plan += [("B", SGC_B, EA.STA, "58", i) for i in range(n_b07)]
    plan += [("B", SGC_B, EA.MISTY1, "58", n_b07 + i) for i in range(n_b11)]
    rows, fleet = [], []
    for group, sgc, ea, prefix, i in plan:
        number = drn(prefix, 10_000_000 + i)
        rows.append(
            {
                "drn": number,
                "iin": "600727",
                "manufacturer": "Acme" if group == "A" else "Edison",
                "area": f"area-{i % 7}",
                "supply_group_id": gid[sgc],
                "tariff_id": tariff_id,
                "utility": "electricity",
                "ti": 1,
                "kt": 2,
                "krn": 1,
                "ea": int(ea),
                "base_date": 1993,
                "ken": 255,
                "status": "active",
                "last_tid": -1,
                "created_at": dt.datetime(2024, 11, 1),
            }
        )
        if group == "A":
            old = derive(2, OLD_KEY_A, number, sgc, 1, 1993, ea)
            new = derive(2, NEW_KEY_A, number, sgc, 2, 2014, EA.STA)
        else:
            old = derive(4, OLD_KEY_B, number, sgc, 1, 1993, ea)
            new = derive(4, NEW_KEY_B, number, sgc, 2, 2014, EA.MISTY1)
        profile = "legacy-ea07" if group == "A" else "edition2-ea11"
        meter = Meter.create(drn=number, ea=int(ea), decoder_key=old, sgc=sgc, ti=1, krn=1, kt=2, profile=profile)
        fleet.append(FieldMeter(number, group, ea, meter, old, new))
    with engine.begin() as conn:
        conn.execute(insert(meters), rows)
    _, plaintext = registry.Registry(engine).create_api_key("field office", "operator")
    clock = [T_OLD_CREDIT]
    svc = VendingService(engine, clock=lambda: clock[0], rnd=lambda: 5)
    return Rehearsal(engine, svc, clock, registry.authenticate(engine, plaintext), fleet)


def warning_codes(entries: list[dict[str, Any]], krn: int) -> list[str]:
    (entry,) = [e for e in entries if e["krn"] == krn]
    return [w["code"] for w in entry["warnings"]]


def credit(m: FieldMeter) -> float:
    return m.meter.registers().get("electricity", 0)


def encode_credits(ms: list[FieldMeter], tid: int, units: int, key: str) -> list[str]:
    """1993-world credit tokens for many meters at once, with the bulk engine (grouped by algorithm)."""
    out: dict[str, str] = {}
    for ea in (EA.STA, EA.MISTY1):
        some = [m for m in ms if (m.old_ea if key == "old" else (EA.STA if m.group == "A" else EA.MISTY1)) == ea]
        if some:
            keys = [m.old_key if key == "old" else m.new_key for m in some]
            tids = np.full(len(some), tid)  # per token: the keys alone do not set the count
            digits = bulk.encode_credit(tids, units, 5, keys if ea is EA.MISTY1 else np.array(keys, np.uint64), ea)
            out.update(zip([m.drn for m in some], np.char.decode(digits, "ascii").tolist(), strict=True))
    return [out[m.drn] for m in ms]


def stored_sets(r: Rehearsal, cid: int) -> dict[str, list[str]]:
    with r.engine.connect() as conn:
        rows = conn.execute(
            select(meters.c.drn, key_changes.c.tokens)
            .join(key_changes, key_changes.c.meter_id == meters.c.id)
            .where(key_changes.c.campaign_id == cid)
        ).all()
    return {row.drn: row.tokens for row in rows}


# ---------------------------------------------------------------------------------------------- the rehearsal

N_A, N_B07, N_B11 = 1600, 500, 300


def test_fleet_rehearsal_of_the_tid_rollover(engine: Engine) -> None:  # noqa: F811 - the imported fixture
    started = time.perf_counter()
    r = build(engine, N_A, N_B07, N_B11)
    n = len(r.fleet)
    group_a, group_b = r.of("A"), r.of("B")
    assert (len(group_a), len(group_b), n) == (N_A, N_B07 + N_B11, 2400)

    # ---- 1. the last days of base 1993: the service warns, the meters take 1993 credit
    status = keyring.key_status(r.engine, T_OLD_CREDIT)
    assert {e["sgc"]: [w["code"] for w in e["warnings"]] for e in status} == {
        SGC_A: ["tid_rollover"],
        SGC_B: ["tid_rollover"],
    }
    old_tid = sts.tid_from_datetime(T_OLD_CREDIT, 1993)
    assert old_tid >> 16 == 255  # the last KEN period of the base
    for m, digits in zip(r.fleet, encode_credits(r.fleet, old_tid, 100, "old"), strict=True):
        assert m.meter.enter(digits, T_OLD_CREDIT).result == "accept", m.drn
        assert credit(m) == 100
    # a sample buys through the service too (group B's EA11 meters cannot before their change: see
    # test_an_ea11_meter_of_an_ea07_group_vends_on_its_own_algorithm)
    sample = group_a[:10] + group_b[:10]
    r.now[0] = T_OLD_CREDIT + dt.timedelta(hours=1)
    for m in sample:
        v = r.vend(m.drn)
        assert [w["code"] for w in v["warnings"]] == ["tid_rollover"]
        assert v["tokens"][0]["tid"] == old_tid + 60 and v["key"]["krn"] == 1
        assert m.meter.enter(v["tokens"][0]["digits"], r.now[0]).result == "accept"

    # ---- 2. KRN 2 on base 2014 (group B also to EA11), imported with their check values, then activated
    r.now[0] = T_ACTIVATE
    kcv_a, kcv_b = key_check_value(2, bytes.fromhex(NEW_KEY_A)), key_check_value(4, bytes.fromhex(NEW_KEY_B))
    keyring.add_key(r.engine, r.admin, sgc=SGC_A, krn=2, dkga=2, key_hex=NEW_KEY_A, kcv=kcv_a, at=T_ACTIVATE)
    keyring.add_key(
        r.engine, r.admin, sgc=SGC_B, krn=2, dkga=4, key_hex=NEW_KEY_B, kcv=kcv_b, ken=NEW_KEN_B, at=T_ACTIVATE
    )
    keyring.activate_key(r.engine, r.admin, sgc=SGC_A, krn=2, base_date=2014, at=T_ACTIVATE)
    keyring.activate_key(r.engine, r.admin, sgc=SGC_B, krn=2, base_date=2014, ea=11, at=T_ACTIVATE)
    status = keyring.key_status(r.engine, T_ACTIVATE)
    for sgc in (SGC_A, SGC_B):
        assert [(e["krn"], e["status"]) for e in status if e["sgc"] == sgc] == [(2, "active"), (1, "retired")]
        assert warning_codes([e for e in status if e["sgc"] == sgc], 2) == []
    with pytest.raises(VendError) as refused:  # no credit until the meter has the new key
        r.vend(group_a[-1].drn)
    assert refused.value.code == "key_change_required"

    # ---- 3. one campaign per group; group A's generation stops after two batches and is resumed
    ca = campaign.plan(
        r.engine,
        r.admin,
        name="rollover A",
        sgc=SGC_A,
        target={"krn": 2, "base_date": 2014},
        delivery="csv",
        batch_size=500,
        at=T_ACTIVATE,
    )
    cb = campaign.plan(
        r.engine,
        r.admin,
        name="rollover B",
        sgc=SGC_B,
        target={"krn": 2, "base_date": 2014, "ea": 11},
        delivery="sms",
        batch_size=500,
        at=T_ACTIVATE,
    )
    assert (ca["planned"], ca["batches"], cb["planned"], cb["batches"]) == (N_A, 4, N_B07 + N_B11, 2)
    want = {"sgc": SGC_B, "krn": 2, "base_date": 2014, "ea": 11, "kt": None, "ken": NEW_KEN_B, "dkga": 4}
    assert cb["target"] == want
    part = campaign.generate(r.engine, r.admin, ca["id"], at=T_ACTIVATE, max_batches=2)
    assert part["meters"]["issued"] == 1000 and part["meters"]["planned"] == N_A - 1000
    assert campaign.generate(r.engine, r.admin, ca["id"], at=T_ACTIVATE)["meters"]["issued"] == N_A
    assert campaign.generate(r.engine, r.admin, cb["id"], at=T_ACTIVATE)["meters"]["issued"] == N_B07 + N_B11
    sets = stored_sets(r, ca["id"]) | stored_sets(r, cb["id"])
    assert len(sets) == n

    # ---- 4. the field: every meter keys in its set and installs exactly the key derived here
    results: Counter[str] = Counter()
    for i, m in enumerate(r.fleet):
        t = T_FIELD_EARLY if i % 2 else T_FIELD_LATE
        kcts = sets[m.drn]
        assert len(kcts) == (2 if m.group == "A" else 4)
        got = [str(m.meter.enter(d, t + dt.timedelta(seconds=k)).result) for k, d in enumerate(kcts)]
        assert got == ["kct_pending"] * (len(kcts) - 1) + ["key_changed"], (m.drn, got)
        results[got[-1]] += 1
        s = m.meter.state
        assert (s.decoder_key, s.krn, s.kt, s.ti) == (m.new_key, 2, 2, 1), m.drn
        assert s.ea == (EA.STA if m.group == "A" else EA.MISTY1)
        assert s.ken == (255 if m.group == "A" else NEW_KEN_B)
        assert set(s.tids) == {0}  # RO = 1: the TID store was cleared
        assert credit(m) > 0  # credit bought before the change is kept
    assert results == {"key_changed": n}

    # ---- 5. the field reports come back
    for c, group in ((ca, group_a), (cb, group_b)):
        out = campaign.mark(r.svc, r.operator, c["id"], [m.drn for m in group], "confirmed", at=T_CONFIRM)
        assert out == {"marked": len(group), "not_in_campaign": 0}
    assert campaign.get_campaign(r.engine, ca["id"])["meters"]["confirmed"] == N_A
    assert campaign.get_campaign(r.engine, cb["id"])["meters"]["confirmed"] == N_B07 + N_B11
    with r.engine.connect() as conn:
        rows = conn.execute(select(meters.c.krn, meters.c.base_date, meters.c.ea, meters.c.ken, meters.c.pending_key))
        configs = Counter((x.krn, x.base_date, x.ea, x.ken, x.pending_key is None) for x in rows)
    assert configs == {(2, 2014, 7, 255, True): N_A, (2, 2014, 11, NEW_KEN_B, True): N_B07 + N_B11}

    # ---- 6. credit on base 2014 through the vending service: no key change tokens, accepted, exact
    r.now[0] = T_NEW_CREDIT
    new_tid = sts.tid_from_datetime(T_NEW_CREDIT, 2014)
    accepted = 0
    first_credit: dict[str, str] = {}
    for m in r.fleet:
        v = r.vend(m.drn)
        (tok,) = v["tokens"]
        assert (tok["kind"], tok["tid"], v["key"]["krn"]) == ("credit", new_tid, 2), (m.drn, v["tokens"])
        assert v["key"]["ea"] == (7 if m.group == "A" else 11)
        assert v["warnings"] == []
        before = credit(m)
        if m.meter.enter(tok["digits"], T_NEW_CREDIT).result == "accept":
            accepted += 1
        assert credit(m) == before + tok["units"] and tok["units"] == v["receipt"]["units"] == 50, m.drn
        first_credit[m.drn] = tok["digits"]
    assert accepted == n

    # ---- 7. the old world, keyed in after the change, is refused
    late_tid = sts.tid_from_datetime(T_LATE_1993, 1993)
    t = T_NEW_CREDIT + dt.timedelta(minutes=5)
    # a 1993 token bought before the roll-over (old key, 1993 TID): the meter decrypts it with its new key,
    # gets noise, and the CRC fails -- the standard's intent: old tokens die with the old key
    old_tokens = encode_credits(r.fleet, late_tid, 100, "old")
    old_world = Counter(str(m.meter.enter(d, t).result) for m, d in zip(r.fleet, old_tokens, strict=True))
    assert old_world == {"crc_error": n}
    # the new key with a 1993-era TID (about 16.77 million, minutes since 1993). The meter is never told a
    # base date (SPEC.md §10): after RO = 1 cleared its store it only compares numbers, and this one reads as
    # a TID of 2045 on base 2014. So the meter itself cannot refuse it unless the KEN does: with KEN 255
    # (group A) it is accepted, which is why the vending side must count every TID under the new key from
    # 2014 (step 6 checks it does); with KEN 200 (group B, until 2039) it is refused as key_expired.
    crossed = Counter(
        (m.group, str(m.meter.enter(d, t + dt.timedelta(minutes=1)).result))
        for m, d in zip(r.fleet, encode_credits(r.fleet, late_tid, 10, "new"), strict=True)
    )
    assert late_tid >> 16 == 255 > NEW_KEN_B
    assert crossed == {("A", "accept"): N_A, ("B", "key_expired"): N_B07 + N_B11}
    # and a 2014 credit token keyed in twice is used
    replayed = Counter(str(m.meter.enter(first_credit[m.drn], t + dt.timedelta(minutes=2)).result) for m in group_a)
    assert replayed == {"used": N_A}

    elapsed = time.perf_counter() - started
    # reported, never asserted: time is measured in benchmarks/, and a busy CI machine is not a wrong answer
    print(f"\nfleet rehearsal on {engine.dialect.name}: {n} meters in {elapsed:.1f} s")


# ---------------------------------------------------------------------------------------------- the boundary


def test_the_1993_base_runs_out_at_the_rollover_minute(engine: Engine) -> None:  # noqa: F811
    """The last minute of base 1993 is TID 0xFFFFFF; the next is refused; a key change with RO = 1 is the way on.

    Without RO = 1 a meter keeps its TID store, full of 1993 TIDs near 2^24, and refuses every 2014 TID as
    older than its oldest: the twin below shows it.
    """
    r = build(engine, 2, 0, 0)
    m = r.fleet[0]
    for k in range(25):  # years of purchases: the meter's TID store is full of TIDs near 2^24
        tid = sts.tid_from_datetime(ROLLOVER - dt.timedelta(days=25 - k), 1993)
        token = sts.encode(sts.TransferCredit(tid, 10, 5), EA.STA, m.old_key)
        assert m.meter.enter(token, ROLLOVER - dt.timedelta(days=25 - k)).result == "accept"
    r.now[0] = ROLLOVER - dt.timedelta(minutes=1)
    v = r.vend(m.drn)
    assert v["tokens"][0]["tid"] == sts.tid.TID_MAX
    assert m.meter.enter(v["tokens"][0]["digits"], r.now[0]).result == "accept"
    r.now[0] = ROLLOVER
    with pytest.raises(VendError) as exc:
        r.vend(m.drn)
    assert exc.value.code == "key_change_required" and "rolled over" in str(exc.value)

    keyring.add_key(r.engine, r.admin, sgc=SGC_A, krn=2, dkga=2, key_hex=NEW_KEY_A, at=r.now[0])
    keyring.activate_key(r.engine, r.admin, sgc=SGC_A, krn=2, base_date=2014, at=r.now[0])
    r.now[0] = ROLLOVER + dt.timedelta(minutes=1)
    twin = copy.deepcopy(m.meter)
    v = r.vend(m.drn, include_key_change=True)
    assert [t["kind"] for t in v["tokens"]] == ["key_change", "key_change", "credit"]
    assert v["tokens"][2]["tid"] == sts.tid_from_datetime(r.now[0], 2014)
    # credit made on the new base, keyed in before the key change: the meter still has the old key
    assert m.meter.enter(v["tokens"][2]["digits"], r.now[0]).result == "crc_error"
    got = [str(m.meter.enter(t["digits"], r.now[0]).result) for t in v["tokens"]]
    assert got == ["kct_pending", "key_changed", "accept"]
    assert r.svc.vend_accepted(r.operator, v["id"])["key"]["base_date"] == 2014

    # the twin gets the same new key with RO = 0: its store still holds TID 0xFFFFFF and 1993 TIDs
    same_key = sts.key_change_set(m.new_key, key_bits=64, ken=255, krn=2, kt=2, ti=1, ro=0)
    for section in same_key:
        twin.enter(sts.encode(section, EA.STA, m.old_key), r.now[0])
    assert twin.state.decoder_key == m.new_key
    assert twin.enter(v["tokens"][2]["digits"], r.now[0]).result == "old"


def test_an_ea11_meter_of_an_ea07_group_vends_on_its_own_algorithm(engine: Engine) -> None:  # noqa: F811
    """A DKGA04 group on EA07 with some EA11 meters (``registry.create_meter(ea=11)`` allows it, and a fleet
    migrating to MISTY1 looks like this).

    BUG (src/mita/vend/service.py, ``VendingService.group_config`` as used by ``_vend_locked``): without a
    pending key the vend compares the meter's configuration with the *group's* EA, KT and KEN, so the EA11
    meter is refused ``key_change_required`` with "KRN 1 -> 1, base date 1993 -> 1993", and asking with
    ``include_key_change`` would send it a 2-token set that moves it back to a 64-bit EA07 key. A meter on the
    group's KRN and base date should vend under its own EA (and KT, KEN).
    """
    r = build(engine, 0, 1, 1)
    ea07, ea11 = r.fleet
    r.now[0] = T_OLD_CREDIT
    v = r.vend(ea07.drn)
    assert ea07.meter.enter(v["tokens"][0]["digits"], r.now[0]).result == "accept"
    try:
        v = r.vend(ea11.drn)
    except VendError as exc:
        pytest.fail(f"the EA11 meter on the group's KRN 1 was refused: {exc.code}: {exc}")
    assert [t["kind"] for t in v["tokens"]] == ["credit"] and v["key"]["ea"] == 11
    assert ea11.meter.enter(v["tokens"][0]["digits"], r.now[0]).result == "accept"
