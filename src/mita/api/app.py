"""The vending service over HTTP: FastAPI under ``/v1``, OpenAPI at ``/openapi.json``.

A thin shell. Every route but ``/v1/health`` takes an API key (``Authorization: Bearer <key>`` or
``X-API-Key``); roles are enforced by the service and registry functions (``caller.require``), and the reads
they leave open are limited here to the roles that need them. Refusals are RFC 9457 problem details (see
:mod:`mita.api.problems`). Routes are plain ``def``: the service is synchronous and FastAPI runs them in its
thread pool. Vend answers go out as the service built them, without a second validation pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from mita import __version__, campaign, sts
from mita.keys.master import KeyStoreError
from mita.vend import keyring, limits, registry
from mita.vend.database import DEFAULT_URL, check_durability, check_ready, make_engine
from mita.vend.errors import VendError, is_transient
from mita.vend.schema import audit, customers, meters, supply_groups, tariffs, vendors
from mita.vend.service import Caller, VendingService, local_now

from . import models as m
from .gate import Gate, Readiness
from .problems import install as install_problem_handlers
from .problems import problem, refusal, responses

log = logging.getLogger("mita.api")

MAX_BODY = int(os.environ.get("MITA_MAX_BODY_BYTES", str(1024 * 1024)))  # request bodies, bytes
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


probes = APIRouter(tags=["health"])


@probes.get("/healthz", response_model=m.Probe, response_model_exclude_none=True)
def healthz() -> Any:
    """Liveness: the process answers (it says nothing of the database)."""
    return {"status": "alive"}


@probes.get("/readyz", response_model=m.Probe, responses=responses(503))
def readyz(request: Request) -> Any:
    """Readiness: the database is reachable, durable and migrated; 503 with the reason while it is not."""
    engine: Engine = request.app.state.engine
    try:
        check_ready(engine)
    except VendError as exc:
        return refusal(exc)
    return {"status": "ready", "database": engine.dialect.name}


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
def get_customer(
    account: Annotated[str, Path(max_length=limits.ACCOUNT, pattern=m.PRINTABLE)], caller: Who, svc: Svc
) -> Any:
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


TariffName = Annotated[str, Path(max_length=limits.NAME, pattern=m.PRINTABLE)]


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


@v1.post(
    "/meters/{drn}/confirm-key-change", response_model=m.KeyChangeOut, tags=["meters"], responses=responses(404, 409)
)
def confirm_key_change(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """The meter took its key change tokens: its pending key configuration becomes current (admin, operator)."""
    return svc.confirm_key_change(caller, drn)


@v1.post(
    "/meters/{drn}/engineering-tokens",
    status_code=201,
    response_model=None,
    tags=["meters"],
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
    status, out = svc.engineering(caller, drn, body.kind, body.value, key)
    return _vend_json(out, status)


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


# --- vending keys (admin; admin and operator read them, never their material)

SgcPath = Annotated[str, Path(max_length=6, pattern=m.PRINTABLE, description="supply group code")]
KrnPath = Annotated[int, Path(ge=1, le=9, description="key revision number")]


@v1.get(
    "/supply-groups/{sgc}/keys", response_model=list[m.KeyStatusOut], tags=["vending keys"], responses=responses(404)
)
def list_vending_keys(sgc: SgcPath, caller: Who, svc: Svc) -> Any:
    """The supply group's keys, newest KRN first, with expiry, credit used and warnings (admin, operator)."""
    caller.require(*READERS)
    out = keyring.key_status(svc.engine, svc.clock(), sgc)
    if not out:
        registry.get_supply_group(svc.engine, sgc)  # an unknown group is a 404, not an empty list
    return out


@v1.post(
    "/supply-groups/{sgc}/keys",
    status_code=201,
    response_model=m.VendingKeyCreated,
    tags=["vending keys"],
    responses=responses(404, 409, 503),
)
def add_vending_key(sgc: SgcPath, body: m.VendingKeyIn, caller: Who, svc: Svc) -> Any:
    """Import a vending key (``key``) or have the keystore generate one (admin); it waits as ``pending`` until
    activated. The key is sealed (or kept by the HSM) at once and never returned: only its KCV."""
    key = body.key.get_secret_value() if body.key is not None else None
    return keyring.add_key(
        svc.engine, caller, sgc=sgc, krn=body.krn, dkga=body.dkga, key_hex=key, kcv=body.kcv,
        keystore_name=body.keystore, ken=body.ken, issued_until=body.issued_until, credit_limit=body.credit_limit,
        at=svc.clock(),
    )  # fmt: skip


