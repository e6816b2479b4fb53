"""The console's pages, one module per part of the utility's work; ``ROUTERS`` lists them."""

from __future__ import annotations

from fastapi import APIRouter

from . import alarms, audit, auth, campaigns, dashboard, doctor, engineering, keys, meters, vends

ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    dashboard.router,
    meters.router,
    vends.router,
    engineering.router,
    doctor.router,
    keys.router,
    campaigns.router,
    alarms.router,
    audit.router,
)
