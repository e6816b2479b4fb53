"""Connected meters: a meter's communication endpoint, and the commands the head-end sends it.

Registering an endpoint changes nothing about the meter's keys, TIDs or history; removing it returns the meter to
keypad-only delivery. The LLS secret goes in and never comes out: answers, the audit and the problems say only
whether there is one. Commands are queued here and run by ``mita worker`` (the ``headend`` outbox channel); the
answer is 202 and the command's own URL, which a client polls until its status is final.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import Path, Query, Response
from fastapi.responses import JSONResponse

from mita.headend import commands, registry
from mita.vend.errors import VendError
from mita.vend.lifecycles import CommandStatus
from mita.vend.remote import TOKEN_KINDS

from .. import models as m
from ..deps import ID_MAX, READERS, DrnPath, IdempotencyKey, Limit, Svc, Who, v1_router
from ..problems import responses

log = logging.getLogger("mita.api")

router = v1_router("connected meters")

CommandId = Annotated[int, Path(ge=1, le=ID_MAX, description="the command's id")]
StatusFilter = Annotated[CommandStatus | None, Query(description="only commands in this status")]


def _no_connection(drn: str) -> VendError:
    return VendError("not_found", f"meter {drn} has no communication endpoint (keypad only)")


# --- the endpoint


@router.put("/meters/{drn}/connection", response_model=m.ConnectionOut, responses=responses(404))
def connect(drn: DrnPath, body: m.ConnectionIn, caller: Who, svc: Svc) -> Any:
    """Connect a meter, or change its endpoint (admin): where it answers, its management secret, how its token
    gateway takes tokens. Audited, without the secret; the meter's keys, TIDs and history are unchanged."""
    caller.require("admin")
    secret = None if body.secret is None else bytes.fromhex(body.secret.get_secret_value())
    return registry.register(
        svc.engine, caller, drn, host=body.host, port=body.port, secret=secret, at=svc.clock(),
        token_encoding=body.token_encoding.value, client=body.client, server=body.server,
        transport=body.transport.value,
    )  # fmt: skip


@router.get("/meters/{drn}/connection", response_model=m.ConnectionOut, responses=responses(404))
def get_connection(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """The meter's endpoint (admin, operator); 404 ``not_found`` when it is keypad-only."""
    caller.require(*READERS)
    found = registry.describe(svc.engine, drn)
    if found is None:
        raise _no_connection(drn)
    return found


@router.delete("/meters/{drn}/connection", status_code=204, response_class=Response, responses=responses(404))
def disconnect(drn: DrnPath, caller: Who, svc: Svc) -> Response:
    """Back to keypad-only delivery (admin): commands still queued fail ``not_connected`` when their turn comes;
    404 ``not_found`` if the meter was not connected."""
    caller.require("admin")
    if not registry.unregister(svc.engine, caller, drn, svc.clock()):
        raise _no_connection(drn)
    return Response(status_code=204)


# --- commands


@router.post(
    "/meters/{drn}/commands",
    status_code=202,
    response_model=None,
    responses={202: {"model": m.CommandOut, "description": "the command, queued"}, **responses(404, 409)},
)
def queue_command(drn: DrnPath, body: m.CommandIn, caller: Who, svc: Svc, key: IdempotencyKey = None) -> JSONResponse:
    """Queue a command for a connected meter (admin, operator); ``mita worker`` runs it. Poll its URL (the
    ``Location`` header) until its status is acknowledged, failed or expired.

    ``set_power_limit`` and ``set_tariff_rate`` are STS management tokens: the token is issued now (a TID, in the
    meter's history) and delivered remotely; with an ``Idempotency-Key`` a retry answers the same command and
    spends no second TID. A keypad-only meter is refused with 409 ``not_connected``.
    """
    params = body.model_dump(include={"value", "logs"}, exclude_none=True)
    if body.expires_in_s is not None and body.kind in TOKEN_KINDS:  # its token is sold now, and tried as a vend's
        raise VendError("invalid_request", f"{body.kind} is an STS token, tried for the delivery expiry like a vend's "
                        "tokens (MITA_DELIVERY_EXPIRY_HOURS): it takes no expires_in_s")  # fmt: skip
    expiry = svc.ctx.delivery_expiry if body.expires_in_s is None else dt.timedelta(seconds=body.expires_in_s)
    out = commands.queue(
        svc.engine, svc.engineering, caller, drn, body.kind, params, at=svc.clock(), expiry=expiry, key=key
    )
    shown = m.CommandOut.model_validate(out).model_dump(mode="json")
    return JSONResponse(shown, status_code=202, headers={"Location": f"/v1/commands/{out['id']}"})


@router.get("/meters/{drn}/commands", response_model=list[m.CommandOut], responses=responses(404))
def list_commands(drn: DrnPath, caller: Who, svc: Svc, limit: Limit = 50, status: StatusFilter = None) -> Any:
    """The meter's commands, newest first (admin, operator)."""
    caller.require(*READERS)
    return commands.for_meter(svc.engine, drn, limit=limit, status=None if status is None else status.value)


@router.get("/commands/{command_id}", response_model=m.CommandOut, responses=responses(404))
def get_command(command_id: CommandId, caller: Who, svc: Svc) -> Any:
    """One command, with what the meter answered (admin, operator)."""
    caller.require(*READERS)
    return commands.get(svc.engine, command_id)
