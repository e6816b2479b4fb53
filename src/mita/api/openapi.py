"""The OpenAPI document (``/openapi.json``): what FastAPI derives from the routes, plus what it cannot see.

FastAPI builds the document from the routes' signatures. It cannot see three things, which this module adds:

* the models of routes that parse their own body (``POST /v1/vends`` reads :class:`~mita.api.models.VendIn`
  itself, for speed): they are put where the route's ``$ref`` points;
* the refusals: every 4xx and 5xx answer is an ``application/problem+json`` :class:`~mita.api.problems.Problem`,
  and lists the codes it can carry (``x-error-codes``, and in its description with their titles). The codes
  come from two tables below: :data:`EVERY_ROUTE` (the gate, the validation and the database handlers, for
  every route under ``/v1``) and :data:`ROUTE_CODES` (what each route's service refuses with); a status a
  route lists with no code known falls back to every code of that status in :data:`mita.api.codes.CODES`.
  Statuses come from the codes table: a code is never listed under another status than the one it answers;
* each request model's example, shown as the request body's example (the models carry them,
  :func:`mita.api.models._example`).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from . import models as m
from .codes import CODES
from .gate import BODY_METHODS, OPEN_PATHS
from .problems import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

# ---------------------------------------------------------------------- which codes, where

#: Refusals every route under /v1 can give: the gate (:mod:`mita.api.gate`: database, API key, body size), the
#: roles (``caller.require``), request validation, and the database handlers (:mod:`mita.api.problems`).
EVERY_ROUTE = (
    "unauthorized", "forbidden", "payload_too_large", "invalid_request",
    "database_unavailable", "schema_outdated", "unsafe_database", "disk_full",
    "database_refused", "database_error", "internal_error",
)  # fmt: skip
#: ... a route that takes a JSON body (one that does not parse) ...
WITH_BODY = ("invalid_json",)
#: ... and one whose method the gate checks the media type of (POST, PUT, PATCH), and the clock before a write.
WITH_MEDIA_TYPE = ("unsupported_media_type", "clock_skew")

# groups of codes that several routes share
METER_NUMBER = ("check_digit_error", "format_error")  # a DRN in the path or the body
TOKEN_ENGINE = ("range_error", "unsupported", "tid_out_of_range")  # making tokens
KEY_USE = (  # opening a vending key: sealed in the database or kept by an HSM
    "key_unreadable", "bad_master_key", "key_not_found", "key_ambiguous", "key_mismatch", "key_unprotected",
    "wrong_keystore", "hsm_error", "hsm_unavailable", "hsm_not_configured",
)  # fmt: skip
IDEMPOTENT = ("invalid_idempotency_key", "idempotency_conflict", "in_progress")

#: What each route's service can refuse with, beyond :data:`EVERY_ROUTE` ("METHOD path" as in the document).
# fmt: off
ROUTE_CODES: dict[str, tuple[str, ...]] = {
    "GET /v1/health": ("database_unavailable",),
    "GET /readyz": ("database_unavailable", "schema_outdated", "unsafe_database"),
    # set-up
    "POST /v1/supply-groups": ("conflict", "invalid_dkga", "format_error", "range_error", "bad_master_key"),
    "GET /v1/supply-groups/{sgc}": ("not_found",),
    "POST /v1/vendors": ("conflict",),
    "GET /v1/vendors/{vendor_id}": ("not_found",),
    "PUT /v1/vendors/{vendor_id}/webhook": ("not_found", "invalid_request"),
    "POST /v1/customers": ("conflict", "invalid_debt_rate"),
    "GET /v1/customers/{account}": ("not_found",),
    "POST /v1/tariffs": ("conflict", "invalid_tariff", "invalid_vat_rate", "invalid_currency"),
    "GET /v1/tariffs/{name}": ("not_found",),
    "POST /v1/tariffs/{name}/versions": ("not_found", "conflict", "invalid_tariff", "invalid_vat_rate"),
    "POST /v1/meters": ("not_found", "conflict", "invalid_utility", "range_error", *METER_NUMBER),
    "GET /v1/meters/{drn}": ("not_found", *METER_NUMBER),
    "PATCH /v1/meters/{drn}": ("not_found", "conflict", "invalid_status", *METER_NUMBER),
    # vends
    "POST /v1/quotes": ("not_found", "no_tariff", "invalid_amount", "amount_too_small", *METER_NUMBER),
    "POST /v1/vends": (
        "credit_limit", "key_credit_limit", "not_found", "key_change_required", "meter_blocked", "key_expired",
        "key_not_active", "no_tariff", "no_vending_key", "invalid_amount", "amount_too_small", "retry",
        "invalid_key_change", "invalid_dkga",
        *IDEMPOTENT, *METER_NUMBER, *TOKEN_ENGINE, *KEY_USE,
    ),
    "GET /v1/vends/{vend_id}": ("not_found",),
    "POST /v1/vends/{vend_id}/reprint": ("not_found", "reversed"),
    "POST /v1/vends/{vend_id}/reversal": ("not_found", "reversal_window_closed", "already_reversed", "not_reversible"),
    "POST /v1/meters/{drn}/engineering-tokens": (
        "not_found", "invalid_kind", *IDEMPOTENT, *METER_NUMBER, *TOKEN_ENGINE, *KEY_USE,
    ),
    # keys and key changes
    "GET /v1/supply-groups/{sgc}/keys": ("not_found",),
    "POST /v1/supply-groups/{sgc}/keys": (
        "not_found", "conflict", "key_exists", "invalid_dkga", "kcv_mismatch", "unknown_keystore",
        "keystore_unsupported", "format_error", "range_error", *KEY_USE,
    ),
    "POST /v1/supply-groups/{sgc}/keys/{krn}/activate": (
        "not_found", "conflict", "invalid_dkga", "invalid_key_change", "format_error", "range_error", "unsupported",
    ),
    "POST /v1/supply-groups/{sgc}/keys/{krn}/retire": ("not_found", "conflict", *KEY_USE),
    "GET /v1/supply-groups/{sgc}/key-history": ("not_found",),
    "POST /v1/meters/{drn}/key-change": (
        "not_found", "conflict", "no_vending_key", "invalid_key_change", "invalid_request",
        *METER_NUMBER, *TOKEN_ENGINE, *KEY_USE,
    ),
    "DELETE /v1/meters/{drn}/key-change": ("not_found", "no_pending_key", *METER_NUMBER),
    "GET /v1/meters/{drn}/key-changes": ("not_found", *METER_NUMBER),
    "POST /v1/meters/{drn}/confirm-key-change": ("not_found", "no_pending_key", *METER_NUMBER),
    "POST /v1/vends/{vend_id}/accepted": ("not_found", "no_pending_key", "key_change_superseded"),
    # the token doctor (mita.vend.doctor): a diagnosis is a 200 whatever the meter would do
    "POST /v1/tokens/doctor": ("not_found", "invalid_decoder_key", "no_vending_key", *METER_NUMBER, *KEY_USE),
    # connected meters (mita.headend): a keypad-only meter's endpoint is not_found; a command for it, not_connected
    "PUT /v1/meters/{drn}/connection": ("not_found", *METER_NUMBER),
    "GET /v1/meters/{drn}/connection": ("not_found", *METER_NUMBER),
    "DELETE /v1/meters/{drn}/connection": ("not_found", *METER_NUMBER),
    "POST /v1/meters/{drn}/commands": (
        "not_found", "not_connected", "invalid_kind", "key_change_required", "no_vending_key", "key_expired",
        "key_not_active", "retry", *IDEMPOTENT, *METER_NUMBER, *TOKEN_ENGINE, *KEY_USE,
    ),
    "GET /v1/meters/{drn}/commands": ("not_found", *METER_NUMBER),
    "GET /v1/commands/{command_id}": ("not_found",),
    # alarms and telemetry (mita.headend.alarms)
    "GET /v1/alarms": ("invalid_cursor", "invalid_status", "invalid_severity", "invalid_period", *METER_NUMBER),
    "GET /v1/alarms/{alarm_id}": ("not_found",),
    "POST /v1/alarms/{alarm_id}/acknowledge": ("not_found", "alarm_closed", "already_acknowledged", "conflict"),
    "POST /v1/alarms/{alarm_id}/close": ("not_found", "alarm_closed", "conflict"),
    "GET /v1/meters/{drn}/timeline": ("not_found", "invalid_cursor", *METER_NUMBER),
    "GET /v1/meters/{drn}/telemetry": ("not_found", *METER_NUMBER),
    # campaigns
    "POST /v1/campaigns": (
        "not_found", "conflict", "no_vending_key", "invalid_dkga", "invalid_key_change", "format_error", "range_error",
    ),
    "GET /v1/campaigns/{campaign_id}": ("not_found",),
    "POST /v1/campaigns/{campaign_id}/generate": ("not_found", "conflict", "key_not_active", "no_vending_key"),
    "GET /v1/campaigns/{campaign_id}/export.csv": ("not_found",),
    "POST /v1/campaigns/{campaign_id}/sms": ("not_found",),
    "POST /v1/campaigns/{campaign_id}/marks": ("not_found", "conflict", *METER_NUMBER),
    "GET /v1/campaigns": ("invalid_status",),
    # the staff's lists, API keys, imports and reports
    "GET /v1/vends": ("invalid_cursor", "invalid_kind", "invalid_status", "invalid_period", *METER_NUMBER),
    "GET /v1/meters/{drn}/vends": ("not_found", "invalid_cursor", *METER_NUMBER),
    "POST /v1/api-keys/{key_id}/revoke": ("not_found",),
    "POST /v1/imports/customers": ("import_refused", "invalid_csv", "conflict"),
    "POST /v1/imports/meters": ("import_refused", "invalid_csv", "conflict"),
    "GET /v1/reports/sales": ("invalid_period",),
    # retail tills (mita.channels.pos: PUSI semantics) and the operators' payments (mita.channels.payments)
    "POST /v1/pos/purchases/{purchase_id}": (
        "duplicate_record", "credit_limit", "key_credit_limit", "not_found", "key_change_required", "meter_blocked",
        "key_expired", "key_not_active", "no_tariff", "no_vending_key", "invalid_amount", "amount_too_small", "retry",
        "invalid_key_change", "invalid_dkga", *METER_NUMBER, *TOKEN_ENGINE, *KEY_USE,
    ),
    "POST /v1/pos/purchases/{purchase_id}/retry": ("not_found", "reversed"),
    "POST /v1/pos/purchases/{purchase_id}/confirmations/{advice_id}": ("not_found", "reversed"),
    "POST /v1/pos/purchases/{purchase_id}/reversals/{advice_id}": ("not_found", "reversal_refused"),
    "POST /v1/pos/trials/{request_id}": ("not_found", "no_tariff", "invalid_amount", "amount_too_small", *METER_NUMBER),
    "POST /v1/pos/reprints/{reprint_id}": ("not_found", "reversed", *METER_NUMBER),
    "GET /v1/payments": ("invalid_cursor", *METER_NUMBER),
    "GET /v1/payments/{payment_id}": ("not_found",),
    "POST /v1/payments/{payment_id}/refund": ("not_found", "invalid_transition", "conflict"),
    "POST /v1/payments/{payment_id}/resolve": ("not_found", "invalid_transition", "conflict", *METER_NUMBER),
}
# fmt: on

#: Path parameters some routes declare without a description (the document names every parameter's meaning).
PARAMETERS = {
    "sgc": "supply group code (6 digits)",
    "vendor_id": "the vendor's id",
    "account": "the customer's account number",
    "name": "the tariff's name",
}


def gated(path: str) -> bool:
    """Whether the gate (:mod:`mita.api.gate`) stands before the route: everything under /v1 but the open paths."""
    return path.startswith("/v1/") and path not in OPEN_PATHS


def codes_for(method: str, path: str, json_body: bool) -> list[str]:
    """Every code the operation can answer with, in the code table's order."""
    wanted = set(ROUTE_CODES.get(f"{method.upper()} {path}", ()))
    if gated(path):
        wanted |= set(EVERY_ROUTE)
        if json_body:
            wanted |= set(WITH_BODY)
        if method.upper() in BODY_METHODS:
            wanted |= set(WITH_MEDIA_TYPE)
    return [code for code in CODES if code in wanted]