@v1.post(
    "/supply-groups/{sgc}/keys/{krn}/activate",
    response_model=m.KeyStatusOut,
    tags=["vending keys"],
    responses=responses(404, 409),
)
def activate_vending_key(sgc: SgcPath, krn: KrnPath, caller: Who, svc: Svc, body: m.ActivateKeyIn | None = None) -> Any:
    """KRN rotation (admin): the supply group vends under this key from now on, optionally with a new base
    date, EA or key type; the previous key is retired and its meters need a key change."""
    at = svc.clock()
    changes = body.model_dump(exclude_none=True) if body is not None else {}
    keyring.activate_key(svc.engine, caller, sgc=sgc, krn=krn, at=at, **changes)
    return keyring.key_entry(svc.engine, at, sgc, krn)


@v1.post(
    "/supply-groups/{sgc}/keys/{krn}/retire",
    response_model=m.KeyStatusOut,
    tags=["vending keys"],
    responses=responses(404, 409),
)
def retire_vending_key(sgc: SgcPath, krn: KrnPath, caller: Who, svc: Svc, body: m.RetireKeyIn | None = None) -> Any:
    """Stop a key issuing credit (admin); ``destroy`` also removes its material, after which no meter can be
    moved off it. Answers the key's status."""
    at = svc.clock()
    keyring.retire_key(svc.engine, caller, sgc=sgc, krn=krn, at=at, destroy=body is not None and body.destroy)
    return keyring.key_entry(svc.engine, at, sgc, krn)


@v1.get(
    "/supply-groups/{sgc}/key-history",
    response_model=list[m.KeyHistoryOut],
    response_model_exclude_unset=True,
    tags=["vending keys"],
    responses=responses(404),
)
def vending_key_history(sgc: SgcPath, caller: Who, svc: Svc) -> Any:
    """What was done to the supply group's keys, oldest first (admin, operator)."""
    caller.require(*READERS)
    return keyring.key_history(svc.engine, sgc)


# --- key changes of one meter


@v1.post(
    "/meters/{drn}/key-change",
    status_code=201,
    response_model=None,
    tags=["key changes"],
    responses={201: {"model": m.VendOut, "description": "the key change tokens"}, **responses(404, 409)},
)
def request_key_change(drn: DrnPath, body: m.KeyChangeIn, caller: Who, svc: Svc) -> JSONResponse:
    """Key change tokens for one meter (admin, operator): any of SGC, KRN, KT, TI, EA, base date and KEN. The new
    configuration stays pending until the change is confirmed."""
    return _vend_json(svc.request_key_change(caller, drn, body.model_dump(exclude_none=True)), 201)


