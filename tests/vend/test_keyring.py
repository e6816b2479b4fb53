"""Vending keys over their life (mita.vend.keyring) on SQLite and PostgreSQL, proved on a virtual meter.

Import with a key check value, generate, activate (a KRN rotation retires the old key, and every meter then
needs a key change before credit), retire and destroy, the issued-until hard stop with its warnings, the KEN
(the meters' own expiry) with its warnings, the per-key credit limit and reversals giving credit back, the
audit history, and that no key material ever leaves the keystore. Wherever tokens are made, the virtual meter
(legacy-ea07, decoder key derived independently of the service) must accept them.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import Engine, select
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita import sts
from mita.keys.software import key_check_value
from mita.vend import keyring
from mita.vend.errors import VendError
from mita.vend.keyring import KeyRing, expiry_warnings, ken_expiry
from mita.vend.schema import audit, vending_keys
from vend_fixtures import (
    BASE_DATE,
    DRN,
    SECOND_KEY,
    SECOND_KEY_HEX,
    SGC,
    START,
    VENDING_KEY,
    VENDING_KEY_HEX,
    World,
    build_world,
    decoder_key,
    find_secrets,
    refused,
)

DKGA04_KEY_HEX = "abababababababab949494949494949401234567"  # the compliance suites' 160-bit vending key
KEY_FIELDS = {
    "sgc", "krn", "dkga", "kcv", "keystore", "status", "current", "ken", "issued_until", "ken_expires",
    "credit_limit", "credit_issued", "warnings",
}  # fmt: skip


@pytest.fixture
def world(engine: Engine) -> World:  # noqa: F811 - the imported fixture
    return build_world(engine)


def status_of(w: World, krn: int, at: dt.datetime | None = None) -> dict[str, Any]:
    (entry,) = [k for k in keyring.key_status(w.engine, at or w.now[0], SGC) if k["krn"] == krn]
    return entry


def codes(warnings: list[dict[str, str]]) -> list[str]:
    return [x["code"] for x in warnings]


def add_second(w: World, **kwargs: Any) -> dict[str, Any]:
    """KRN 2 imported with its key check value (the usual way a key arrives from the key custodian)."""
    args: dict[str, Any] = {"key_hex": SECOND_KEY_HEX, "kcv": key_check_value(2, SECOND_KEY), **kwargs}
    return keyring.add_key(w.engine, w.admin, sgc=SGC, krn=2, dkga=2, at=w.now[0], **args)


def rotate(w: World, **kwargs: Any) -> None:
    add_second(w, **kwargs)
    keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=2, at=w.now[0])


def vend_with_change(w: World, amount: int = 5000) -> dict[str, Any]:
    """A purchase carrying the meter's key change, entered into the meter and reported accepted."""
    v = w.vend(amount, include_key_change=True)
    assert [t["kind"] for t in v["tokens"]][:2] == ["key_change", "key_change"]
    assert w.enter(v) == ["kct_pending", "key_changed"] + ["accept"] * (len(v["tokens"]) - 2)
    w.svc.vend_accepted(w.operator, v["id"])
    return v


def accepted(w: World, v: dict[str, Any]) -> bool:
    """Every token of the vend (credit, and free basic electricity in a new month) taken by the meter."""
    return w.enter(v) == ["accept"] * len(v["tokens"])


def credited(v: dict[str, Any]) -> int:
    return sum(t["units"] for t in v["tokens"])


# ---------------------------------------------------------------------------------------------- import, generate


def test_import_checks_the_key_check_value(world: World) -> None:
    w = world
    kcv = key_check_value(2, SECOND_KEY)
    before = len(keyring.key_status(w.engine, w.now[0], SGC))
    refused("kcv_mismatch", add_second, w, kcv="000000" if kcv != "000000" else "111111")
    assert len(keyring.key_status(w.engine, w.now[0], SGC)) == before  # nothing kept of the refused key
    assert not [h for h in keyring.key_history(w.engine, SGC) if h["action"] == "add_vending_key"]

    out = add_second(w, kcv=kcv.upper())  # a KCV is compared without regard to case
    assert out["kcv"] == kcv and out["krn"] == 2 and out["dkga"] == 2 and out["keystore"] == "software"
    entry = status_of(w, 2)
    assert entry["status"] == "pending" and not entry["current"] and entry["kcv"] == kcv
    assert status_of(w, 1)["status"] == "active" and status_of(w, 1)["current"]
    refused("conflict", add_second, w)  # one key per (supply group, KRN)


