"""Vending keys over their life: import or generate, activate (KRN rotation), retire, destroy."""

from __future__ import annotations

import logging
from typing import Any

from mita.vend import keyring, registry

from .. import models as m
from ..deps import (
    READERS,
    KrnPath,
    SgcPath,
    Svc,
    Who,
    v1_router,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("vending keys")


# --- vending keys (admin; admin and operator read them, never their material)


@router.get("/supply-groups/{sgc}/keys", response_model=list[m.KeyStatusOut], responses=responses(404))
def list_vending_keys(sgc: SgcPath, caller: Who, svc: Svc) -> Any:
    """The supply group's keys, newest KRN first, with expiry, credit used and warnings (admin, operator)."""
    caller.require(*READERS)
    out = keyring.key_status(svc.engine, svc.clock(), sgc, svc.warn_days)
    if not out:
        registry.get_supply_group(svc.engine, sgc)  # an unknown group is a 404, not an empty list
    return out


@router.post(
    "/supply-groups/{sgc}/keys",
    status_code=201,
    response_model=m.VendingKeyCreated,
    responses=responses(404, 409, 503),
)
def add_vending_key(sgc: SgcPath, body: m.VendingKeyIn, caller: Who, svc: Svc) -> Any:
    """Import a vending key (``key``) or have the keystore generate one (admin); it waits as ``pending`` until
    activated. The key is sealed (or kept by the HSM) at once and never returned: only its KCV."""
    key = body.key.get_secret_value() if body.key is not None else None
    return keyring.add_key(
        svc.engine, caller, sgc=sgc, krn=body.krn, dkga=body.dkga, key_hex=key, kcv=body.kcv,
        keystore_name=body.keystore, ken=body.ken, issued_until=body.issued_until, credit_limit=body.credit_limit,
        at=svc.clock(),
    )  # fmt: skip


@router.post(
    "/supply-groups/{sgc}/keys/{krn}/activate",
    response_model=m.KeyStatusOut,
    responses=responses(404, 409),
)
def activate_vending_key(sgc: SgcPath, krn: KrnPath, caller: Who, svc: Svc, body: m.ActivateKeyIn | None = None) -> Any:
    """KRN rotation (admin): the supply group vends under this key from now on, optionally with a new base
    date, EA or key type; the previous key is retired and its meters need a key change."""
    at = svc.clock()
    changes = body.model_dump(exclude_none=True) if body is not None else {}
    keyring.activate_key(svc.engine, caller, sgc=sgc, krn=krn, at=at, **changes)
    return keyring.key_entry(svc.engine, at, sgc, krn, svc.warn_days)


@router.post(
    "/supply-groups/{sgc}/keys/{krn}/retire",
    response_model=m.KeyStatusOut,
    responses=responses(404, 409),
)
def retire_vending_key(sgc: SgcPath, krn: KrnPath, caller: Who, svc: Svc, body: m.RetireKeyIn | None = None) -> Any:
    """Stop a key issuing credit (admin); ``destroy`` also removes its material, after which no meter can be
    moved off it. Answers the key's status."""
    at = svc.clock()
    keyring.retire_key(svc.engine, caller, sgc=sgc, krn=krn, at=at, destroy=body is not None and body.destroy)
    return keyring.key_entry(svc.engine, at, sgc, krn, svc.warn_days)


@router.get(
    "/supply-groups/{sgc}/key-history",
    response_model=list[m.KeyHistoryOut],
    response_model_exclude_unset=True,
    responses=responses(404),
)
def vending_key_history(sgc: SgcPath, caller: Who, svc: Svc) -> Any:
    """What was done to the supply group's keys, oldest first (admin, operator)."""
    caller.require(*READERS)
    return keyring.key_history(svc.engine, sgc)
