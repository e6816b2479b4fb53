"""What the routes share: the service and the caller as dependencies, path and query parameter types, and
the answer for tokens. The caller comes from the gate (:mod:`mita.api.gate`), which authenticated it before the
request's body was read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mita.vend import limits
from mita.vend.service import Caller, VendingService

from . import models as m
from .problems import responses

READERS = ("admin", "operator")  # who may read the utility's set-up (customers, meters, tariffs, audit)

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key in `X-API-Key`")


# ---------------------------------------------------------------------- dependencies


async def get_service(request: Request) -> VendingService:
    service: VendingService = request.app.state.service
    return service


async def get_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Caller:
    """The API key's owner, as the gate (:mod:`mita.api.gate`) authenticated it before the body was read.

    The two headers are declared here so that the OpenAPI document shows how to authenticate.
    """
    caller: Caller = request.state.caller
    return caller


Svc = Annotated[VendingService, Depends(get_service)]
Who = Annotated[Caller, Depends(get_caller)]
Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
ID_MAX = 2**63 - 1  # a BIGINT: larger ids are a 422, not a database error
After = Annotated[int | None, Query(ge=0, le=ID_MAX, description="the `next` cursor of the previous page")]
DrnPath = Annotated[
    str,
    Path(max_length=limits.DRN_INPUT, pattern=m.PRINTABLE, description="meter number (DRN)", examples=["47500150231"]),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=limits.IDEMPOTENCY_KEY,
        description="one per intended token: a retry with the same key and body answers the same token",
    ),
]
VendId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{1,36}$", description="the vend's UUID")]


def vend_json(out: dict[str, Any], status: int = 200) -> JSONResponse:
    """Token answers go out as built; no cache keeps them (they are money)."""
    headers = {"Cache-Control": "no-store"}
    if status == 201:
        headers["Location"] = f"/v1/vends/{out['id']}"
    return JSONResponse(out, status_code=status, headers=headers)


TariffName = Annotated[str, Path(max_length=limits.NAME, pattern=m.PRINTABLE)]
SgcPath = Annotated[str, Path(max_length=6, pattern=m.PRINTABLE, description="supply group code")]
KrnPath = Annotated[int, Path(ge=1, le=9, description="key revision number")]
CampaignId = Annotated[int, Path(ge=1, le=ID_MAX, description="the campaign's id")]


def v1_router(*tags: str) -> APIRouter:
    """A router under ``/v1``: every route there needs a key (401), a role (403) and a valid request (422)."""
    return APIRouter(prefix="/v1", tags=list(tags), responses=responses(401, 403, 422))
