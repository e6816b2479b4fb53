"""Supply groups: a vending key goes in sealed and never comes out, only its key check value."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Path

from mita.vend import registry
from mita.vend.schema import supply_groups

from .. import models as m
from ..deps import (
    READERS,
    After,
    Limit,
    Svc,
    Who,
    v1_router,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("supply groups")


# --- supply groups


@router.post(
    "/supply-groups",
    status_code=201,
    response_model=m.SupplyGroupOut,
    response_model_exclude_unset=True,
    responses=responses(409),
)
def create_supply_group(body: m.SupplyGroupIn, caller: Who, svc: Svc) -> Any:
    """A supply group and its vending key (admin). The key is sealed at once and never returned: only its KCV."""
    values = body.model_dump(exclude={"vending_key"})
    return svc.registry.create_supply_group(caller, vending_key=body.vending_key.get_secret_value(), **values)


@router.get("/supply-groups", response_model=m.Page[m.SupplyGroupOut], response_model_exclude_unset=True)
def list_supply_groups(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, supply_groups, limit, after)


@router.get(
    "/supply-groups/{sgc}",
    response_model=m.SupplyGroupOut,
    response_model_exclude_unset=True,
    responses=responses(404),
)
def get_supply_group(sgc: Annotated[str, Path(max_length=6, pattern=m.PRINTABLE)], caller: Who, svc: Svc) -> Any:
    caller.require(*READERS)
    return registry.get_supply_group(svc.engine, sgc)
