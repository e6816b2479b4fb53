"""Bulk imports of customers and meters from CSV: every row or none, every bad row reported.

The body is CSV (``Content-Type: text/csv``, UTF-8), its header naming the API's fields (see
:mod:`mita.vend.imports` for the columns and their defaults). A refused import is a 422 ``import_refused``
problem whose ``errors`` list every problem: ``loc`` is ``["body", row, column]`` (rows as a spreadsheet numbers
them, the header being row 1; no column when the whole row is wrong), ``type`` the stable code a single create
would answer, ``msg`` what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from mita.vend import imports
from mita.vend.errors import VendError

from .. import listings as lm
from ..deps import Svc, Who, v1_router
from ..problems import problem, responses

router = v1_router("imports")

CUSTOMERS_CSV = "account,name,phone,fbe_eligible,debt,debt_rate\r\nACC-2001,Naledi Dlamini,+27821234567,true,0,0\r\n"
METERS_CSV = "drn,sgc,customer,tariff,utility,area\r\n47500150249,123456,ACC-2001,domestic,electricity,Soweto\r\n"
Importer = Callable[[Any, Iterable[Mapping[str, object]]], dict[str, Any]]


def _doc(example: str, columns: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": f"CSV, UTF-8, header first. Columns: {columns}",
            "content": {"text/csv": {"schema": {"type": "string"}, "example": example}},
        }
    }


async def _import(request: Request, caller: Any, run: Importer) -> JSONResponse:
    raw = await request.body()

    def parse_and_import() -> dict[str, Any]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise VendError("invalid_csv", "the CSV must be UTF-8 text") from None
        return run(caller, imports.parse_csv(text))

    try:
        out = await run_in_threadpool(parse_and_import)
    except imports.ImportRefused as exc:
        errors = [{"loc": ["body", e.row, *([e.column] if e.column else [])], "msg": e.message, "type": e.code}
                  for e in exc.errors]  # fmt: skip
        return problem(422, exc.code, exc.message, errors=errors)
    return JSONResponse(out, status_code=201)


@router.post(
    "/imports/customers",
    status_code=201,
    response_model=lm.ImportOut,
    responses=responses(400),
    openapi_extra=_doc(CUSTOMERS_CSV, "account and name (required), phone, fbe_eligible (true/false), debt (minor "
                       "units), debt_rate (a fraction 0..1)"),
)  # fmt: skip
async def import_customers(request: Request, caller: Who, svc: Svc) -> JSONResponse:
    """Create customers from CSV (admin, operator): all rows or none; 422 ``import_refused`` lists every bad row."""
    return await _import(request, caller, svc.registry.import_customers)


@router.post(
    "/imports/meters",
    status_code=201,
    response_model=lm.ImportOut,
    responses=responses(400),
    openapi_extra=_doc(METERS_CSV, "drn and sgc (required), customer (an account), tariff (a name), utility "
                       "(electricity, water, gas), manufacturer, area, ti, krn, kt, ea, base_date, ken (default: the "
                       "supply group's)"),
)  # fmt: skip
async def import_meters(request: Request, caller: Who, svc: Svc) -> JSONResponse:
    """Create meters from CSV (admin, operator): all rows or none; 422 ``import_refused`` lists every bad row."""
    return await _import(request, caller, svc.registry.import_meters)
