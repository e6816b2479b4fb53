"""The HTTP routes, one module per resource; ``ROUTERS`` is what the application includes, in order."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    alarms,
    api_keys,
    audit,
    campaigns,
    customers,
    doctor,
    headend,
    health,
    imports,
    key_changes,
    meters,
    mpesa_hooks,
    payments,
    pos,
    reports,
    sms_hooks,
    supply_groups,
    tariffs,
    ussd,
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
    payments.router,
    pos.router,
    mpesa_hooks.router,
    sms_hooks.router,
    ussd.router,
    vending_keys.router,
    key_changes.router,
    doctor.router,
    campaigns.router,
    audit.router,
    api_keys.router,
    imports.router,
    reports.router,
)
