"""The audit log: who did what to which thing, newest first, filtered; every console action is in it under the
operator's name (``console:<name>``), as the API's are under their key's."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita.vend import overview

from ..console import Signed, render, runtime

router = APIRouter()
FILTERS = ("actor", "action", "entity", "entity_id", "since", "until")


@router.get("/audit")
def audit(request: Request, session: Signed, before: int | None = None) -> Response:
    rt = runtime(request)
    filters = {k: request.query_params.get(k, "").strip()[:100] for k in FILTERS}
    page = overview.audit_page(rt.engine, session.caller, filters, 50, before)
    keep = {k: v for k, v in filters.items() if v}
    return render(request, "audit.html", title="Audit log", page=page, f=filters, keep=keep)
