"""The vending service (mita.vend.service) against real databases: SQLite and PostgreSQL, the same tests.

Every test gets a fresh database (a copy of a migrated template) and a small utility set up through the
registry: supply group 123456 with a DKGA02 vending key, a block tariff with a fixed charge and FBE, an
FBE-eligible customer in debt, meter 47500150231 and a vendor with a credit limit and its API key. The clock is
fake and moved by hand. Tokens are checked the only way that matters: a virtual meter (legacy-ea07 profile)
holding the decoder key derived independently from the vending key must accept them, and its credit must rise by
exactly what the receipt says.

PostgreSQL runs at 127.0.0.1:5432 (``$MITA_TEST_POSTGRES`` overrides the admin URL). If it is not reachable the
PostgreSQL half of this module fails: a green run must mean both databases were tested.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, delete, event, insert, make_url, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from mita import sts
from mita.keys.software import key_check_value, open_vending_key
from mita.sts.recipes import KeyConfig
from mita.vend import database, pricing, registry
from mita.vend.errors import VendError
from mita.vend.schema import audit, meters, tokens, vending_keys, vends
from vend_fixtures import (
    BAD_CHECK_DIGIT,
    BASE_DATE,
    CREDIT_LIMIT,
    DEBT,
    DEBT_RATE,
    DRN,
    OTHER_DRN,
    PG_ADMIN_URL,
    SECOND_KEY,
    SECOND_KEY_HEX,
    SGC,
    START,
    VENDING_KEY,
    VENDING_KEY_HEX,
    World,
    account_totals,
    build_world,
    decoder_key,
    expected_receipt,
    find_secrets,
    ledger_sums,
    refused,
    rotate_vending_key,
    row_counts,
)

# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied for each test."""
    path = tmp_path_factory.mktemp("mita-vend") / "template.db"
    database.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[tuple[Engine, str]]:
    """An admin connection to the PostgreSQL server and a migrated template database; both dropped at the end."""
    admin = create_engine(database.normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} (set MITA_TEST_POSTGRES to another admin URL): "
            f"the vending service must be tested on it. {exc.orig}",
            pytrace=False,
        )
    name = f"mita_svc_test_{secrets.token_hex(5)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        database.upgrade(_pg_url(name))
        yield admin, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _pg_url(name: str) -> str:
    url = make_url(database.normalise_url(PG_ADMIN_URL)).set(database=name)
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A fresh, migrated database made by ``make_engine``, with a random master key for this test."""
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    if request.param == "sqlite":
        path = tmp_path / "vend.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        eng = database.make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
        return
    admin, template = request.getfixturevalue("pg_template")
    name = f"mita_svc_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    eng = database.make_engine(_pg_url(name), pool_size=2)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def world(engine: Engine) -> World:
    return build_world(engine)


def assert_nothing_written(w: World, before: dict[str, int], last_tid: int) -> None:
    assert row_counts(w.engine) == before
    assert w.meter_row().last_tid == last_tid


# ---------------------------------------------------------------------------------------------- vending


def test_tokens_are_accepted_by_the_meter_and_credit_exactly_the_receipt(world: World) -> None:
    w = world
    r = w.vend(20_000)
    assert [t["kind"] for t in r["tokens"]] == ["credit", "fbe"]
    assert w.enter(r) == ["accept", "accept"]
    receipt = r["receipt"]
    assert w.credit() == receipt["units"] + receipt["fbe_units"]
    assert receipt["fbe_units"] == 500
    assert [t["units"] for t in r["tokens"]] == [receipt["units"], receipt["fbe_units"]]
    # worked by hand: 4000c to the debt (20%), 2000c + 300c VAT fixed charge; 500 units of block 1 (5500c + 825c
    # VAT), then 320 units of block 2 at 23c with VAT (6400c + 960c VAT); 15c carried
    account = pricing.Account(debt=DEBT, debt_rate=Decimal(DEBT_RATE), fbe_eligible=True)
    assert receipt == expected_receipt(20_000, account)
    assert (receipt["debt_recovered"], receipt["fixed_charge"], receipt["fixed_vat"]) == (4000, 2000, 300)
    assert [(b["units"], b["charge"]) for b in receipt["blocks"]] == [(500, 5500), (320, 6400)]
    assert (receipt["energy_vat"], receipt["leftover"], receipt["units"]) == (825 + 960, 15, 820)
    # a second vend the same day is accepted too, and adds exactly its units
    before = w.credit()
    r2 = w.vend(5_000)
    assert w.enter(r2) == ["accept"]
    assert w.credit() == before + r2["receipt"]["units"]


def test_quote_writes_nothing_and_matches_the_vend(world: World) -> None:
    w = world
    before = row_counts(w.engine)
    q = w.svc.quote(w.vendor, DRN, 12_345)
    assert row_counts(w.engine) == before
    assert q["receipt"] == w.vend(12_345)["receipt"]


def test_vends_need_an_api_key(world: World) -> None:
    before = row_counts(world.engine)
    refused("forbidden", world.svc.vend, registry.SYSTEM, "k", {"meter": DRN, "amount": 1000})
    assert row_counts(world.engine) == before


# ---------------------------------------------------------------------------------------------- idempotency


def test_same_key_and_body_returns_the_same_response_and_writes_nothing(world: World) -> None:
    w = world
    body = {"meter": DRN, "amount": 10_000}
    issued = w.svc.vend(w.vendor, "till-1/0001", body)
    first = issued.body
    assert not issued.replayed
    counts, last_tid = row_counts(w.engine), w.meter_row().last_tid
    w.advance(minutes=3)  # a retry a little later must still find the stored answer
    for _ in range(2):
        replay = w.svc.vend(w.vendor, "till-1/0001", dict(body))
        assert replay.replayed
        assert replay.body == first
    assert row_counts(w.engine) == counts
    assert w.meter_row().last_tid == last_tid
    assert w.enter(first) == ["accept", "accept"]  # the one vend's tokens, once


def test_same_key_with_a_different_body_is_a_conflict(world: World) -> None:
    w = world
    w.svc.vend(w.vendor, "k-1", {"meter": DRN, "amount": 10_000})
    counts, last_tid = row_counts(w.engine), w.meter_row().last_tid
    for body in ({"meter": DRN, "amount": 10_001}, {"meter": OTHER_DRN, "amount": 10_000}):
        refused("idempotency_conflict", w.svc.vend, w.vendor, "k-1", body)
    assert_nothing_written(w, counts, last_tid)


def test_idempotency_keys_belong_to_one_api_key(world: World) -> None:
    w = world
    a = w.svc.vend(w.vendor, "same", {"meter": DRN, "amount": 10_000}).body
    b = w.svc.vend(w.operator, "same", {"meter": DRN, "amount": 10_000}).body
    assert a["id"] != b["id"]
    assert row_counts(w.engine)["vends"] == 2


# ---------------------------------------------------------------------------------------------- TIDs


def test_tids_strictly_increase_across_vends_in_the_same_minute(world: World) -> None:
    w = world
    responses = [w.vend(amount) for amount in (10_000, 3_000, 3_000, 2_500)]
    w.advance(minutes=-90)  # the server clock steps back: TIDs must still go up
    responses.append(w.vend(3_000))
    tids = [t["tid"] for r in responses for t in r["tokens"]]
    assert tids[0] == sts.tid_from_datetime(START, BASE_DATE)
    assert all(a < b for a, b in itertools.pairwise(tids)), tids
    assert len(tids) == 6  # credit + FBE, then credits
    for r in responses:
        assert set(w.enter(r)) == {"accept"}
    with w.engine.connect() as conn:
        stored = conn.execute(select(tokens.c.tid).order_by(tokens.c.id)).scalars().all()
    assert stored == tids
    assert w.meter_row().last_tid == tids[-1]


# ---------------------------------------------------------------------------------------------- money


def test_ledger_balances_per_vend_and_the_balances_follow(world: World) -> None:
    w = world
    receipts = [w.vend(amount)["receipt"] for amount in (20_000, 7_777, 15_003)]
    sums = ledger_sums(w.engine)
    assert len(sums) == 3
    for debit, credit in sums.values():
        assert debit == credit > 0
    totals = account_totals(w.engine)
    vendor_account = f"vendor:{w.vendor.vendor_id}"
    assert totals[vendor_account] == sum(r["paid"] for r in receipts)
    assert -totals["revenue:energy"] == sum(r["energy_charge"] for r in receipts)
    assert -totals["revenue:fixed_charge"] == 2000
    assert -totals["tax:vat"] == sum(r["vat"] for r in receipts)
    cust = w.customer()
    assert cust.debt == DEBT - sum(r["debt_recovered"] for r in receipts)
    assert cust.carried == receipts[-1]["leftover"]
    assert [r["carried_in"] for r in receipts[1:]] == [r["leftover"] for r in receipts[:-1]]
    assert w.vendor_row().balance == sum(r["paid"] for r in receipts)


def test_block_tariff_across_several_vends_and_the_month_rollover(world: World) -> None:
    w = world
    month_units, debt, carried, fbe_issued = 0, DEBT, 0, False
    plan = [(START, 10_000), (START + dt.timedelta(days=5), 30_000), (START + dt.timedelta(days=12), 50_000)]
    plan += [(dt.datetime(2026, 3, 31, 23, 59), 10_000), (dt.datetime(2026, 4, 1, 0, 0), 10_000)]
    plan += [(dt.datetime(2026, 4, 2, 8, 0), 90_000)]
    month = "2026-03"
    for at, amount in plan:
        w.now[0] = at
        if f"{at:%Y-%m}" != month:  # a new calendar month: no units, the fixed charge and FBE again
            month, month_units, fbe_issued = f"{at:%Y-%m}", 0, False
        first = month_units == 0
        account = pricing.Account(
            month_units=month_units, first_purchase_of_month=first, debt=debt, debt_rate=Decimal(DEBT_RATE),
            carried=carried, fbe_eligible=True, fbe_issued_this_month=fbe_issued,
        )  # fmt: skip
        r = w.vend(amount)
        receipt = r["receipt"]
        assert receipt == expected_receipt(amount, account), at
        assert (receipt["fixed_charge"] > 0) == first
        assert (receipt["fbe_units"] > 0) == first
        assert w.enter(r) == ["accept"] * len(r["tokens"])
        month_units += receipt["units"]
        debt -= receipt["debt_recovered"]
        carried = receipt["leftover"]
        fbe_issued = True
        row = w.month(month)
        assert row is not None
        assert (row.units, bool(row.fbe_issued)) == (month_units, True)
    # March climbed into the last block; April started again at the first
    march, april = w.month("2026-03"), w.month("2026-04")
    assert march is not None and april is not None
    assert (march.purchases, april.purchases) == (4, 2)
    assert march.units > 3500  # past 350 kWh
    with w.engine.connect() as conn:
        receipts = [v.receipt for v in conn.execute(select(vends).order_by(vends.c.created_at))]
    assert [b["price"] for b in receipts[3]["blocks"]] == ["3.15"]
    assert receipts[4]["blocks"][0]["price"] == "1.10"
    assert w.credit() == sum(r["units"] + r["fbe_units"] for r in receipts)


def test_fbe_token_once_per_month(world: World) -> None:
    w = world
    kinds = [[t["kind"] for t in w.vend(10_000)["tokens"]] for _ in range(3)]
    assert kinds == [["credit", "fbe"], ["credit"], ["credit"]]
    w.now[0] = dt.datetime(2026, 4, 1, 7, 0)
    assert [t["kind"] for t in w.vend(10_000)["tokens"]] == ["credit", "fbe"]
    assert [t["kind"] for t in w.vend(10_000)["tokens"]] == ["credit"]


def test_reprint_returns_the_same_tokens(world: World) -> None:
    w = world
    r = w.vend(10_000)
    audits = row_counts(w.engine)["audit"]
    again = w.svc.reprint(w.vendor, r["id"])
    assert again["reprint"] is True
    assert [t["digits"] for t in again["tokens"]] == [t["digits"] for t in r["tokens"]]
    assert again["receipt"] == r["receipt"]
    assert (again["id"], again["status"]) == (r["id"], "completed")
    assert row_counts(w.engine)["audit"] == audits + 1
    assert w.enter(again) == ["accept", "accept"]
    assert w.enter(r) == ["used", "used"]  # the same tokens: a meter takes each once


# ---------------------------------------------------------------------------------------------- reversal


def test_reversal_restores_debt_carried_vendor_balance_and_month(world: World) -> None:
    w = world
    initial = w.state()
    first = w.vend(20_000)
    after_first = w.state()
    second = w.vend(7_777)
    assert w.state() != after_first
    out = w.svc.reverse(w.operator, second["id"], "customer changed their mind")
    assert out["status"] == "reversed"
    assert w.state() == after_first
    out = w.svc.reverse(w.operator, first["id"], "wrong meter")
    assert out["status"] == "reversed"
    assert w.state() == initial
    with w.engine.connect() as conn:
        rows = {v.id: v for v in conn.execute(select(vends))}
        reasons = conn.execute(select(audit.c.detail).where(audit.c.action == "reverse")).scalars().all()
    assert {v.status for v in rows.values()} == {"reversed"}
    assert all(v.reversed_at is not None for v in rows.values())
    assert sorted(d["reason"] for d in reasons) == ["customer changed their mind", "wrong meter"]
    for vend_id in rows:  # every account nets to zero, and each vend's lines still balance
        assert set(account_totals(w.engine, vend_id).values()) == {0}
    for debit, credit in ledger_sums(w.engine).values():
        assert debit == credit
    # the month is as if nothing was sold: the next purchase pays the fixed charge and gets FBE again
    r = w.vend(20_000)
    assert r["receipt"] == first["receipt"]


def test_reversal_after_the_window_is_refused(world: World) -> None:
    w = world
    r = w.vend(10_000)
    w.advance(hours=24)
    w.vend(5_000)
    w.advance(minutes=1)
    state, counts = w.state(), row_counts(w.engine)
    refused("reversal_window_closed", w.svc.reverse, w.operator, r["id"], "too late")
    assert (w.state(), row_counts(w.engine)) == (state, counts)


def test_second_reversal_is_refused(world: World) -> None:
    w = world
    r = w.vend(10_000)
    w.svc.reverse(w.operator, r["id"], "once")
    state, counts = w.state(), row_counts(w.engine)
    refused("already_reversed", w.svc.reverse, w.admin, r["id"], "twice")
    assert (w.state(), row_counts(w.engine)) == (state, counts)


def test_vendors_cannot_reverse(world: World) -> None:
    w = world
    r = w.vend(10_000)
    state, counts = w.state(), row_counts(w.engine)
    refused("forbidden", w.svc.reverse, w.vendor, r["id"], "my own sale")
    assert (w.state(), row_counts(w.engine)) == (state, counts)
    assert w.svc.get_vend(w.vendor, r["id"])["status"] == "completed"


def test_reversing_the_months_first_purchase_charges_the_fixed_charge_again(world: World) -> None:
    # The reversal refunds the first purchase's fixed charge; the month's charge must then be taken on the next
    # purchase, or the utility never collects it for that month.
    w = world
    first = w.vend(10_000)
    assert first["receipt"]["fixed_charge"] == 2000
    w.vend(5_000)
    w.svc.reverse(w.operator, first["id"], "wrong amount")
    again = w.vend(10_000)
    collected = -account_totals(w.engine).get("revenue:fixed_charge", 0)
    assert again["receipt"]["fixed_charge"] == 2000, "the month's fixed charge is not collected after the reversal"
    assert collected == 2000


def test_reversing_an_earlier_vend_whose_leftover_was_spent(world: World) -> None:
    # Vend 1 leaves 7c carried; vend 2 spends it and leaves nothing. Reversing vend 1 takes its 7c leftover back
    # from the customer's carried balance, which is now 0: the service must refuse cleanly (a VendError) or
    # keep every balance consistent, not fail with a database error.
    w = world
    first = w.vend(10_000)
    assert first["receipt"]["leftover"] == 7
    second = w.vend(2_018)
    assert (second["receipt"]["carried_in"], second["receipt"]["leftover"]) == (7, 0)
    state, counts = w.state(), row_counts(w.engine)
    try:
        w.svc.reverse(w.operator, first["id"], "wrong meter")
    except VendError:
        assert (w.state(), row_counts(w.engine)) == (state, counts)
    else:
        c = w.customer()
        assert min(c.debt, c.carried, c.refund_balance) >= 0


# ---------------------------------------------------------------------------------------------- refusals


def test_vendor_credit_limit(engine: Engine) -> None:
    w = build_world(engine, credit_limit=15_000)
    w.vend(10_000)
    w.vend(5_000)  # exactly at the limit
    counts, last_tid, state = row_counts(engine), w.meter_row().last_tid, w.state()
    refused("credit_limit", w.vend, 10_000)
    refused("credit_limit", w.vend, 100)
    assert_nothing_written(w, counts, last_tid)
    assert w.state() == state
    assert w.vendor_row().balance == 15_000
    assert not w.svc.vend(w.operator, "direct", {"meter": DRN, "amount": 10_000}).replayed  # not the vendor's limit


@pytest.mark.parametrize("status", ["blocked", "retired"])
def test_blocked_meter(world: World, status: str) -> None:
    w = world
    registry.Registry(w.engine).set_meter_status(registry.SYSTEM, DRN, status)
    counts, last_tid = row_counts(w.engine), w.meter_row().last_tid
    refused("meter_blocked", w.vend, 10_000)
    assert_nothing_written(w, counts, last_tid)
    registry.Registry(w.engine).set_meter_status(registry.SYSTEM, DRN, "active")
    assert w.enter(w.vend(10_000)) == ["accept", "accept"]


def test_unknown_meter(world: World) -> None:
    counts, last_tid = row_counts(world.engine), world.meter_row().last_tid
    refused("not_found", world.vend, 10_000, meter=OTHER_DRN)
    refused("not_found", world.svc.quote, world.vendor, OTHER_DRN, 10_000)
    assert_nothing_written(world, counts, last_tid)


def test_wrong_check_digit(world: World) -> None:
    counts, last_tid = row_counts(world.engine), world.meter_row().last_tid
    exc = refused("check_digit_error", world.vend, 10_000, meter=BAD_CHECK_DIGIT)
    assert isinstance(exc, sts.CheckDigitError)
    refused("check_digit_error", world.svc.quote, world.vendor, BAD_CHECK_DIGIT, 10_000)
    assert_nothing_written(world, counts, last_tid)


ABSURD = [0, -1, -10_000, 10**11 + 1, 10**15, 12.5, 100.0, True, False, "100", None, [100], {"cents": 100}]


def test_absurd_amounts_are_refused_and_write_nothing(world: World) -> None:
    w = world
    counts, last_tid = row_counts(w.engine), w.meter_row().last_tid
    for amount in ABSURD:
        refused("invalid_amount", w.vend, amount)
        if not isinstance(amount, list | dict):
            refused("invalid_amount", w.svc.quote, w.vendor, DRN, amount)
    refused("invalid_amount", w.svc.vend, w.vendor, "no-amount", {"meter": DRN})
    assert_nothing_written(w, counts, last_tid)


def test_tid_beyond_the_key_expiry_number_needs_a_key_change(engine: Engine) -> None:
    w = build_world(engine, ken=0)  # KT 2; TIDs of 2026 on base 2014 have TID >> 16 = 96 > KEN 0
    assert sts.tid_from_datetime(START, BASE_DATE) >> 16 > 0
    counts, last_tid = row_counts(engine), w.meter_row().last_tid
    refused("key_change_required", w.vend, 10_000)
    refused("key_change_required", w.svc.engineering, w.operator, DRN, "clear_tamper")
    assert_nothing_written(w, counts, last_tid)


# ---------------------------------------------------------------------------------------------- key change


def test_key_change_flow(world: World) -> None:
    w = world
    assert w.enter(w.vend(10_000)) == ["accept", "accept"]
    rotate_vending_key(w)
    counts, last_tid = row_counts(w.engine), w.meter_row().last_tid
    refused("key_change_required", w.vend, 10_000)
    assert_nothing_written(w, counts, last_tid)

    credit = w.credit()
    r = w.vend(10_000, include_key_change=True)
    assert [t["kind"] for t in r["tokens"]] == ["key_change", "key_change", "credit"]
    assert [t["tid"] for t in r["tokens"][:2]] == [None, None]
    assert r["tokens"][2]["tid"] > last_tid
    assert w.enter(r) == ["kct_pending", "key_changed", "accept"]
    assert (w.meter.state.krn, w.meter.state.decoder_key) == (2, decoder_key(SECOND_KEY, krn=2))
    assert w.credit() == credit + r["receipt"]["units"]
    row = w.meter_row()
    assert row.krn == 1 and row.pending_key is not None
    assert (row.pending_key["krn"], row.pending_key["last_tid"]) == (2, r["tokens"][2]["tid"])

    refused("forbidden", w.svc.confirm_key_change, w.vendor, DRN)
    confirmed = w.svc.confirm_key_change(w.operator, DRN)
    assert confirmed["key"]["krn"] == 2
    row = w.meter_row()
    assert (row.krn, row.kt, row.ti, row.ea, row.base_date, row.ken) == (2, 2, 1, 7, BASE_DATE, 255)
    assert row.pending_key is None
    assert row.last_tid == r["tokens"][2]["tid"]
    refused("no_pending_key", w.svc.confirm_key_change, w.operator, DRN)
    with w.engine.connect() as conn:
        assert conn.execute(select(audit).where(audit.c.action == "confirm_key_change")).first() is not None

    r = w.vend(10_000)  # the new key, no key change tokens any more
    assert [t["kind"] for t in r["tokens"]] == ["credit"]
    assert w.enter(r) == ["accept"]


def test_key_change_tokens_come_first_even_with_fbe(world: World) -> None:
    w = world
    rotate_vending_key(w)
    r = w.vend(10_000, include_key_change=True)
    assert [t["kind"] for t in r["tokens"]] == ["key_change", "key_change", "credit", "fbe"]
    assert w.enter(r) == ["kct_pending", "key_changed", "accept", "accept"]
    assert w.credit() == r["receipt"]["units"] + r["receipt"]["fbe_units"]


# ---------------------------------------------------------------------------------------------- engineering tokens


def test_engineering_tokens_are_accepted_and_audited(world: World) -> None:
    w = world
    sale = w.vend(10_000)
    assert w.enter(sale) == ["accept", "accept"]
    w.meter.tamper("cover", w.now[0])
    assert w.meter.state.tamper == ["cover"]
    made = []
    for kind, value in (("clear_tamper", None), ("set_power_limit", 5000), ("clear_credit", None), ("test", 1)):
        r = w.svc.engineering(w.operator, DRN, kind, value).body
        made.append(r)
        result = w.meter.enter(r["tokens"][0]["digits"], w.now[0])
        assert str(result.result) == "accept", (kind, result.detail)
    assert w.meter.state.tamper == []
    assert w.meter.state.mpl == 5000
    assert w.credit() == 0
    tids = [r["tokens"][0]["tid"] for r in made[:3]]
    assert all(a < b for a, b in itertools.pairwise(tids))
    assert tids[0] > 0 and made[3]["tokens"][0]["tid"] is None  # a test token carries no TID
    assert w.meter_row().last_tid == tids[-1]
    with w.engine.connect() as conn:
        details = conn.execute(select(audit.c.detail).where(audit.c.action == "engineering_token")).scalars().all()
        kinds = conn.execute(select(vends.c.kind).where(vends.c.kind == "engineering")).scalars().all()
    assert [d["kind"] for d in details] == ["clear_tamper", "set_power_limit", "clear_credit", "test"]
    assert len(kinds) == 4
    assert set(ledger_sums(w.engine)) == {sale["id"]}  # engineering tokens move no money
    assert w.vendor_row().balance == 10_000


def test_vendors_cannot_make_engineering_tokens(world: World) -> None:
    w = world
    counts, last_tid = row_counts(w.engine), w.meter_row().last_tid
    for kind in ("clear_tamper", "set_power_limit", "clear_credit", "test"):
        refused("forbidden", w.svc.engineering, w.vendor, DRN, kind, 1000)
    refused("invalid_kind", w.svc.engineering, w.operator, DRN, "free_money")
    assert_nothing_written(w, counts, last_tid)


# ---------------------------------------------------------------------------------------------- the database itself


def test_the_audit_log_is_append_only(world: World) -> None:
    w = world
    w.vend(10_000)
    with w.engine.connect() as conn:
        before = conn.execute(select(audit).order_by(audit.c.id)).all()
    assert len(before) >= 8  # the set-up, the API keys and the vend
    for statement in (
        update(audit).values(actor="someone else"),
        update(audit).where(audit.c.action == "vend").values(detail={}),
        delete(audit),
        delete(audit).where(audit.c.action == "vend"),
    ):
        with pytest.raises(DBAPIError, match="append-only"), w.engine.begin() as conn:
            conn.execute(statement)
    with w.engine.connect() as conn:
        assert conn.execute(select(audit).order_by(audit.c.id)).all() == before


def test_make_engine_passes_the_durability_check(engine: Engine) -> None:
    database.check_durability(engine)  # returns quietly


def _sqlite_engine(path: Path, journal: str, synchronous: str) -> Engine:
    eng = create_engine(f"sqlite:///{path}")

    @event.listens_for(eng, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA journal_mode={journal}")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    return eng


@pytest.mark.parametrize(("journal", "synchronous"), [("WAL", "NORMAL"), ("WAL", "OFF"), ("DELETE", "FULL")])
def test_sqlite_without_wal_and_full_sync_is_refused(tmp_path: Path, journal: str, synchronous: str) -> None:
    eng = _sqlite_engine(tmp_path / "unsafe.db", journal, synchronous)
    try:
        refused("unsafe_database", database.check_durability, eng)
    finally:
        eng.dispose()


def test_sqlite_make_engine_overridden_to_normal_is_refused(tmp_path: Path) -> None:
    eng = database.make_engine(f"sqlite:///{tmp_path / 'vend.db'}")
    database.check_durability(eng)
    eng.dispose()
    eng = database.make_engine(f"sqlite:///{tmp_path / 'vend.db'}")

    @event.listens_for(eng, "connect")
    def _weaken(dbapi_conn: Any, _record: Any) -> None:  # runs after make_engine's own listener
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    try:
        refused("unsafe_database", database.check_durability, eng)
    finally:
        eng.dispose()


def test_no_vending_key_in_any_column_of_any_table(world: World) -> None:
    w = world
    first = w.vend(20_000)
    w.vend(5_000, key="with-a-key")
    w.svc.reprint(w.vendor, first["id"])
    w.svc.quote(w.vendor, DRN, 1_000)
    for kind in ("clear_tamper", "set_power_limit", "clear_credit", "test"):
        w.svc.engineering(w.operator, DRN, kind, 100)
    w.advance(minutes=5)
    rotate_vending_key(w)
    w.vend(10_000, include_key_change=True)
    w.svc.confirm_key_change(w.operator, DRN)
    w.svc.reverse(w.operator, w.vend(3_000)["id"], "test")

    secrets_as_text = [VENDING_KEY_HEX, SECOND_KEY_HEX, str(int(VENDING_KEY_HEX, 16)), str(int(SECOND_KEY_HEX, 16))]
    for dk in (decoder_key(), decoder_key(SECOND_KEY, krn=2)):  # derived keys are secrets too
        secrets_as_text += [f"{dk:016x}", str(dk)]
    assert find_secrets(w.engine, secrets_as_text, [VENDING_KEY, SECOND_KEY]) == []
    # the keys are there, but sealed: the blobs open to them under the master key, and only under it
    with w.engine.connect() as conn:
        sealed = {k.krn: bytes(k.sealed) for k in conn.execute(select(vending_keys))}
    assert sealed.keys() == {1, 2}
    assert VENDING_KEY not in sealed[1] and SECOND_KEY not in sealed[2]
    assert open_vending_key(sealed[1], SGC, 1) == VENDING_KEY
    assert open_vending_key(sealed[2], SGC, 2) == SECOND_KEY
    # and the search does find a key where there is one
    with w.engine.begin() as conn:
        conn.execute(update(vends).where(vends.c.id == first["id"]).values(receipt={"oops": VENDING_KEY_HEX}))
    assert find_secrets(w.engine, secrets_as_text, [VENDING_KEY]) == ["vends.receipt: abababababababab"]


def test_a_supply_group_shows_only_the_key_check_value(world: World) -> None:
    group = registry.get_supply_group(world.engine, SGC)
    assert group["vending_keys"] == [
        {"krn": 1, "dkga": 2, "kcv": key_check_value(2, VENDING_KEY), "status": "active", "keystore": "software"}
    ]
    assert VENDING_KEY_HEX not in repr(group).lower()
    assert world.vendor_row().credit_limit == CREDIT_LIMIT


def test_a_replay_after_a_reversal_hands_out_no_tokens(world: World) -> None:
    w = world
    r = w.vend(10_000, key="once-only")
    w.svc.reverse(w.operator, r["id"], "refunded")
    refused("reversed", w.vend, 10_000, key="once-only")
    refused("reversed", w.svc.reprint, w.vendor, r["id"])


def test_a_limit_token_needs_a_value(world: World) -> None:
    w = world
    counts = row_counts(w.engine)
    refused("invalid_request", w.svc.engineering, w.operator, DRN, "set_power_limit")
    assert row_counts(w.engine) == counts


# ---------------------------------------------------------------------------------------------- TIDs are never reused


def test_a_cancelled_key_change_leaves_the_meter_sellable_at_once(world: World) -> None:
    """Issue 9.1: the vend that carried a cancelled change used TIDs; the next sale, in the same minute, skips them."""
    w = world
    assert w.enter(w.vend(10_000)) == ["accept", "accept"]
    rotate_vending_key(w)
    carried = w.vend(10_000, include_key_change=True)  # never entered: the customer lost the receipt
    used = {t["tid"] for t in carried["tokens"] if t["tid"] is not None}
    w.svc.cancel_key_change(w.operator, DRN)
    assert w.meter_row().last_tid >= max(used)

    # the clock does not move: the sale needs TIDs above the cancelled ones, and the meter takes it
    sale = w.vend(10_000, include_key_change=True)
    assert {t["tid"] for t in sale["tokens"]}.isdisjoint(used)
    assert w.enter(sale) == ["kct_pending", "key_changed", "accept"]
    tamper = w.svc.engineering(w.operator, DRN, "clear_tamper").body
    assert tamper["tokens"][0]["tid"] not in used
    assert str(w.meter.enter(tamper["tokens"][0]["digits"], w.now[0]).result) == "accept"


def test_tids_on_another_base_date_come_from_every_token_ever_issued(world: World) -> None:
    """A roll-over cancelled after its tokens were sold, then planned again, starts above those TIDs."""
    w = world
    w.vend(10_000)
    row = w.meter_row()
    group = SimpleNamespace(sgc=SGC)
    with w.engine.begin() as conn:
        vend_id = conn.execute(select(vends.c.id)).scalars().first()
        conn.execute(
            insert(tokens).values(
                vend_id=vend_id, meter_id=row.id, seq=9, kind="credit", tid=777, base_date=2035, token_class=0,
                subclass=0, digits="0" * 20, units=1, created_at=w.now[0],
            )
        )  # fmt: skip
        cfg = KeyConfig(SGC, 2, row.kt, row.ti, row.ea, 2035, row.ken)
        assert w.svc._tid_floor(conn, row, cfg) == 777
        assert w.svc._tid_floor(conn, row, w.svc.current_config(row, group)) == row.last_tid


def test_a_deterministic_database_refusal_is_its_own_error_not_retry(world: World) -> None:
    """A unique-TID refusal fails the same way every time: a 500 ``database_refused``, never a 503 ``retry``."""
    w = world
    row = w.meter_row()
    sale = w.vend(10_000)
    with w.engine.begin() as conn:  # the meter's count forgets that sale: the next vend collides with its TID
        conn.execute(update(meters).where(meters.c.id == row.id).values(last_tid=row.last_tid))
    before = row_counts(w.engine)
    err = refused("database_refused", w.vend, 10_000)
    assert isinstance(err, VendError)
    assert "tokens" in err.message or "IntegrityError" in err.message or "UniqueViolation" in err.message
    assert row_counts(w.engine) == before  # nothing of the refused vend was kept
    assert sale["tokens"]