def describe(status: int, codes: Iterable[str]) -> str:
    listed = "; ".join(f"`{code}` ({CODES[code].title})" for code in codes)
    return f"{HTTPStatus(status).phrase}. Codes: {listed}"


# ---------------------------------------------------------------------- the document


def document_refusals(spec: dict[str, Any]) -> None:
    """Every 4xx and 5xx answer of every operation: the problem schema, and the codes it can carry."""
    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            answers: dict[str, Any] = op.setdefault("responses", {})
            by_status: dict[int, list[str]] = {}
            json_body = "application/json" in op.get("requestBody", {}).get("content", {})
            for code in codes_for(method, path, json_body):
                by_status.setdefault(CODES[code].status, []).append(code)
            for status in [int(s) for s in answers if s[:1] in ("4", "5")]:
                by_status.setdefault(status, [c for c, a in CODES.items() if a.status == status])
            for status, codes in sorted(by_status.items()):
                answers[str(status)] = {
                    "description": describe(status, codes),
                    "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
                    "x-error-codes": codes,
                }
            op["responses"] = dict(sorted(answers.items()))
    schemas = spec.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's own 422 body, never sent here
        schemas.pop(unused, None)


def document_parameters(spec: dict[str, Any]) -> None:
    for operations in spec.get("paths", {}).values():
        for op in operations.values():
            for parameter in op.get("parameters", []):
                if "description" not in parameter and parameter["name"] in PARAMETERS:
                    parameter["description"] = PARAMETERS[parameter["name"]]


def document_examples(spec: dict[str, Any]) -> None:
    """Each request body's example, from its model (Swagger UI fills the form with it)."""
    schemas = spec.get("components", {}).get("schemas", {})
    for operations in spec.get("paths", {}).values():
        for op in operations.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            schema = media.get("schema", {})
            refs = [arm.get("$ref", "") for arm in schema.get("anyOf", [schema])]  # an optional body: a union
            examples = [e for ref in refs for e in schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples", [])]
            if examples:
                media["example"] = examples[0]


def install(app: FastAPI) -> None:
    """Wrap ``app.openapi``: the document FastAPI derives, completed once (then cached, as FastAPI does)."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default_openapi()
            # POST /v1/vends parses its own body: put its model where the $ref points
            spec.setdefault("components", {}).setdefault("schemas", {})["VendIn"] = m.VendIn.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            document_refusals(spec)
            document_parameters(spec)
            document_examples(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
