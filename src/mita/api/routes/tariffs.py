"""Tariffs and their dated versions."""

from __future__ import annotations

import logging
from typing import Any

from mita.vend import registry
from mita.vend.schema import tariffs

from .. import models as m
from ..deps import (
    READERS,
    After,
    Limit,
    Svc,
    TariffName,
    Who,
    v1_router,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("tariffs")


# --- tariffs


@router.post(
    "/tariffs",
    status_code=201,
    response_model=m.TariffOut,
    response_model_exclude_unset=True,
    responses=responses(409),
)
def create_tariff(body: m.TariffIn, caller: Who, svc: Svc) -> Any:
    return svc.registry.create_tariff(
        caller,
        name=body.name,
        currency=body.currency,
        spec=body.spec.model_dump(),
        effective_from=body.effective_from or svc.clock(),
        carry_leftover=body.carry_leftover,
    )


@router.get("/tariffs", response_model=m.Page[m.TariffOut], response_model_exclude_unset=True)
def list_tariffs(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, tariffs, limit, after)


@router.get(
    "/tariffs/{name}",
    response_model=m.TariffOut,
    response_model_exclude_unset=True,
    responses=responses(404),
)
def get_tariff(name: TariffName, caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    return registry.get_tariff(svc.engine, name)


@router.post(
    "/tariffs/{name}/versions",
    status_code=201,
    response_model=m.TariffOut,
    response_model_exclude_unset=True,
    responses=responses(404, 409),
)
def add_tariff_version(name: TariffName, body: m.TariffVersionIn, caller: Who, svc: Svc) -> Any:
    """A new version of the tariff's prices, in force from ``effective_from`` (admin)."""
    return svc.registry.add_tariff_version(caller, name, body.spec.model_dump(), body.effective_from)
