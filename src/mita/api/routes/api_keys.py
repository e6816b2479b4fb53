"""API keys: list them and revoke one (admin). Keys are made with ``mita admin create-key``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from mita.vend import apikeys

from .. import listings as lm
from ..deps import ID_MAX, After, Limit, Svc, Who, v1_router
from ..problems import responses

router = v1_router("api keys")

KeyId = Annotated[int, Path(ge=1, le=ID_MAX, description="the API key's id")]


@router.get("/api-keys", response_model=lm.ApiKeyPage)
def list_api_keys(caller: Who, svc: Svc, limit: Limit = 50, after: After = None) -> Any:
    """Every API key, revoked ones included, in id order (admin): never a key or its hash, only its last four
    characters."""
    return apikeys.list_api_keys(svc.engine, caller, limit, after)


@router.post("/api-keys/{key_id}/revoke", response_model=lm.RevokedKeyOut, responses=responses(404))
def revoke_api_key(key_id: KeyId, caller: Who, svc: Svc) -> Any:
    """Revoke a key (admin), audited. It stops working at once on this server process and within 5 seconds on
    the others. Revoking it again changes nothing (``already_revoked``). A key may revoke itself: the answer says
    so (``revoked_self``), and every later request with it is a 401."""
    return svc.registry.revoke_api_key(caller, key_id)
