"""Meters and customers: search by number, customer or area; a meter's page (its purchases and tokens, key
configuration and pending key change, connection, last reading and use per day); a customer's meters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita import sts
from mita.headend import alarms
from mita.vend import listings, overview
from mita.vend.errors import VendError

from ..console import Signed, render, runtime

router = APIRouter()


@router.get("/meters")
def meters(request: Request, session: Signed, q: str = "", area: str = "") -> Response:
    rt = runtime(request)
    found = overview.find_meters(rt.engine, session.caller, q[:100], area[:40])
    return render(request, "meters.html", title="Meters", found=found, q=q, area=area, areas=overview.areas(rt.engine))


@router.get("/meters/{drn}")
def meter(request: Request, session: Signed, drn: str, after: str | None = None) -> Response:
    rt = runtime(request)
    number = sts.MeterNumber.parse(drn).drn
    m = overview.meter_page(rt.engine, session.caller, number)
    if m is None:
        raise VendError("not_found", f"there is no meter {number}")
    history = listings.meter_history(rt.engine, session.caller, number, 20, after)
    try:
        state = alarms.telemetry(rt.engine, session.caller, number)
    except VendError:
        state = None  # a keypad meter, or one that has reported nothing yet
    use = overview.consumption(rt.engine, session.caller, number, rt.clock()) if state else []
    return render(request, "meter.html", title=f"Meter {number}", m=m, history=history, state=state, use=use)


@router.get("/customers")
def customers(request: Request, session: Signed, q: str = "") -> Response:
    rt = runtime(request)
    found = overview.find_customers(rt.engine, session.caller, q[:100])
    return render(request, "customers.html", title="Customers", found=found, q=q)
