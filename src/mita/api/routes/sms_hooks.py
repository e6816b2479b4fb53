"""Kannel's callbacks: inbound SMS (``get-url``) and delivery reports (``dlr-url``), both GET, as Kannel sends them.

Both end with the callback secret (a wrong one is a 404, checked before the query is: ``channel_deps.Secret``)
and answer 200 with an empty body only after what they brought is committed. Kannel's smsbox retries every
callback answered anything but 200 or 202 (``http-request-retry``, with the same id): a 204 made it send each
delivery report six times.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from mita.channels.sms import inbound, reports

from ..channel_deps import Pay, Secret

router = APIRouter(prefix="/hooks/kannel", tags=["channels"], include_in_schema=False)

Text = Annotated[str, Query(max_length=400)]


Phone = Annotated[str, Query(alias="from", min_length=3, max_length=30)]


@router.get("/mo/{secret}")
async def mo(_: Secret, payments: Pay, id: Text, sender: Phone, text: Text = "") -> Response:
    """An SMS a customer sent (Kannel's ``%I`` as ``id``, ``%p`` as ``from``, ``%a`` as ``text``): stored, acted on
    and answered once per id; the answer leaves through the outbox."""
    await run_in_threadpool(inbound.receive, payments, id, sender, text)
    return Response(status_code=200)


@router.get("/dlr/{secret}")
async def dlr(_: Secret, payments: Pay, d: int, type: int, reply: Text = "") -> Response:
    """A delivery report for message ``d`` (Mita's id), of Kannel's ``type`` (1 delivered, 2 refused, 8 at the
    SMSC, 16 refused by the SMSC)."""
    await run_in_threadpool(reports.apply, payments, reports.Report(d, type, reply))
    return Response(status_code=200)