def test_import_refuses_bad_keys_and_parameters(world: World) -> None:
    w = world

    def add(**kw: Any) -> Any:
        return keyring.add_key(w.engine, w.admin, **{"sgc": SGC, "krn": 3, "dkga": 2, "at": w.now[0], **kw})

    refused("forbidden", keyring.add_key, w.engine, w.operator, sgc=SGC, krn=3, dkga=2, at=w.now[0])
    refused("range_error", add, krn=0, key_hex=SECOND_KEY_HEX)
    refused("range_error", add, krn=10, key_hex=SECOND_KEY_HEX)
    refused("range_error", add, ken=256, key_hex=SECOND_KEY_HEX)
    refused("format_error", add, key_hex="not hex")
    refused("format_error", add, key_hex=SECOND_KEY_HEX + "00")  # DKGA02 keys are 64 bits
    refused("format_error", add, dkga=4, key_hex=SECOND_KEY_HEX)  # DKGA04 keys are 160 bits
    refused("invalid_amount", add, credit_limit=-1, key_hex=SECOND_KEY_HEX)
    refused("not_found", add, sgc="999999", key_hex=SECOND_KEY_HEX)
    assert [k["krn"] for k in keyring.key_status(w.engine, w.now[0], SGC)] == [1]


def test_generated_keys_work_end_to_end(world: World) -> None:
    """A key nobody has seen: only the meter (through its key change tokens) and the keystore know it."""
    w = world
    a = keyring.add_key(w.engine, w.admin, sgc=SGC, krn=2, dkga=2, at=w.now[0])
    b = keyring.add_key(w.engine, w.admin, sgc=SGC, krn=3, dkga=4, at=w.now[0])
    assert len(a["kcv"]) == 6 and len(b["kcv"]) == 6 and a["dkga"] == 2 and b["dkga"] == 4
    assert [h["generated"] for h in keyring.key_history(w.engine, SGC) if h["action"] == "add_vending_key"] == [
        True,
        True,
    ]
    keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=3, at=w.now[0])  # DKGA04, EA07 (the group's EA)
    v = vend_with_change(w)
    assert v["key"]["krn"] == 3 and w.meter.state.krn == 3
    assert w.credit() == credited(v)  # base units: the credit was accepted under the new key
    w.advance(hours=1)
    v2 = w.vend(5000)
    assert [t["kind"] for t in v2["tokens"]] == ["credit"] and w.enter(v2) == ["accept"]


# ---------------------------------------------------------------------------------------------- activation


def test_activation_rotates_the_krn_and_meters_need_a_key_change(world: World) -> None:
    w = world
    w.enter(w.vend(3000))  # credit under KRN 1
    before = w.credit()
    add_second(w)
    assert w.vend(5000)["key"]["krn"] == 1  # a pending key changes nothing yet
    w.advance(minutes=5)
    out = keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=2, at=w.now[0])
    assert out["krn"] == 2 and out["status"] == "active" and out["current"]
    assert status_of(w, 1)["status"] == "retired" and not status_of(w, 1)["current"]

    refused("key_change_required", w.svc.vend, w.vendor, "no-kct", {"meter": DRN, "amount": 5000})
    v = w.vend(5000, include_key_change=True)
    kinds = [t["kind"] for t in v["tokens"]]
    assert kinds[:2] == ["key_change", "key_change"] and set(kinds[2:]) <= {"credit", "fbe"}
    assert v["key"] == {"sgc": SGC, "krn": 2, "kt": 2, "ti": 1, "ea": 7, "base_date": BASE_DATE, "ken": 255}
    # the key change tokens are encrypted under the meter's current (KRN 1) key, the credit under KRN 2's
    assert w.meter.state.decoder_key == decoder_key()
    # credit first: refused, the meter still holds KRN 1's key (SPEC.md §10: key change tokens go first)
    assert w.enter({"tokens": v["tokens"][2:]}) == ["crc_error"] * (len(kinds) - 2)
    assert w.meter.state.decoder_key == decoder_key()
    assert w.enter(v) == ["kct_pending", "key_changed"] + ["accept"] * (len(kinds) - 2)
    assert w.meter.state.krn == 2 and w.meter.state.decoder_key == decoder_key(SECOND_KEY, krn=2)
    assert w.credit() == before + credited(v)

    # until the meter's change is confirmed a purchase needs it asked for again (the same digits: the set is
    # deterministic); afterwards none carries it
    w.advance(minutes=5)
    refused("key_change_required", w.svc.vend, w.vendor, "unconfirmed", {"meter": DRN, "amount": 5000})
    again = w.vend(5000, include_key_change=True)
    assert [t["digits"] for t in again["tokens"][:2]] == [t["digits"] for t in v["tokens"][:2]]
    assert w.enter({"tokens": again["tokens"][2:]}) == ["accept"]
    w.svc.vend_accepted(w.operator, v["id"])
    w.advance(minutes=5)
    plain = w.vend(5000)
    assert [t["kind"] for t in plain["tokens"]] == ["credit"] and w.enter(plain) == ["accept"]
    assert w.meter_row().krn == 2