@v1.delete("/meters/{drn}/key-change", tags=["key changes"], responses=responses(404, 409))
def cancel_key_change(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """Forget the meter's pending key change (admin, operator): only for tokens that were never entered."""
    return svc.cancel_key_change(caller, drn)


@v1.get(
    "/meters/{drn}/key-changes",
    response_model=list[m.KeyChangeEntryOut],
    tags=["key changes"],
    responses=responses(404),
)
def list_key_changes(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """Every key change the meter was sent, oldest first, with how far it got (admin, operator)."""
    return svc.key_change_history(caller, drn)


@v1.post(
    "/vends/{vend_id}/accepted",
    response_model=m.AcceptedOut,
    response_model_exclude_unset=True,
    tags=["key changes"],
    responses=responses(404, 409),
)
def vend_accepted(vend_id: VendId, caller: Who, svc: Svc) -> Any:
    """The customer reports the vend's tokens accepted: a key change it carried is confirmed (admin, operator)."""
    return svc.vend_accepted(caller, vend_id)


# --- key change campaigns

CampaignId = Annotated[int, Path(ge=1, le=ID_MAX, description="the campaign's id")]


class _Stopped(Exception):
    """The server is shutting down: generation stops after its last committed batch (a later run resumes)."""


class Generations:
    """Campaign generations running in this process, at most one per campaign, each in its own thread (a long run
    must not hold one of the few request threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, threading.Thread] = {}
        self._stopping = threading.Event()

    def start(self, campaign_id: int, work: Callable[[Callable[[int, int], None]], Any]) -> bool:
        """Run ``work(progress)`` unless this campaign's generation runs already; True if it was started."""
        with self._lock:
            if campaign_id in self._running or self._stopping.is_set():
                return False
            thread = threading.Thread(
                target=self._run, args=(campaign_id, work), name=f"mita-campaign-{campaign_id}", daemon=True
            )
            self._running[campaign_id] = thread
            thread.start()
        return True

    def running(self, campaign_id: int) -> bool:
        with self._lock:
            return campaign_id in self._running

    def _progress(self, _done: int, _planned: int) -> None:
        if self._stopping.is_set():
            raise _Stopped

    def _run(self, campaign_id: int, work: Callable[[Callable[[int, int], None]], Any]) -> None:
        try:
            work(self._progress)
        except _Stopped:
            log.warning("campaign %s: generation stopped by shutdown; generate again to resume", campaign_id)
        except sts.StsError as exc:
            log.error("campaign %s: generation refused: %s", campaign_id, exc.code)
        except Exception as exc:  # a thread's failure is logged, never lost (and never with its arguments)
            log.error("campaign %s: generation failed: %s", campaign_id, type(exc).__name__)
        finally:
            with self._lock:
                self._running.pop(campaign_id, None)

    def stop(self, timeout: float = 30.0) -> None:
        """Let every run finish its current batch, and wait for them."""
        self._stopping.set()
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout)


@v1.post("/campaigns", status_code=201, response_model=m.CampaignOut, tags=["campaigns"], responses=responses(404, 409))
def plan_campaign(body: m.CampaignIn, caller: Who, svc: Svc, response: Response) -> Any:
    """Plan a key change campaign (admin): which meters move to which key, in batches. Nothing is sent yet."""
    try:
        out = campaign.plan(
            svc.engine, caller, name=body.name, sgc=body.sgc, target=body.target.model_dump(exclude_none=True),
            selection=body.selection.model_dump(exclude_none=True) if body.selection is not None else None,
            delivery=body.delivery, batch_size=body.batch_size, at=svc.clock(),
        )  # fmt: skip
    except IntegrityError:  # campaign names are unique; the service lets the database say so
        raise VendError("conflict", f"there is a campaign named {body.name!r} already") from None
    response.headers["Location"] = f"/v1/campaigns/{out['id']}"
    return out


@v1.get("/campaigns/{campaign_id}", response_model=m.CampaignOut, tags=["campaigns"], responses=responses(404))
def get_campaign(campaign_id: CampaignId, caller: Who, svc: Svc) -> Any:
    """The campaign, and how many of its meters are planned, issued, delivered and confirmed (admin, operator)."""
    caller.require(*READERS)
    return campaign.get_campaign(svc.engine, campaign_id)


@v1.post(
    "/campaigns/{campaign_id}/generate",
    status_code=202,
    response_model=m.CampaignOut,
    tags=["campaigns"],
    responses=responses(404, 409),
)
def generate_campaign(campaign_id: CampaignId, request: Request, caller: Who, svc: Svc, response: Response) -> Any:
    """Make the key change tokens of every planned meter, in the background, batch by batch (admin).

    Answers at once; ``GET /v1/campaigns/{id}`` shows the progress in its counts. A run that stopped resumes
    where it stopped; asking again while a run is going starts no second one.
    """
    caller.require("admin")
    info = campaign.get_campaign(svc.engine, campaign_id)
    if info["status"] == "closed":
        raise VendError("conflict", f"campaign {campaign_id} is closed")
    at = svc.clock()

    def work(progress: Callable[[int, int], None]) -> Any:
        return campaign.generate(svc.engine, caller, campaign_id, at=at, keyring=svc.keyring, progress=progress)

    generations: Generations = request.app.state.generations
    generations.start(campaign_id, work)
    response.headers["Location"] = f"/v1/campaigns/{campaign_id}"
    return campaign.get_campaign(svc.engine, campaign_id)


@v1.get(
    "/campaigns/{campaign_id}/export.csv",
    response_class=StreamingResponse,
    tags=["campaigns"],
    responses={
        200: {"content": {"text/csv": {}}, "description": "one line per meter still to confirm, tokens in order"},
        **responses(404),
    },
)
def export_campaign(campaign_id: CampaignId, caller: Who, svc: Svc) -> StreamingResponse:
    """The field teams' list (admin, operator): meter, where it is, old and new key, and its tokens."""
    caller.require(*READERS)
    campaign.get_campaign(svc.engine, campaign_id)  # a 404 before the first line, not a cut-off stream
    return StreamingResponse(
        iter(campaign.export_csv(svc.engine, campaign_id)),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"',
            "Cache-Control": "no-store",
        },
    )


