"""Vendors (sales channels) and what they owe."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Path

from mita.vend import registry
from mita.vend.schema import vendors

from .. import models as m
from ..deps import (
    ID_MAX,
    READERS,
    After,
    Limit,
    Svc,
    Who,
    v1_router,
)
from ..problems import problem, responses

log = logging.getLogger("mita.api")


router = v1_router("vendors")


# --- vendors


@router.post("/vendors", status_code=201, response_model=m.VendorOut, responses=responses(409))
def create_vendor(body: m.VendorIn, caller: Who, svc: Svc) -> Any:
    """A vendor (admin). Its API keys are made with ``mita admin create-key``."""
    return svc.registry.create_vendor(caller, body.name, body.credit_limit)


@router.get("/vendors", response_model=m.Page[m.VendorOut])
def list_vendors(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    caller.require(*READERS)
    return registry.page(svc.engine, vendors, limit, after)


@router.get("/vendors/{vendor_id}", response_model=m.VendorOut, responses=responses(404))
def get_vendor(vendor_id: Annotated[int, Path(ge=1, le=ID_MAX)], caller: Who, svc: Svc) -> Any:
    """A vendor; a vendor's key sees its own vendor only (its balance)."""
    if caller.role == "vendor" and caller.vendor_id != vendor_id:
        return problem(404, "not_found", f"no vendor {vendor_id}")
    return registry.get_vendor(svc.engine, vendor_id)


@router.put("/vendors/{vendor_id}/webhook", response_model=m.VendorWebhookOut, responses=responses(400, 404))
def set_vendor_webhook(
    vendor_id: Annotated[int, Path(ge=1, le=ID_MAX)], body: m.VendorWebhookIn, caller: Who, svc: Svc
) -> Any:
    """Make a vendor a partner (admin): its vends (``vend.created``) and their deliveries (``vend.delivered``) are
    posted, signed, to the webhook named (one of ``MITA_WEBHOOK_URLS``); null stops them."""
    from mita.channels import partners
    from mita.settings import Settings

    known = partners.configured(Settings())
    return partners.set_webhook(svc.engine, caller, vendor_id, body.webhook, known, svc.clock())