def test_activation_refusals(world: World) -> None:
    w = world
    refused("not_found", keyring.activate_key, w.engine, w.admin, sgc=SGC, krn=5, at=w.now[0])
    refused("forbidden", keyring.activate_key, w.engine, w.operator, sgc=SGC, krn=1, at=w.now[0])
    add_second(w)
    refused("invalid_dkga", keyring.activate_key, w.engine, w.admin, sgc=SGC, krn=2, ea=11, at=w.now[0])
    refused("format_error", keyring.activate_key, w.engine, w.admin, sgc=SGC, krn=2, base_date=2000, at=w.now[0])
    assert status_of(w, 2)["status"] == "pending" and status_of(w, 1)["current"]
    keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=2, at=w.now[0])
    assert status_of(w, 2)["status"] == "retired"
    refused("conflict", keyring.activate_key, w.engine, w.admin, sgc=SGC, krn=2, at=w.now[0])
    assert status_of(w, 1)["status"] == "active"


# ---------------------------------------------------------------------------------------------- retire, destroy


def test_retire_and_destroy(world: World) -> None:
    w = world
    refused("conflict", keyring.retire_key, w.engine, w.admin, sgc=SGC, krn=1, at=w.now[0])  # vends under it
    w.enter(w.vend(5000))  # the service now holds KRN 1 opened
    rotate(w)
    # the retired KRN 1 still encrypts the key change that moves the meter off it ...
    v = vend_with_change(w)
    assert v["key"]["krn"] == 2
    # ... and once destroyed nothing of it is left, in the database nor in the service's opened keys
    keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=1, at=w.now[0], destroy=True)
    assert status_of(w, 1)["status"] == "destroyed"
    with w.engine.connect() as conn:
        assert conn.execute(select(vending_keys.c.sealed).where(vending_keys.c.krn == 1)).scalar_one() == b""
        refused("no_vending_key", w.svc.keyring.get, conn, SGC, 1)
        refused("no_vending_key", KeyRing().get, conn, SGC, 1)
    w.advance(hours=1)
    assert accepted(w, w.vend(5000))  # the meter on KRN 2 is not affected


def test_a_destroyed_key_stays_destroyed(world: World) -> None:
    """Retiring a destroyed key, or rotating away from one, must not make it look usable again."""
    w = world
    add_second(w)
    keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=2, at=w.now[0], destroy=True)
    with pytest.raises(VendError):
        keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=2, at=w.now[0])
    assert status_of(w, 2)["status"] == "destroyed"
    # the current key destroyed (a compromised key), then a new KRN activated
    keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=1, at=w.now[0], destroy=True)
    keyring.add_key(w.engine, w.admin, sgc=SGC, krn=3, dkga=2, at=w.now[0])
    keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=3, at=w.now[0])
    assert status_of(w, 1)["status"] == "destroyed"
    assert status_of(w, 3)["status"] == "active"
    # a meter still on KRN 1 cannot be moved off it any more: the key to encrypt its change is gone
    refused("no_vending_key", w.svc.vend, w.vendor, "k", {"meter": DRN, "amount": 5000, "include_key_change": True})


# ---------------------------------------------------------------------------------------------- issued-until


