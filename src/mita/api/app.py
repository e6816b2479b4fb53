"""The vending service over HTTP: FastAPI under ``/v1``, OpenAPI at ``/openapi.json``.

A thin shell. Every route but ``/v1/health`` takes an API key (``Authorization: Bearer <key>`` or
``X-API-Key``); roles are enforced by the service and registry functions (``caller.require``), and the reads
they leave open are limited here to the roles that need them. Refusals are RFC 9457 problem details (see
:mod:`mita.api.problems`). Routes are plain ``def``: the service is synchronous and FastAPI runs them in its
thread pool. Vend answers go out as the service built them, without a second validation pass.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from sqlalchemy import Engine, text

from mita import __version__, sts
from mita.vend import registry
from mita.vend.database import DEFAULT_URL, check_durability, make_engine
from mita.vend.schema import audit, customers, meters, supply_groups, tariffs, vendors
from mita.vend.service import Caller, VendingService, local_now

from . import models as m
from .problems import install as install_problem_handlers
from .problems import problem, responses

THREADS = int(os.environ.get("MITA_THREADS", "4"))  # request threads (and database connections) per worker process
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
    """The API key's owner; 401 problem when the key is missing, unknown or revoked.

    Async, so that a recently seen key costs no trip to the thread pool; only a cache miss asks the database.
    """
    engine: Engine = request.app.state.engine
    key = bearer.credentials if bearer is not None else api_key
    caller = registry.cached_caller(engine, key)
    if caller is None:
        caller = await run_in_threadpool(registry.authenticate, engine, key)
    return caller


Svc = Annotated[VendingService, Depends(get_service)]
Who = Annotated[Caller, Depends(get_caller)]
Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
ID_MAX = 2**63 - 1  # a BIGINT: larger ids are a 422, not a database error
After = Annotated[int | None, Query(ge=0, le=ID_MAX, description="the `next` cursor of the previous page")]
DrnPath = Annotated[
    str, Path(max_length=32, pattern=m.PRINTABLE, description="meter number (DRN)", examples=["47500150231"])
]
VendId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{1,36}$", description="the vend's UUID")]


def _vend_json(out: dict[str, Any], status: int = 200) -> JSONResponse:
    """Token answers go out as built; no cache keeps them (they are money)."""
    headers = {"Cache-Control": "no-store"}
    if status == 201:
        headers["Location"] = f"/v1/vends/{out['id']}"
    return JSONResponse(out, status_code=status, headers=headers)


# ---------------------------------------------------------------------- routes

health = APIRouter(prefix="/v1", tags=["health"])
v1 = APIRouter(prefix="/v1", responses=responses(401, 403, 422))

_VEND_DOC: dict[int | str, dict[str, Any]] = {200: {"model": m.VendOut, "description": "the vend"}}


@health.get("/health", response_model=m.Health, responses=responses(503))
def get_health(svc: Svc) -> Any:
    """Liveness and database reachability; no API key needed."""
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception:
        return problem(503, "database_unavailable", "the database is not reachable")
    return {"status": "ok", "database": svc.engine.dialect.name}


# --- supply groups


@v1.post(
    "/supply-groups",
    status_code=201,
    response_model=m.SupplyGroupOut,
    tags=["supply groups"],
    response_model_exclude_unset=True,
    responses=responses(409),
)
def create_supply_group(body: m.SupplyGroupIn, caller: Who, svc: Svc) -> Any:
    """A supply group and its vending key (admin). The key is sealed at once and never returned: only its KCV."""
    values = body.model_dump(exclude={"vending_key"})
    return registry.create_supply_group(svc.engine, caller, vending_key=body.vending_key.get_secret_value(), **values)


@v1.get(
    "/supply-groups", response_model=m.Page[m.SupplyGroupOut], tags=["supply groups"], response_model_exclude_unset=True
)
def list_supply_groups(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, supply_groups, limit, after)


@v1.get(
    "/supply-groups/{sgc}",
    response_model=m.SupplyGroupOut,
    tags=["supply groups"],
    response_model_exclude_unset=True,
    responses=responses(404),
)
def get_supply_group(sgc: Annotated[str, Path(max_length=6, pattern=m.PRINTABLE)], caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    return registry.get_supply_group(svc.engine, sgc)


# --- vendors


@v1.post("/vendors", status_code=201, response_model=m.VendorOut, tags=["vendors"], responses=responses(409))
def create_vendor(body: m.VendorIn, caller: Who, svc: Svc) -> Any:
    """A vendor (admin). Its API keys are made with ``mita admin create-key``."""
    return registry.create_vendor(svc.engine, caller, body.name, body.credit_limit)


@v1.get("/vendors", response_model=m.Page[m.VendorOut], tags=["vendors"])
def list_vendors(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, vendors, limit, after)


@v1.get("/vendors/{vendor_id}", response_model=m.VendorOut, tags=["vendors"], responses=responses(404))
def get_vendor(vendor_id: Annotated[int, Path(ge=1, le=ID_MAX)], caller: Who, svc: Svc) -> Any:
    """A vendor; a vendor's key sees its own vendor only (its balance)."""
    if caller.role == "vendor" and caller.vendor_id != vendor_id:
        return problem(404, "not_found", f"no vendor {vendor_id}")
    return registry.get_vendor(svc.engine, vendor_id)


