"""The append-only audit log."""

from __future__ import annotations

import logging
from typing import Any

from mita.vend import registry
from mita.vend.schema import audit

from .. import models as m
from ..deps import (
    READERS,
    After,
    Limit,
    Svc,
    Who,
    v1_router,
)

log = logging.getLogger("mita.api")


router = v1_router("audit")


# --- audit


@router.get("/audit", response_model=m.Page[m.AuditOut])
def list_audit(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    """The append-only audit log, oldest first (admin, operator)."""
    caller.require(*READERS)
    return registry.page(svc.engine, audit, limit, after)