def test_issued_until_warns_then_stops_hard(world: World) -> None:
    w = world
    until = START + dt.timedelta(days=40)
    rotate(w, issued_until=until)
    v = vend_with_change(w)
    assert "key_expiring" not in codes(v["warnings"])  # 40 days ahead: not yet
    assert not status_of(w, 2)["warnings"]
    assert status_of(w, 2)["issued_until"] == until.isoformat()

    w.now[0] = until - dt.timedelta(days=30)  # the warning window opens
    v = w.vend(5000)
    assert codes(v["warnings"]) == ["key_expiring"] and until.isoformat() in v["warnings"][0]["detail"]
    assert accepted(w, v)
    assert codes(status_of(w, 2)["warnings"]) == ["key_expiring"]

    w.now[0] = until  # the last minute still issues
    assert accepted(w, w.vend(5000))
    w.now[0] = until + dt.timedelta(minutes=1)
    refused("key_expired", w.svc.vend, w.vendor, "late", {"meter": DRN, "amount": 5000})
    assert codes(status_of(w, 2)["warnings"])[0] == "key_expired"
    # the remedy: a new KRN; the expired key still encrypts the meter's key change
    keyring.add_key(w.engine, w.admin, sgc=SGC, krn=3, key_hex="efefefefefefefef", at=w.now[0], dkga=2)
    keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=3, at=w.now[0])
    assert vend_with_change(w)["key"]["krn"] == 3


def test_expiry_warnings_for_each_cause() -> None:
    at = dt.datetime(2024, 11, 1)
    assert expiry_warnings(at, None, 255, 2014, 2) == []
    assert codes(expiry_warnings(at, at + dt.timedelta(days=30), 255, 2014, 2)) == ["key_expiring"]
    assert codes(expiry_warnings(at, at + dt.timedelta(days=31), 255, 2014, 2)) == []
    # base 1993 runs out on 2024-11-24 20:16: every 1993 key warns in the month before
    assert codes(expiry_warnings(at, None, 255, 1993, 2)) == ["tid_rollover"]
    assert codes(expiry_warnings(at - dt.timedelta(days=30), None, 255, 1993, 2)) == []
    ken = sts.tid_from_datetime(at, 2014) >> 16
    assert ken_expiry(ken, 2014) is not None and at < ken_expiry(ken, 2014) <= at + dt.timedelta(days=46)  # type: ignore[operator]
    assert codes(expiry_warnings(at, None, ken, 2014, 2)) == ["ken_expiring"]
    assert codes(expiry_warnings(at, None, ken, 2014, 0)) == []  # KT 0 (DITK) keys do not expire
    assert ken_expiry(255, 2014) is None
    # the first minute refused is the first TID whose top 8 bits exceed the KEN
    first = ken_expiry(ken, 2014)
    assert first is not None and sts.tid_from_datetime(first, 2014) >> 16 == ken + 1
    assert sts.tid_from_datetime(first - dt.timedelta(minutes=1), 2014) >> 16 == ken


# ---------------------------------------------------------------------------------------------- KEN


def test_ken_warns_then_needs_a_key_change(engine: Engine) -> None:  # noqa: F811 - the imported fixture
    ken = sts.tid_from_datetime(START, 2014) >> 16  # the meters' key expires in the KEN period we are in
    w = build_world(engine, ken=ken)
    ends = ken_expiry(ken, 2014)
    assert ends is not None and START < ends < START + dt.timedelta(days=30)
    v = w.vend(3000)
    assert "ken_expiring" in codes(v["warnings"]) and w.enter(v) == ["accept", "accept"][: len(v["tokens"])]
    assert codes(status_of(w, 1)["warnings"]) == ["ken_expiring"]
    assert status_of(w, 1)["ken_expires"] == ends.isoformat()

    w.now[0] = ends - dt.timedelta(minutes=1)  # the last minute the meters take
    assert accepted(w, w.vend(5000))
    w.now[0] = ends
    refused("key_change_required", w.svc.vend, w.vendor, "past-ken", {"meter": DRN, "amount": 5000})
    # the meter agrees: a token of this minute under its key is refused as expired
    late = sts.encode(sts.TransferCredit(sts.tid_from_datetime(ends, 2014), 10, 5), sts.EA.STA, decoder_key())
    assert str(w.meter.enter(late, ends).result) == "key_expired"

    # the remedy: a new key with a later KEN, carried to the meter by the key change set
    rotate(w, ken=255)
    assert status_of(w, 2)["ken_expires"] is None
    v = vend_with_change(w)
    assert w.meter.state.ken == 255 and w.meter_row().ken == 255
    assert "ken_expiring" not in codes(v["warnings"])


# ---------------------------------------------------------------------------------------------- credit limit


