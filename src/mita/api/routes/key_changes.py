"""Key changes of one meter: request, cancel, history, and a vend reported accepted."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse

from .. import models as m
from ..deps import (
    DrnPath,
    Svc,
    VendId,
    Who,
    v1_router,
    vend_json,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("key changes")


# --- key changes of one meter


@router.post(
    "/meters/{drn}/key-change",
    status_code=201,
    response_model=None,
    responses={201: {"model": m.VendOut, "description": "the key change tokens"}, **responses(404, 409)},
)
def request_key_change(drn: DrnPath, body: m.KeyChangeIn, caller: Who, svc: Svc) -> JSONResponse:
    """Key change tokens for one meter (admin, operator): any of SGC, KRN, KT, TI, EA, base date and KEN. The new
    configuration stays pending until the change is confirmed."""
    return vend_json(svc.request_key_change(caller, drn, body.model_dump(exclude_none=True)), 201)


@router.delete("/meters/{drn}/key-change", responses=responses(404, 409))
def cancel_key_change(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """Forget the meter's pending key change (admin, operator): only for tokens that were never entered."""
    return svc.cancel_key_change(caller, drn)


@router.get(
    "/meters/{drn}/key-changes",
    response_model=list[m.KeyChangeEntryOut],
    responses=responses(404),
)
def list_key_changes(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """Every key change the meter was sent, oldest first, with how far it got (admin, operator)."""
    return svc.key_change_history(caller, drn)


@router.post(
    "/vends/{vend_id}/accepted",
    response_model=m.AcceptedOut,
    response_model_exclude_unset=True,
    responses=responses(404, 409),
)
def vend_accepted(vend_id: VendId, caller: Who, svc: Svc) -> Any:
    """The customer reports the vend's tokens accepted: a key change it carried is confirmed (admin, operator)."""
    return svc.vend_accepted(caller, vend_id)
