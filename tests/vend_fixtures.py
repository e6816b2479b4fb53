"""Helpers for the vending service tests: a small utility set up through the registry, and database probes.

The pytest fixtures themselves (one fresh database per test, on SQLite and on PostgreSQL) live in
``test_vend_service.py``; this module holds what they build on: the utility's constants, :class:`World` (the
service, its fake clock, the callers and a virtual meter holding the same decoder key), row counts, and a scan of
every column of every table.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, Row, func, insert, inspect, select, text, update

from mita import sts
from mita.keys.software import key_check_value, seal_vending_key
from mita.meter import Meter
from mita.vend import pricing, registry, sample
from mita.vend.schema import customers, metadata, meter_months, meters, supply_groups, vending_keys, vendors
from mita.vend.service import Caller, VendingService, receipt_json, tariff_from_spec

SGC = "123456"
VENDING_KEY_HEX = "abababababababab"
VENDING_KEY = bytes.fromhex(VENDING_KEY_HEX)
SECOND_KEY_HEX = "cdcdcdcdcdcdcdcd"  # the supply group's next vending key (KRN 2)
SECOND_KEY = bytes.fromhex(SECOND_KEY_HEX)
DRN = "47500150231"
OTHER_DRN = "4750015024" + str(sts.luhn_digit("4750015024"))  # valid check digit, never registered
BAD_CHECK_DIGIT = DRN[:-1] + str((int(DRN[-1]) + 1) % 10)
BASE_DATE = 2014
START = dt.datetime(2026, 3, 10, 9, 30)  # a TID on base 2014: TID >> 16 is 96
TARIFF_SPEC: dict[str, Any] = sample.DOMESTIC_TARIFF
TARIFF = tariff_from_spec(TARIFF_SPEC)
DEBT = 5000
DEBT_RATE = "0.2"
CREDIT_LIMIT = 1_000_000
PG_ADMIN_URL = os.environ.get("MITA_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def decoder_key(vending_key: bytes = VENDING_KEY, krn: int = 1) -> int:
    """The meter's DKGA02 decoder key, derived independently of the service."""
    return sts.dkga02(vending_key, sts.MeterNumber.parse(DRN), 2, SGC, 1, krn)


@dataclass
class World:
    """A utility with one supply group, tariff, customer, meter and vendor, and the virtual meter in the field."""

    engine: Engine
    svc: VendingService
    now: list[dt.datetime]
    admin: Caller
    operator: Caller
    vendor: Caller
    meter: Meter
    _keys: Iterator[int] = field(default_factory=itertools.count)

    # -------------------------------------------------------------- acting

    def vend(
        self, amount: Any, *, key: str | None = None, caller: Caller | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {"meter": extra.pop("meter", DRN), "amount": amount, **extra}
        issued = self.svc.vend(caller or self.vendor, key or f"vend-{next(self._keys)}", body)
        assert not issued.replayed
        return issued.body

    def enter(self, response: dict[str, Any]) -> list[str]:
        """Key every token of a response into the virtual meter, in order; the meter's answers."""
        return [str(self.meter.enter(t["digits"], self.now[0]).result) for t in response["tokens"]]

    def advance(self, **delta: float) -> None:
        self.now[0] += dt.timedelta(**delta)

    def credit(self) -> float:
        return self.meter.registers().get("electricity", 0)

    # -------------------------------------------------------------- reading

    def one(self, table: Any, *where: Any) -> Row[Any]:
        with self.engine.connect() as conn:
            return conn.execute(select(table).where(*where)).one()

    def customer(self) -> Row[Any]:
        return self.one(customers, customers.c.account == "C-001")

    def vendor_row(self) -> Row[Any]:
        return self.one(vendors, vendors.c.id == self.vendor.vendor_id)

    def meter_row(self) -> Row[Any]:
        return self.one(meters, meters.c.drn == DRN)

    def month(self, month: str) -> Row[Any] | None:
        with self.engine.connect() as conn:
            return conn.execute(select(meter_months).where(meter_months.c.month == month)).first()

    def state(self) -> dict[str, Any]:
        """Everything a vend changes and a reversal must put back (and the counts of what it writes)."""
        c, v = self.customer(), self.vendor_row()
        months = {}
        with self.engine.connect() as conn:
            for m in conn.execute(select(meter_months).order_by(meter_months.c.month)):
                if m.units or m.purchases or m.fbe_issued:  # an all-zero month is the same as none
                    months[m.month] = (m.units, m.purchases, bool(m.fbe_issued))
        return {
            "debt": c.debt,
            "carried": c.carried,
            "refund_balance": c.refund_balance,
            "vendor_balance": v.balance,
            "months": months,
        }


def build_world(
    engine: Engine,
    now: dt.datetime = START,
    *,
    ken: int = 255,
    credit_limit: int | None = CREDIT_LIMIT,
    carry_leftover: bool = True,
) -> World:
    """The utility of these tests, set up the way an operator would, through the registry."""
    admin = registry.SYSTEM
    registry.Registry(engine).create_supply_group(
        admin,
        sgc=SGC,
        name="Test town",
        vending_key=VENDING_KEY_HEX,
        dkga=2,
        ea=7,
        kt=2,
        krn=1,
        base_date=BASE_DATE,
        ken=ken,
    )
    registry.Registry(engine).create_tariff(
        admin,
        name="domestic",
        currency="ZAR",
        spec=TARIFF_SPEC,
        effective_from=dt.datetime(2020, 1, 1),
        carry_leftover=carry_leftover,
    )
    registry.Registry(engine).create_customer(
        admin, account="C-001", name="A customer", fbe_eligible=True, debt=DEBT, debt_rate=DEBT_RATE
    )
    registry.Registry(engine).create_meter(admin, drn=DRN, sgc=SGC, customer="C-001", tariff="domestic")
    vendor_id = int(registry.Registry(engine).create_vendor(admin, "Corner shop", credit_limit)["id"])
    callers = {}
    for role, vid in (("admin", None), ("operator", None), ("vendor", vendor_id)):
        _, plaintext = registry.Registry(engine).create_api_key(f"test {role}", role, vid)
        callers[role] = registry.authenticate(engine, plaintext)
    assert callers["vendor"].vendor_id == vendor_id
    clock = [now]
    meter = Meter.create(
        drn=DRN, ea=7, decoder_key=decoder_key(), sgc=SGC, ti=1, krn=1, kt=2, ken=ken, profile="legacy-ea07"
    )
    return World(
        engine=engine,
        svc=VendingService(engine, clock=lambda: clock[0]),
        now=clock,
        admin=callers["admin"],
        operator=callers["operator"],
        vendor=callers["vendor"],
        meter=meter,
    )


def expected_receipt(amount: int, account: pricing.Account, carry: bool = True) -> dict[str, Any]:
    """The receipt the service must give, from the pricing rules applied by hand to the meter's month."""
    head = SimpleNamespace(currency="ZAR", carry_leftover=carry)
    return receipt_json(pricing.price(TARIFF, amount, account, carry), head)  # type: ignore[arg-type]


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.tables.values()
        }


