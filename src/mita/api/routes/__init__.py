"""The HTTP routes, one module per resource; ``ROUTERS`` is what the application includes, in order."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    audit,
    campaigns,
    customers,
    health,
    key_changes,
    meters,
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
)
