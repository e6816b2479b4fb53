"""Liveness, readiness and metrics: no API key needed (``/metrics`` may ask for one: ``MITA_METRICS_PUBLIC``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import Engine, text

from mita.vend.database import check_ready
from mita.vend.errors import VendError

from .. import models as m
from ..deps import (
    Svc,
)
from ..metrics import CONTENT_TYPE, Metrics
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


@probes.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition format", "content": {CONTENT_TYPE: {}}},
        **responses(401, 403),
    },
)
def metrics(request: Request) -> Response:
    """Counters of every worker (requests by route and status, vends by kind and outcome with their latency,
    refusals by code) and gauges read from the database now (outbox depth, vending keys, campaigns), in the
    Prometheus text format. Needs an admin or operator key only if ``MITA_METRICS_PUBLIC`` is false."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE)
