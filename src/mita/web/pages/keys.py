"""Supply groups and their vending keys: key check values, states, expiry and credit used; never a key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita.vend import keyring, registry
from mita.vend.schema import supply_groups

from ..console import Signed, render, runtime

router = APIRouter()


@router.get("/keys")
def keys(request: Request, session: Signed) -> Response:
    rt = runtime(request)
    session.caller.require("admin", "operator")
    groups = registry.page(rt.engine, supply_groups, 200)["items"]
    status = keyring.key_status(rt.engine, rt.clock(), None, rt.services.warn_days)
    by_group: dict[str, list[dict[str, object]]] = {}
    for entry in status:
        by_group.setdefault(str(entry["sgc"]), []).append(entry)
    return render(request, "keys.html", title="Supply groups and keys", groups=groups, keys=by_group)