def all_values(engine: Engine) -> Iterable[tuple[str, str, Any]]:
    """(table, column, value) for every column of every row of every table in the database, as stored."""
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            result = conn.execute(text(f'SELECT * FROM "{name}"'))
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    yield name, column, value


def find_secrets(engine: Engine, texts: list[str], raws: list[bytes]) -> list[str]:
    """Where any of ``texts`` (case-insensitive) or ``raws`` (as bytes, or as their hex) occurs in the database."""
    found = []
    lowered = [t.lower() for t in texts]
    for table, column, value in all_values(engine):
        if value is None:
            continue
        if isinstance(value, bytes | bytearray | memoryview):
            blob = bytes(value)
            hits = [r.hex() for r in raws if r in blob] + [t for t in lowered if t.encode() in blob.lower()]
        else:
            shown = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
            hits = [t for t in lowered if t in shown.lower()]
            hits += [r.hex() for r in raws if r.decode("latin-1") in shown]
        found += [f"{table}.{column}: {h}" for h in hits]
    return found


def ledger_sums(engine: Engine) -> dict[str, tuple[int, int]]:
    """Per vend: (sum of debits, sum of credits)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT vend_id, SUM(debit), SUM(credit) FROM ledger GROUP BY vend_id")).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def account_totals(engine: Engine, vend_id: str | None = None) -> dict[str, int]:
    """Per ledger account: debits minus credits (of one vend, or of all)."""
    q = "SELECT account, SUM(debit) - SUM(credit) FROM ledger"
    params = {}
    if vend_id is not None:
        q += " WHERE vend_id = :v"
        params["v"] = vend_id
    with engine.connect() as conn:
        rows = conn.execute(text(q + " GROUP BY account"), params).all()
    return {r[0]: int(r[1]) for r in rows}


def refused(code: str, fn: Any, *args: Any, **kwargs: Any) -> sts.StsError:
    """``fn`` raises a typed error with this stable code (and changes nothing: the callers check that)."""
    with pytest.raises(sts.StsError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code == code, f"expected {code}, got {exc.value.code}: {exc.value}"
    return exc.value


def rotate_vending_key(w: World) -> None:
    """The supply group moves to KRN 2 with a second vending key (there is no registry function for it yet)."""
    with w.engine.begin() as conn:
        gid = conn.execute(select(supply_groups.c.id).where(supply_groups.c.sgc == SGC)).scalar_one()
        kid = conn.execute(
            insert(vending_keys)
            .values(
                supply_group_id=gid,
                krn=2,
                dkga=2,
                sealed=seal_vending_key(SGC, 2, SECOND_KEY),
                kcv=key_check_value(2, SECOND_KEY),
                created_at=w.now[0],
            )
            .returning(vending_keys.c.id)
        ).scalar_one()
        conn.execute(update(supply_groups).where(supply_groups.c.id == gid).values(krn=2, vending_key_id=kid))