# --- customers


@v1.post("/customers", status_code=201, response_model=m.CustomerOut, tags=["customers"], responses=responses(409))
def create_customer(body: m.CustomerIn, caller: Who, svc: Svc) -> Any:
    return registry.create_customer(svc.engine, caller, **body.model_dump())


@v1.get("/customers", response_model=m.Page[m.CustomerOut], tags=["customers"])
def list_customers(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, customers, limit, after)


@v1.get("/customers/{account}", response_model=m.CustomerOut, tags=["customers"], responses=responses(404))
def get_customer(account: Annotated[str, Path(max_length=40, pattern=m.PRINTABLE)], caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    return registry.get_by(svc.engine, customers, customers.c.account, account, "customer")


# --- tariffs


@v1.post(
    "/tariffs",
    status_code=201,
    response_model=m.TariffOut,
    tags=["tariffs"],
    response_model_exclude_unset=True,
    responses=responses(409),
)
def create_tariff(body: m.TariffIn, caller: Who, svc: Svc) -> Any:
    return registry.create_tariff(
        svc.engine,
        caller,
        name=body.name,
        currency=body.currency,
        spec=body.spec.model_dump(),
        effective_from=body.effective_from or local_now(),
        carry_leftover=body.carry_leftover,
    )


@v1.get("/tariffs", response_model=m.Page[m.TariffOut], tags=["tariffs"], response_model_exclude_unset=True)
def list_tariffs(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, tariffs, limit, after)


TariffName = Annotated[str, Path(max_length=100, pattern=m.PRINTABLE)]


@v1.get(
    "/tariffs/{name}",
    response_model=m.TariffOut,
    tags=["tariffs"],
    response_model_exclude_unset=True,
    responses=responses(404),
)
def get_tariff(name: TariffName, caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    return registry.get_tariff(svc.engine, name)


@v1.post(
    "/tariffs/{name}/versions",
    status_code=201,
    response_model=m.TariffOut,
    tags=["tariffs"],
    response_model_exclude_unset=True,
    responses=responses(404, 409),
)
def add_tariff_version(name: TariffName, body: m.TariffVersionIn, caller: Who, svc: Svc) -> Any:
    """A new version of the tariff's prices, in force from ``effective_from`` (admin)."""
    return registry.add_tariff_version(svc.engine, caller, name, body.spec.model_dump(), body.effective_from)


# --- meters


@v1.post("/meters", status_code=201, response_model=m.MeterOut, tags=["meters"], responses=responses(404, 409))
def create_meter(body: m.MeterIn, caller: Who, svc: Svc) -> Any:
    return registry.create_meter(svc.engine, caller, **body.model_dump())


@v1.get("/meters", response_model=m.Page[m.MeterOut], tags=["meters"])
def list_meters(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, meters, limit, after)


@v1.get("/meters/{drn}", response_model=m.MeterOut, tags=["meters"], responses=responses(404))
def get_meter(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    number = sts.MeterNumber.parse(drn)  # a wrong check digit is a 422, not a 404
    return registry.get_by(svc.engine, meters, meters.c.drn, number.drn, "meter")


@v1.patch("/meters/{drn}", response_model=m.MeterOut, tags=["meters"], responses=responses(404))
def set_meter_status(drn: DrnPath, body: m.MeterStatusIn, caller: Who, svc: Svc) -> Any:
    """Block, retire or re-activate a meter (admin, operator)."""
    return registry.set_meter_status(svc.engine, caller, drn, body.status)


@v1.post("/meters/{drn}/confirm-key-change", response_model=m.KeyChangeOut, tags=["meters"], responses=responses(404))
def confirm_key_change(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """The meter took its key change tokens: its pending key configuration becomes current (admin, operator)."""
    return svc.confirm_key_change(caller, drn)


@v1.post(
    "/meters/{drn}/engineering-tokens",
    status_code=201,
    response_model=None,
    tags=["meters"],
    responses={201: {"model": m.VendOut, "description": "the token"}, **responses(404, 409)},
)
def engineering_token(drn: DrnPath, body: m.EngineeringIn, caller: Who, svc: Svc) -> JSONResponse:
    """An engineering token (clear tamper, clear credit, power limits, meter test), audited (admin, operator)."""
    return _vend_json(svc.engineering(caller, drn, body.kind, body.value), 201)


# --- quotes and vends


@v1.post(
    "/quotes",
    response_model=None,
    tags=["vends"],
    responses={200: {"model": m.QuoteOut, "description": "the quote"}, **responses(404, 409)},
)
def quote(body: m.QuoteIn, caller: Who, svc: Svc) -> JSONResponse:
    """What an amount would buy now: the itemised receipt, no token, nothing changed."""
    return JSONResponse(svc.quote(caller, body.meter, body.amount))


@v1.post(
    "/vends",
    status_code=201,
    response_model=None,
    tags=["vends"],
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
    status, out = await run_in_threadpool(svc.vend, caller, key, body.model_dump())
    return _vend_json(out, status)


@v1.get("/vends/{vend_id}", response_model=None, tags=["vends"], responses={**_VEND_DOC, **responses(404)})
def get_vend(vend_id: VendId, caller: Who, svc: Svc) -> JSONResponse:
    """A vend (a vendor's key sees its own vends only)."""
    return _vend_json(svc.get_vend(caller, vend_id))


@v1.post("/vends/{vend_id}/reprint", response_model=None, tags=["vends"], responses={**_VEND_DOC, **responses(404)})
def reprint(vend_id: VendId, caller: Who, svc: Svc) -> JSONResponse:
    """The same tokens again, marked ``reprint: true`` (audited)."""
    return _vend_json(svc.reprint(caller, vend_id))


@v1.post(
    "/vends/{vend_id}/reversal", response_model=None, tags=["vends"], responses={**_VEND_DOC, **responses(404, 409)}
)
def reverse(vend_id: VendId, body: m.ReversalIn, caller: Who, svc: Svc) -> JSONResponse:
    """Reverse a purchase within the reversal window (admin, operator): the ledger lines are undone."""
    return _vend_json(svc.reverse(caller, vend_id, body.reason))


# --- audit


@v1.get("/audit", response_model=m.Page[m.AuditOut], tags=["audit"])
def list_audit(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    """The append-only audit log, oldest first (admin, operator)."""
    caller.require(*READERS)
    return registry.page(svc.engine, audit, limit, after)


# ---------------------------------------------------------------------- the application


def create_app(database_url: str, *, check: bool = True) -> FastAPI:
    """The API on ``database_url``; refuses a database whose settings could lose a confirmed vend."""
    engine = make_engine(database_url, pool_size=THREADS)
    if check:
        try:
            check_durability(engine)
        except BaseException:
            engine.dispose()
            raise
    hours = float(os.environ.get("MITA_REVERSAL_WINDOW_HOURS", "24"))
    service = VendingService(engine, reversal_window=dt.timedelta(hours=hours))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Few threads per process: a vend mostly waits on the database, and dozens of threads
        # fighting for one interpreter lock cost more CPU than the vends themselves. Scale with
        # worker processes instead (``mita serve --workers``).
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield
        engine.dispose()

    app = FastAPI(
        title="Mita vending API",
        version=__version__,
        description="STS prepayment vending: supply groups, tariffs, customers, meters, vends and their tokens.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.service = service
    install_problem_handlers(app)
    app.include_router(health)
    app.include_router(v1)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # POST /v1/vends parses its own body: put its model where the $ref points
        spec = default_openapi()
        spec.setdefault("components", {}).setdefault("schemas", {})["VendIn"] = m.VendIn.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory mita.api.app:app_from_env``: the URL from ``MITA_DATABASE_URL``."""
    return create_app(os.environ.get("MITA_DATABASE_URL") or DEFAULT_URL)
