"""Customers: accounts, debt and free basic electricity eligibility."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Path

from mita.vend import limits, registry
from mita.vend.schema import customers

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


router = v1_router("customers")


# --- customers


@router.post("/customers", status_code=201, response_model=m.CustomerOut, responses=responses(409))
def create_customer(body: m.CustomerIn, caller: Who, svc: Svc) -> Any:
    return svc.registry.create_customer(caller, **body.model_dump())


@router.get("/customers", response_model=m.Page[m.CustomerOut])
def list_customers(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, customers, limit, after)


@router.get("/customers/{account}", response_model=m.CustomerOut, responses=responses(404))
def get_customer(
    account: Annotated[str, Path(max_length=limits.ACCOUNT, pattern=m.PRINTABLE)], caller: Who, svc: Svc
) -> Any:
    caller.require(*READERS)
    return registry.get_by(svc.engine, customers, customers.c.account, account, "customer")
