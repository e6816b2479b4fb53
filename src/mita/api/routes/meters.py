"""Meters: registration, status, engineering tokens and confirming a key change."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse

from mita import sts
from mita.vend import listings, registry
from mita.vend.schema import meters

from .. import listings as lm
from .. import models as m
from ..deps import (
    READERS,
    After,
    DrnPath,
    IdempotencyKey,
    Limit,
    Svc,
    Who,
    v1_router,
    vend_json,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("meters")


# --- meters


@router.post("/meters", status_code=201, response_model=m.MeterOut, responses=responses(404, 409))
def create_meter(body: m.MeterIn, caller: Who, svc: Svc) -> Any:
    return svc.registry.create_meter(caller, **body.model_dump())


@router.get("/meters", response_model=m.Page[m.MeterOut])
def list_meters(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, meters, limit, after)


@router.get("/meters/{drn}", response_model=m.MeterOut, responses=responses(404))
def get_meter(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    number = sts.MeterNumber.parse(drn)  # a wrong check digit is a 422, not a 404
    return registry.get_by(svc.engine, meters, meters.c.drn, number.drn, "meter")


@router.get("/meters/{drn}/vends", response_model=lm.VendPage, responses=responses(404))
def meter_history(drn: DrnPath, caller: Who, svc: Svc, limit: Limit = 50, after: lm.Cursor = None) -> Any:
    """The meter's history, newest first: purchases (reversed ones marked), engineering tokens and key changes,
    with their tokens (admin, operator; a vendor's key sees its own vendor's sales only)."""
    return listings.meter_history(svc.engine, caller, drn, limit, after)


@router.patch("/meters/{drn}", response_model=m.MeterOut, responses=responses(404))
def set_meter_status(drn: DrnPath, body: m.MeterStatusIn, caller: Who, svc: Svc) -> Any:
    """Block, retire or re-activate a meter (admin, operator)."""
    return svc.registry.set_meter_status(caller, drn, body.status)


@router.post("/meters/{drn}/confirm-key-change", response_model=m.KeyChangeOut, responses=responses(404, 409))
def confirm_key_change(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """The meter took its key change tokens: its pending key configuration becomes current (admin, operator)."""
    return svc.confirm_key_change(caller, drn)


@router.post(
    "/meters/{drn}/engineering-tokens",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": m.VendOut, "description": "the token"},
        200: {"model": m.VendOut, "description": "a replay: the token this Idempotency-Key made, unchanged"},
        **responses(404, 409),
    },
)
def engineering_token(
    drn: DrnPath, body: m.EngineeringIn, caller: Who, svc: Svc, key: IdempotencyKey = None
) -> JSONResponse:
    """An engineering token (clear tamper, clear credit, power limits, meter test), audited (admin, operator).

    With an ``Idempotency-Key`` a retry answers 200 with the same token; without one each call makes a new token.
    """
    issued = svc.engineering(caller, drn, body.kind, body.value, key)
    return vend_json(issued.body, 200 if issued.replayed else 201)
