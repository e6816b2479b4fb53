"""The sales report (mita.vend.reports) against the vends made and the ledger, on SQLite and PostgreSQL.

Day 1: purchases by the vendor, by a second vendor and by an operator (direct), and an engineering token (not a
sale). Day 2: one of day 1's purchases is reversed and another purchase is made. Each day's figures must be the
receipts' sums, with the reversal netted on day 2 (the day it was made), and equal to the ledger's VAT account.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita.vend import registry, reports
from mita.vend.schema import ledger
from vend_fixtures import DRN, START, World, build_world, refused

DAY1 = START.date()
DAY2 = DAY1 + dt.timedelta(days=1)


class Sales:
    def __init__(self, w: World) -> None:
        self.w = w
        reg = registry.Registry(w.engine)
        other = reg.create_vendor(w.admin, "=Other shop")  # a name a spreadsheet would run as a formula
        _, key = reg.create_api_key("other till", "vendor", int(other["id"]))
        self.other = registry.authenticate(w.engine, key)
        self.day1 = [w.vend(a, caller=c) for c, a in ((w.vendor, 5000), (w.vendor, 7000), (self.other, 3000),
                                                       (w.operator, 2500))]  # fmt: skip
        w.svc.engineering(w.operator, DRN, "clear_tamper")
        w.advance(days=1)
        w.svc.reverse(w.operator, self.day1[1]["id"], "refund")
        self.day2 = [w.vend(4000, caller=w.vendor)]

    def report(self, day: dt.date, caller: Any = None) -> dict[str, Any]:
        start, end = reports.period(DAY1, day)
        return reports.sales_report(self.w.engine, caller or self.w.admin, start, end)

    def vat_booked(self, day: dt.date) -> int:
        """What the ledger's VAT account took in that day (credits minus debits)."""
        start, end = reports.period(DAY1, day)
        with self.w.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(ledger.c.credit - ledger.c.debit), 0)).where(
                        ledger.c.account == "tax:vat", ledger.c.created_at >= start, ledger.c.created_at < end
                    )
                ).scalar_one()
            )


def by_vendor(report: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    rows = {r["vendor"]: r for r in report["rows"]}
    assert len(rows) == len(report["rows"]) and all(r["tariff"] == "domestic" for r in report["rows"])
    return rows


def sums(vends: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "amount": sum(v["receipt"]["paid"] for v in vends),
        "vat": sum(v["receipt"]["vat"] for v in vends),
        "units": sum(v["receipt"]["units"] + v["receipt"]["fbe_units"] for v in vends),
        "fbe_units": sum(v["receipt"]["fbe_units"] for v in vends),
    }


@pytest.fixture
def sales(engine: Engine) -> Sales:  # noqa: F811 - the imported fixture
    return Sales(build_world(engine))


def test_a_day_is_the_sum_of_its_receipts_per_vendor(sales: Sales) -> None:
    d1 = sales.day1
    rows = by_vendor(sales.report(DAY1))
    assert set(rows) == {"Corner shop", "=Other shop", None}  # None: sold with a staff key
    shop = rows["Corner shop"]
    assert (shop["vends"], shop["reversals"]) == (2, 0)
    assert {k: shop[k] for k in ("amount", "vat", "units", "fbe_units")} == sums(d1[:2])
    assert shop["sales_amount"] == 12000 and shop["reversed_amount"] == 0 and shop["currency"] == "ZAR"
    assert {k: rows["=Other shop"][k] for k in ("amount", "vat", "units", "fbe_units")} == sums(d1[2:3])
    assert rows[None]["vends"] == 1 and rows[None]["amount"] == 2500 and rows[None]["vendor_id"] is None
    total = sales.report(DAY1)["totals"]
    assert total == [{"currency": "ZAR", "vends": 4, "reversals": 0, **sums(d1)}]
    assert total[0]["vat"] == sales.vat_booked(DAY1)


def test_a_reversal_is_netted_on_the_day_it_was_made(sales: Sales) -> None:
    before = by_vendor(sales.report(DAY1))["Corner shop"]
    rows = by_vendor(sales.report(DAY2))
    shop = rows["Corner shop"]
    assert set(rows) == {"Corner shop"}
    assert (shop["vends"], shop["reversals"]) == (1, 1)
    assert shop["sales_amount"] == 4000 and shop["reversed_amount"] == 7000 and shop["amount"] == -3000
    expected = {k: sums(sales.day2)[k] - sums(sales.day1[1:2])[k] for k in ("amount", "vat", "units", "fbe_units")}
    assert {k: shop[k] for k in expected} == expected
    assert shop["vat"] == sales.vat_booked(DAY2)
    assert by_vendor(sales.report(DAY1))["Corner shop"] == before  # a past day's report does not change
    since = dt.datetime.combine(DAY1, dt.time()).astimezone()
    both = reports.sales_report(
        sales.w.engine, sales.w.admin, *reports.period(DAY1, since=since, until=since + dt.timedelta(days=2))
    )
    assert both["totals"][0]["amount"] == sales.report(DAY1)["totals"][0]["amount"] - 3000
    assert both["totals"][0]["vat"] == sales.vat_booked(DAY1) + sales.vat_booked(DAY2)


def test_a_vendor_sees_its_own_rows_only(sales: Sales) -> None:
    assert set(by_vendor(sales.report(DAY1, sales.w.vendor))) == {"Corner shop"}
    assert set(by_vendor(sales.report(DAY1, sales.other))) == {"=Other shop"}
    assert set(by_vendor(sales.report(DAY1, sales.w.operator))) == {"Corner shop", "=Other shop", None}


def test_the_csv_form_has_the_same_rows(sales: Sales) -> None:
    report = sales.report(DAY1)
    text = reports.sales_csv(report)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(reports.CSV_COLUMNS)
    assert len(rows) == len(report["rows"])
    for got, want in zip(rows, report["rows"], strict=True):
        assert int(got["amount"]) == want["amount"] and int(got["vat"]) == want["vat"]
        assert got["vendor"] == (
            "'" + want["vendor"] if (want["vendor"] or "").startswith("=") else want["vendor"] or ""
        )


def test_periods() -> None:
    start, end = reports.period(DAY1)
    assert (start, end) == (dt.datetime.combine(DAY1, dt.time()), dt.datetime.combine(DAY2, dt.time()))
    assert reports.period(DAY2, DAY1) == (start, end)
    aware = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    since, until = reports.period(DAY1, since=aware, until=aware + dt.timedelta(hours=1))
    assert since == aware.astimezone().replace(tzinfo=None) and until - since == dt.timedelta(hours=1)
    refused("invalid_period", reports.period, DAY1, DAY1, since=aware, until=aware)
    refused("invalid_period", reports.period, DAY1, since=aware)
    refused("invalid_period", reports.period, DAY1, since=aware, until=aware)
    refused("invalid_period", reports.period, DAY1, since=aware, until=aware + dt.timedelta(days=367))
