"""The console's pages, one module per part of the utility's work; ``ROUTERS`` lists them."""

from __future__ import annotations

from fastapi import APIRouter

from . import auth, dashboard

ROUTERS: tuple[APIRouter, ...] = (auth.router, dashboard.router)
