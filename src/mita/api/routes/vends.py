"""Quotes and vends, reprints and reversals: money in, tokens out, exactly once per Idempotency-Key."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mita.vend import listings

from .. import listings as lm
from .. import models as m
from ..deps import (
    ID_MAX,
    Limit,
    Svc,
    VendId,
    Who,
    v1_router,
    vend_json,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("vends")

_VEND_DOC: dict[int | str, dict[str, Any]] = {200: {"model": m.VendOut, "description": "the vend"}}


# --- quotes and vends


@router.post(
    "/quotes",
    response_model=None,
    responses={200: {"model": m.QuoteOut, "description": "the quote"}, **responses(404, 409)},
)
def quote(body: m.QuoteIn, caller: Who, svc: Svc) -> JSONResponse:
    """What an amount would buy now: the itemised receipt, no token, nothing changed."""
    return JSONResponse(svc.quote(caller, body.meter, body.amount))


@router.post(
    "/vends",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": m.VendOut, "description": "the vend was made"},
        200: {"model": m.VendOut, "description": "a replay: the vend this Idempotency-Key made, unchanged"},
        **responses(402, 404, 409, 503),
    },
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": "one per purchase: a retry with the same key and body answers the same vend",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VendIn"}}},
        },
    },
)
async def create_vend(request: Request, caller: Who, svc: Svc) -> Response:
    """Sell credit: the tokens and the itemised receipt, exactly once per Idempotency-Key.

    A retry with the same key and body answers 200 with the same body; the same key with another body is a
    422 ``idempotency_conflict``. On a 503 ``retry`` the outcome is unknown: retry with the same key.

    The busiest route, so it parses its own body (with the same Pydantic model) and hands only the
    service call to the thread pool: a third of the per-request framework cost.
    """
    key = request.headers.get("idempotency-key", "")
    errors: list[Any] = []
    if not 1 <= len(key) <= 200:
        errors.append({"type": "missing", "loc": ("header", "idempotency-key"), "msg": "Field required"})
    raw = await request.body()
    body = None
    if not raw:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
    else:
        try:
            body = m.VendIn.model_validate_json(raw)
        except ValidationError as exc:
            errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
    if errors or body is None:
        raise RequestValidationError(errors)
    issued = await run_in_threadpool(svc.vend, caller, key, body.model_dump())
    return vend_json(issued.body, 200 if issued.replayed else 201)


@router.get("/vends", response_model=lm.VendPage)
def list_vends(
    caller: Who,
    svc: Svc,
    meter: Annotated[str | None, Query(max_length=32, pattern=m.PRINTABLE, description="meter number (DRN)")] = None,
    vendor_id: Annotated[int | None, Query(ge=1, le=ID_MAX, description="the vendor that sold them")] = None,
    customer: Annotated[
        str | None, Query(max_length=40, pattern=m.PRINTABLE, description="the customer's account")
    ] = None,
    kind: Annotated[lm.VendKind | None, Query(description="purchase, engineering or key_change")] = None,
    status: Annotated[lm.VendStatus | None, Query(description="completed or reversed")] = None,
    since: lm.Since = None,
    until: lm.Until = None,
    limit: Limit = 50,
    after: lm.Cursor = None,
) -> Any:
    """Vends, newest first, filtered (admin, operator, vendor: a vendor's key sees its own vendor's only).

    Purchases, engineering tokens and key changes, each with its tokens. Filters combine; a meter or customer
    that does not exist finds nothing. Pages: pass ``next`` as ``after``.
    """
    f = listings.VendFilter(meter, vendor_id, customer, kind, status, since, until)
    return listings.list_vends(svc.engine, caller, f, limit, after)


@router.get("/vends/{vend_id}", response_model=None, responses={**_VEND_DOC, **responses(404)})
def get_vend(vend_id: VendId, caller: Who, svc: Svc) -> JSONResponse:
    """A vend (a vendor's key sees its own vends only); for a connected meter, how its tokens went to it
    (``delivery``: queued, sent, acknowledged, failed or expired, with the head-end's command)."""
    return vend_json(svc.get_vend(caller, vend_id))


@router.post("/vends/{vend_id}/reprint", response_model=None, responses={**_VEND_DOC, **responses(404)})
def reprint(vend_id: VendId, caller: Who, svc: Svc) -> JSONResponse:
    """The same tokens again, marked ``reprint: true`` (audited)."""
    return vend_json(svc.reprint(caller, vend_id))


@router.post("/vends/{vend_id}/reversal", response_model=None, responses={**_VEND_DOC, **responses(404, 409)})
def reverse(vend_id: VendId, body: m.ReversalIn, caller: Who, svc: Svc) -> JSONResponse:
    """Reverse a purchase within the reversal window (admin, operator): the ledger lines are undone."""
    return vend_json(svc.reverse(caller, vend_id, body.reason))
