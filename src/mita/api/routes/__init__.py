"""The HTTP routes, one module per resource; ``ROUTERS`` is what the application includes, in order."""

from __future__ import annotations

from fastapi import APIRouter

from ..openapi import ROUTE_CODES
from . import (
    api_keys,
    audit,
    campaigns,
    customers,
    health,
    imports,
    key_changes,
    meters,
    reports,
    supply_groups,
    tariffs,
    vending_keys,
    vendors,
    vends,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    health.probes,
    supply_groups.router,
    vendors.router,
    customers.router,
    tariffs.router,
    meters.router,
    vends.router,
    vending_keys.router,
    key_changes.router,
    campaigns.router,
    audit.router,
    api_keys.router,
    imports.router,
    reports.router,
)

#: What the staff's routes (lists, API keys, imports, reports) refuse with, beyond what every route can: entries
#: of :data:`mita.api.openapi.ROUTE_CODES`, which documents each route's codes (and the contract tests hold the
#: answers to them). Registered here, with the routes, until that table lists them itself.
STAFF_ROUTE_CODES: dict[str, tuple[str, ...]] = {
    "GET /v1/vends": ("invalid_cursor", "invalid_kind", "invalid_status", "invalid_period", "check_digit_error",
                      "format_error"),
    "GET /v1/meters/{drn}/vends": ("not_found", "invalid_cursor", "check_digit_error", "format_error"),
    "GET /v1/campaigns": ("invalid_status",),
    "POST /v1/api-keys/{key_id}/revoke": ("not_found",),
    "POST /v1/imports/customers": ("import_refused", "invalid_csv", "conflict"),
    "POST /v1/imports/meters": ("import_refused", "invalid_csv", "conflict"),
    "GET /v1/reports/sales": ("invalid_period",),
}  # fmt: skip
for _route, _codes in STAFF_ROUTE_CODES.items():
    ROUTE_CODES.setdefault(_route, _codes)
