"""Quotes and vends, reprints and reversals: money in, tokens out, exactly once per Idempotency-Key."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from mita.vend import listings
from mita.vend.purchase import Answered
from mita.vend.service import Caller, VendingService

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

    The busiest route: the gate serves it itself (:func:`serve_vend`, the same code), so this route is what
    the documentation shows and what runs if the gate does not.
    """
    return await _vend(svc, caller, request.headers.get("idempotency-key", ""), await request.body())


async def _vend(svc: VendingService, caller: Caller, key: str, raw: bytes) -> Response:
    """Parse the body with the route's own model (the same 422s) and vend: on the event loop if the vend is
    the common kind, else in the thread pool."""
    errors: list[Any] = []
    if not 1 <= len(key) <= 200:
        errors.append({"type": "missing", "loc": ("header", "idempotency-key"), "msg": "Field required"})
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
    fields = body.model_dump()
    issued = await svc.purchases.vend_async(caller, key, fields)  # the common case, without a thread
    if issued is None:
        issued = await run_in_threadpool(svc.vend, caller, key, fields)
    if isinstance(issued, Answered):  # encoded once, as it was stored
        return _encoded(issued)
    return vend_json(issued.body, 200 if issued.replayed else 201)


def _encoded(issued: Answered) -> Response:
    """A new vend's answer from its stored text: what :func:`vend_json` answers, without encoding it again."""
    headers = {"Cache-Control": "no-store", "Location": f"/v1/vends/{issued.body['id']}"}
    return Response(issued.text.encode(), 201, headers, media_type="application/json")


_ROUTE = next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is create_vend)


async def serve_vend(scope: Scope, receive: Receive, send: Send, caller: Caller) -> None:
    """``POST /v1/vends`` answered straight from the gate, once it has admitted the caller: the router's
    matching (every route of every router before this one), dependency resolution and two middlewares cost a
    third of a vend's CPU in the server. The answers are the route's: the same parsing, service call and
    exception handlers (those the application installed, looked up as Starlette's exception middleware does;
    anything without one goes on to the server-error handler, as it would from the route).
    """
    scope["route"] = _ROUTE  # for the access log and the metrics' route label
    request = Request(scope, receive)
    try:
        response = await _vend(request.app.state.service, caller, request.headers.get("idempotency-key", ""),
                               await request.body())  # fmt: skip
    except Exception as exc:
        handler = _handler(request.app.exception_handlers, exc)
        if handler is None:
            raise
        response = await handler(request, exc)
    await response(scope, receive, send)


def _handler(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The application's handler for ``exc`` (by its class's MRO), except the catch-all ones the server-error
    middleware runs."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


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