def test_a_key_issues_no_more_than_its_credit_limit(world: World) -> None:
    w = world
    rotate(w, credit_limit=2000)  # base units (0.1 kWh)
    first = vend_with_change(w, 5000)
    issued = credited(first)
    assert status_of(w, 2)["credit_issued"] == issued > 0
    vends = [first]
    while True:
        w.advance(minutes=10)
        try:
            v = w.vend(20000)
        except VendError as exc:
            assert exc.code == "key_credit_limit"
            break
        assert accepted(w, v)
        issued += credited(v)
        vends.append(v)
        assert issued <= 2000
    assert status_of(w, 2)["credit_issued"] == issued  # the refused vend counted nothing
    # a reversal gives its credit back to the key; the same purchase then goes through
    last = vends[-1]
    w.svc.reverse(w.operator, last["id"], "customer cancelled")
    assert status_of(w, 2)["credit_issued"] == issued - credited(last)
    w.advance(minutes=10)
    again = w.vend(20000)
    assert credited(again) == credited(last)
    assert status_of(w, 2)["credit_issued"] == issued
    assert status_of(w, 1)["credit_issued"] == 0  # KRN 1 had no limit: nothing is counted for it


# ---------------------------------------------------------------------------------------------- history, secrets


def test_history_lists_every_key_event(world: World) -> None:
    w = world
    add_second(w, ken=200)
    w.advance(minutes=1)
    keyring.activate_key(w.engine, w.admin, sgc=SGC, krn=2, base_date=2014, at=w.now[0])
    w.advance(minutes=1)
    keyring.add_key(w.engine, w.admin, sgc=SGC, krn=3, dkga=2, at=w.now[0])
    keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=3, at=w.now[0])
    keyring.retire_key(w.engine, w.admin, sgc=SGC, krn=1, at=w.now[0], destroy=True)
    history = keyring.key_history(w.engine, SGC)
    assert [(h["action"], h["krn"]) for h in history] == [
        ("add_vending_key", 2),
        ("activate_vending_key", 2),
        ("add_vending_key", 3),
        ("retire_vending_key", 3),
        ("destroy_vending_key", 1),
    ]
    assert history[0]["kcv"] == key_check_value(2, SECOND_KEY) and history[0]["generated"] is False
    assert history[0]["ken"] == 200 and history[2]["generated"] is True
    assert history[1]["previous_krn"] == 1 and history[1]["base_date"] == 2014
    assert history[0]["at"] == START.isoformat() and history[1]["at"] == (START + dt.timedelta(minutes=1)).isoformat()
    assert {h["actor"] for h in history} == {w.admin.name}
    refused("not_found", keyring.key_history, w.engine, "999999")
    with w.engine.connect() as conn:  # the history is the append-only audit log itself
        assert conn.execute(select(audit.c.action).where(audit.c.entity == "vending_key")).scalars().all() == [
            h["action"] for h in history
        ]


def test_key_status_never_holds_key_material(world: World) -> None:
    w = world
    rotate(w, credit_limit=10_000, issued_until=START + dt.timedelta(days=10))
    dk04 = keyring.add_key(w.engine, w.admin, sgc=SGC, krn=4, dkga=4, key_hex=DKGA04_KEY_HEX, at=w.now[0])
    vend_with_change(w)
    status = keyring.key_status(w.engine, w.now[0])
    assert len(status) == 3 and all(set(k) == KEY_FIELDS for k in status)
    assert [k["krn"] for k in status] == [4, 2, 1]
    assert status[0]["kcv"] == dk04["kcv"] == key_check_value(4, bytes.fromhex(DKGA04_KEY_HEX))
    shown = json.dumps([status, keyring.key_history(w.engine, SGC)]).lower()
    with w.engine.connect() as conn:
        sealed = conn.execute(select(vending_keys.c.sealed)).scalars().all()
    secret_texts = [VENDING_KEY_HEX, SECOND_KEY_HEX, DKGA04_KEY_HEX]
    secret_texts += [f"{decoder_key():016x}", f"{decoder_key(SECOND_KEY, krn=2):016x}"]
    for text in secret_texts + [bytes(s).hex() for s in sealed if s]:
        assert text not in shown
    # nor anywhere in the database, in clear (the sealed blobs are all the database holds)
    assert find_secrets(w.engine, secret_texts, [VENDING_KEY, SECOND_KEY, bytes.fromhex(DKGA04_KEY_HEX)]) == []
