"""Liveness and readiness: no API key needed."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import Engine, text

from mita.vend.database import check_ready
from mita.vend.errors import VendError

from .. import models as m
from ..deps import (
    Svc,
)
from ..problems import problem, refusal, responses

log = logging.getLogger("mita.api")


router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", response_model=m.Health, responses=responses(503))
def get_health(svc: Svc) -> Any:
    """Liveness and database reachability; no API key needed."""
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception:
        return problem(503, "database_unavailable", "the database is not reachable")
    return {"status": "ok", "database": svc.engine.dialect.name}


probes = APIRouter(tags=["health"])  # outside /v1: for load balancers and orchestrators


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
