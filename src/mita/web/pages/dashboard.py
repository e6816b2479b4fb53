"""The dashboard: the day at a glance."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita.vend import overview

from ..console import Signed, render, runtime

router = APIRouter()


@router.get("/")
def dashboard(request: Request, session: Signed) -> Response:
    rt = runtime(request)
    figures = overview.dashboard(rt.engine, session.caller, rt.clock())
    return render(request, "dashboard.html", title="Dashboard", d=figures, currency=figures["currency"])
