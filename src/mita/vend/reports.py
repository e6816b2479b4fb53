"""The sales report: per vendor and tariff, what was sold in a period, with reversals netted out.

**Periods** are the utility's wall clock (:mod:`.walltime`): ``date=2026-03-10`` is that day from midnight to
midnight in the utility's zone; ``since``/``until`` (with their offsets) are turned into it. At most 366 days.

**Reversals** count on the day they are made, as the ledger books them: a purchase sold on Monday and reversed
on Tuesday is in Monday's sales and in Tuesday's reversals. So a day's report never changes once the day is
over, and the sum of daily reports is the report of the whole period. Each row gives the gross sales
(``vends``, ``sales_amount``), what was reversed in the period (``reversals``, ``reversed_amount``) and the net
figures (``amount``, ``vat``, ``units``, ``fbe_units``: sales minus reversals), so its VAT equals the ledger's
``tax:vat`` account over the same period.

**Tariff** is the meter's tariff (a meter keeps the tariff it was registered with: no route moves it). Sales
made with an admin's or operator's key, not a vendor's, are under ``vendor: null`` ("direct"). Money is in minor
units of the tariff's currency; units are base units (0.1 kWh or 0.1 m³), credit and free basic electricity.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy import BigInteger, Engine, cast, func, select

from .callers import Caller
from .errors import VendError
from .lifecycles import VendKind, VendStatus
from .schema import meters, tariffs, vendors, vends
from .walltime import wall_clock, with_offset, zone_name

MAX_DAYS = 366
FIGURES = ("amount", "vat", "units", "fbe_units")  # summed per row, sales minus reversals
CSV_COLUMNS = (
    "vendor_id", "vendor", "tariff", "currency", "vends", "reversals", "amount", "vat", "units", "fbe_units",
    "sales_amount", "reversed_amount",
)  # fmt: skip


def period(
    today: dt.date, date: dt.date | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """The report's [start, end) in the utility's wall clock: a day (``date``, default ``today``) or a range."""
    if date is not None and (since is not None or until is not None):
        raise VendError("invalid_period", "give a date, or since and until, not both")
    if (since is None) != (until is None):
        raise VendError("invalid_period", "since and until go together")
    if since is not None and until is not None:
        start, end = wall_clock(since), wall_clock(until)
    else:
        day = date or today
        start = dt.datetime.combine(day, dt.time())
        end = start + dt.timedelta(days=1)
    if not start < end <= start + dt.timedelta(days=MAX_DAYS):
        raise VendError("invalid_period", f"since must be before until, and the period at most {MAX_DAYS} days")
    return start, end


def _sums(engine: Engine, caller: Caller, at: Any, start: dt.datetime, end: dt.datetime, *where: Any) -> list[Any]:
    receipt = vends.c.receipt
    q = (
        select(
            vends.c.vendor_id,
            vendors.c.name.label("vendor"),
            tariffs.c.name.label("tariff"),
            tariffs.c.currency,
            func.count().label("n"),
            func.coalesce(func.sum(vends.c.amount), 0).label("amount"),
            func.coalesce(func.sum(cast(receipt["vat"].as_string(), BigInteger)), 0).label("vat"),
            func.coalesce(func.sum(vends.c.units), 0).label("units"),
            func.coalesce(func.sum(cast(receipt["fbe_units"].as_string(), BigInteger)), 0).label("fbe_units"),
        )
        .select_from(
            vends.join(meters, meters.c.id == vends.c.meter_id)
            .outerjoin(tariffs, tariffs.c.id == meters.c.tariff_id)
            .outerjoin(vendors, vendors.c.id == vends.c.vendor_id)
        )
        .where(vends.c.kind == VendKind.PURCHASE, at >= start, at < end, *where)
        .group_by(vends.c.vendor_id, vendors.c.name, tariffs.c.name, tariffs.c.currency)
    )
    if caller.role == "vendor":
        q = q.where(vends.c.vendor_id == caller.vendor_id)
    with engine.connect() as conn:
        return list(conn.execute(q).all())


def sales_report(engine: Engine, caller: Caller, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Sales per vendor and tariff in [start, end) (wall clock, see :func:`period`), reversals netted out.

    Admins and operators see every vendor; a vendor's key its own vendor's rows only.
    """
    caller.require("admin", "operator", "vendor")
    sold = _sums(engine, caller, vends.c.created_at, start, end)
    undone = _sums(engine, caller, vends.c.reversed_at, start, end, vends.c.status == VendStatus.REVERSED)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}

    def row(r: Any) -> dict[str, Any]:
        key = (r.vendor_id, r.tariff)
        if key not in rows:
            rows[key] = {
                "vendor_id": r.vendor_id, "vendor": r.vendor, "tariff": r.tariff, "currency": r.currency,
                "vends": 0, "reversals": 0, **dict.fromkeys(FIGURES, 0), "sales_amount": 0, "reversed_amount": 0,
            }  # fmt: skip
        return rows[key]

    for r in sold:
        out = row(r)
        out["vends"] = int(r.n)
        out["sales_amount"] = int(r.amount)
        for name in FIGURES:
            out[name] += int(getattr(r, name))
    for r in undone:
        out = row(r)
        out["reversals"] = int(r.n)
        out["reversed_amount"] = int(r.amount)
        for name in FIGURES:
            out[name] -= int(getattr(r, name))
    items = sorted(rows.values(), key=lambda x: (x["vendor"] is not None, x["vendor"] or "", x["tariff"] or ""))
    totals: dict[str, dict[str, Any]] = {}
    for item in items:
        t = totals.setdefault(item["currency"] or "", {"currency": item["currency"], "vends": 0, "reversals": 0,
                                                         **dict.fromkeys(FIGURES, 0)})  # fmt: skip
        for name in ("vends", "reversals", *FIGURES):
            t[name] += item[name]
    return {
        "since": with_offset(start),
        "until": with_offset(end),
        "time_zone": zone_name(start),
        "rows": items,
        "totals": list(totals.values()),
    }


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``) is quoted with ``'``."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def sales_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV (header first; money in minor units, units in base units)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report["rows"]:
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()
