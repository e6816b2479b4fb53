"""The HTTP routes, one module per resource; ``ROUTERS`` is what the application includes, in order."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    alarms,
    api_keys,
    audit,
    campaigns,
    customers,
    headend,
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
    headend.router,
    alarms.router,
    vends.router,
    vending_keys.router,
    key_changes.router,
    campaigns.router,
    audit.router,
    api_keys.router,
    imports.router,
    reports.router,
)