@v1.post("/campaigns/{campaign_id}/sms", response_model=m.SmsQueuedOut, tags=["campaigns"], responses=responses(404))
def queue_campaign_sms(campaign_id: CampaignId, caller: Who, svc: Svc) -> Any:
    """One SMS per issued meter whose customer has a phone number, into the outbox (admin, operator)."""
    return {"queued": campaign.queue_sms(svc.engine, caller, campaign_id, at=svc.clock())}


@v1.post("/campaigns/{campaign_id}/marks", response_model=m.MarksOut, tags=["campaigns"], responses=responses(404, 409))
def mark_campaign(campaign_id: CampaignId, body: m.MarksIn, caller: Who, svc: Svc) -> Any:
    """Field or gateway reports (admin, operator): meters whose tokens were ``delivered``, or ``confirmed``
    (accepted by the meter: its new key becomes current)."""
    caller.require("admin", "operator")
    numbers = [sts.MeterNumber.parse(drn).drn for drn in body.meters]  # every check digit before any change
    campaign.get_campaign(svc.engine, campaign_id)
    return campaign.mark(svc, caller, campaign_id, numbers, body.status, at=svc.clock())


# --- audit


@v1.get("/audit", response_model=m.Page[m.AuditOut], tags=["audit"])
def list_audit(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    """The append-only audit log, oldest first (admin, operator)."""
    caller.require(*READERS)
    return registry.page(svc.engine, audit, limit, after)


# ---------------------------------------------------------------------- the application

_HSM_DOWN = {
    "hsm_unavailable": "the HSM is not available; retry later",
    "hsm_not_configured": "this server has no HSM configured (the pkcs11 keystore)",
}
_KEYSTORE_REQUEST = {"invalid_dkga", "keystore_unsupported", "unknown_keystore"}  # about the request, not the server


async def _keystore_error(_: Request, exc: Exception) -> JSONResponse:
    """Key store refusals: the request's (422), an HSM away (503), or the server's key store broken (500)."""
    assert isinstance(exc, KeyStoreError)
    if exc.code in _KEYSTORE_REQUEST:
        return problem(422, exc.code, exc.message)
    if exc.code == "key_exists":
        return problem(409, exc.code, "the keystore already holds a key for this supply group and KRN")
    log.error("key store unusable: %s", exc.code)
    if exc.code in _HSM_DOWN:
        headers = {"Retry-After": "5"} if exc.code == "hsm_unavailable" else None
        return problem(503, exc.code, _HSM_DOWN[exc.code], headers=headers)
    return problem(500, exc.code, "the server's key store is not usable; the operator must fix it")


def create_app(database_url: str, *, check: bool = True) -> FastAPI:
    """The API on ``database_url``; refuses a database whose settings could lose a confirmed vend.

    A database that cannot be reached yet does not stop the process: it starts, answers ``/readyz`` and every
    ``/v1`` route with 503 until the database is there (and durable, and migrated), then serves.
    """
    engine = make_engine(database_url, pool_size=THREADS)
    if check:
        try:
            check_durability(engine)
        except DBAPIError as exc:
            if not is_transient(exc):
                engine.dispose()
                raise
            log.warning("database not reachable (%s); serving 503 until it is", type(exc.orig).__name__)
        except BaseException:
            engine.dispose()
            raise
    readiness = Readiness(engine)
    hours = float(os.environ.get("MITA_REVERSAL_WINDOW_HOURS", "24"))
    service = VendingService(engine, reversal_window=dt.timedelta(hours=hours))
    generations = Generations()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Few threads per process: a vend mostly waits on the database, and dozens of threads
        # fighting for one interpreter lock cost more CPU than the vends themselves. Scale with
        # worker processes instead (``mita serve --workers``).
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield
        await run_in_threadpool(generations.stop)  # campaign runs end after their current batch
        engine.dispose()

    app = FastAPI(
        title="Mita vending API",
        version=__version__,
        description="STS prepayment vending: supply groups, tariffs, customers, meters, vends and their tokens.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.add_middleware(Gate, engine=engine, readiness=readiness, max_body=MAX_BODY)
    app.state.engine = engine
    app.state.service = service
    app.state.generations = generations
    install_problem_handlers(app)
    app.add_exception_handler(KeyStoreError, _keystore_error)  # more specific than the StsError handler
    app.include_router(health)
    app.include_router(probes)
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
