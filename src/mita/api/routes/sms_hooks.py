"""Kannel's callbacks: inbound SMS (``get-url``) and delivery reports (``dlr-url``), both GET, as Kannel sends them.

Both end with the callback secret (a wrong one is a 404) and answer with an empty body only after what they
brought is committed: Kannel retries an inbound SMS that got no 2xx (``http-request-retry``), with the same id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from mita.channels.sms import inbound, reports

from ..channel_deps import Hooks, Pay

router = APIRouter(prefix="/hooks/kannel", tags=["channels"], include_in_schema=False)

Text = Annotated[str, Query(max_length=400)]


Phone = Annotated[str, Query(alias="from", min_length=3, max_length=30)]


@router.get("/mo/{secret}")
async def mo(secret: str, payments: Pay, hooks: Hooks, id: Text, sender: Phone, text: Text = "") -> Response:
    """An SMS a customer sent (Kannel's ``%I`` as ``id``, ``%p`` as ``from``, ``%a`` as ``text``): stored, acted on
    and answered once per id; the answer leaves through the outbox."""
    hooks.check(secret)
    await run_in_threadpool(inbound.receive, payments, id, sender, text)
    return Response(status_code=204)


@router.get("/dlr/{secret}")
async def dlr(secret: str, payments: Pay, hooks: Hooks, d: int, type: int, reply: Text = "") -> Response:
    """A delivery report for message ``d`` (Mita's id), of Kannel's ``type`` (1 delivered, 2 refused, 8 at the
    SMSC, 16 refused by the SMSC)."""
    hooks.check(secret)
    await run_in_threadpool(reports.apply, payments, reports.Report(d, type, reply))
    return Response(status_code=204)
