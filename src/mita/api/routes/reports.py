"""Reports: the sales report per vendor and tariff, as JSON or CSV."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import Response

from mita.vend import reports

from .. import listings as lm
from ..deps import Svc, Who, v1_router

router = v1_router("reports")


def wants_csv(accept: str) -> bool:
    """Whether an Accept header prefers ``text/csv`` to JSON (by q-value; a tie is JSON)."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[kind.lower()] = max(q, weights.get(kind.lower(), 0.0))

    def weight(kind: str) -> float:
        major = kind.split("/")[0]
        return weights.get(kind, weights.get(f"{major}/*", weights.get("*/*", 0.0)))

    return weight("text/csv") > weight("application/json")


@router.get(
    "/reports/sales",
    response_model=lm.SalesReport,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "the report (CSV: its rows, header first)"}},
)  # fmt: skip
def sales_report(
    request: Request,
    caller: Who,
    svc: Svc,
    date: Annotated[
        dt.date | None, Query(description="a day of the utility's wall clock (default: today)", examples=["2026-03-10"])
    ] = None,
    since: lm.Since = None,
    until: lm.Until = None,
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv, or json; default: by Accept")] = None,
) -> Any:
    """Sales per vendor and tariff over a day (``date``) or a period (``since`` and ``until``, at most 366 days),
    reversals netted out on the day they were made (admin, operator; a vendor's key sees its own rows).

    ``Accept: text/csv`` or ``?format=csv`` answers CSV. Money in minor units, units in base units (0.1 kWh).
    """
    start, end = reports.period(svc.clock().date(), date, since, until)
    report = reports.sales_report(svc.engine, caller, start, end)
    if format == "csv" or (format is None and wants_csv(request.headers.get("accept", ""))):
        last = (end - dt.timedelta(microseconds=1)).date()
        name = f"sales-{start:%Y-%m-%d}" + ("" if last == start.date() else f"--{last:%Y-%m-%d}")
        return Response(
            reports.sales_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"},
        )
    return report
