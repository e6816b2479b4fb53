"""Commands to connected meters: queue one, list a meter's, read one.

A command is a row of ``meter_commands`` with a lifecycle (``mita.vend.lifecycles.COMMAND``: queued -> sent ->
acknowledged | failed | expired; sent -> queued again when the meter could not be reached) and one outbox row that
carries its delivery. ``set_power_limit`` and ``set_tariff_rate`` are STS management tokens (the ones keypad meters
take too): queuing one issues the token as the vending service's engineering job does (a TID, audited), and that
job queues its delivery; every other kind is queued here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import Engine, select

from mita import sts
from mita.vend.audit import write_audit
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.lifecycles import CommandKind
from mita.vend.remote import TOKEN_KINDS, connected, queue_command
from mita.vend.schema import meter_commands, meters

#: Which event logs a ``read_events`` command may name (the meter's IC 7 objects, :mod:`.operations`).
LOGS = ("standard", "fraud", "disconnector", "token")
#: Kinds an operator queues: every kind but a vend's own token delivery.
OPERATOR_KINDS = tuple(k for k in CommandKind if k is not CommandKind.DELIVER_TOKENS)
#: Longest a command may wait for its meter (the default is the vend's delivery expiry).
MAX_EXPIRY = dt.timedelta(days=30)


class Engineering(Protocol):
    """The vending service's engineering job (``VendingService.engineering``): issues a management token."""

    def __call__(
        self, caller: Caller, drn: str, kind: str, value: int | None = None, key: str | None = None
    ) -> Any: ...


def _params(kind: CommandKind, body: dict[str, Any]) -> dict[str, Any]:
    """The parameters a kind takes, checked; anything else is refused, not ignored."""
    allowed = {
        CommandKind.SET_POWER_LIMIT: {"value"},
        CommandKind.SET_TARIFF_RATE: {"value"},
        CommandKind.READ_EVENTS: {"logs"},
    }.get(kind, set())
    extra = set(body) - allowed
    if extra:
        raise VendError("invalid_request", f"{kind.value} takes no {', '.join(sorted(extra))}")
    if kind is CommandKind.READ_EVENTS:
        logs = body.get("logs", list(LOGS))
        if not isinstance(logs, list) or not logs or any(x not in LOGS for x in logs):
            raise VendError("invalid_request", f"logs is a list of {', '.join(LOGS)}")
        return {"logs": list(dict.fromkeys(logs))}
    if kind in TOKEN_KINDS:
        value = body.get("value")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise VendError("invalid_request", f"{kind.value} needs a value of 0..65535")
        return {"value": value}
    return {}


def queue(
    engine: Engine,
    engineering: Engineering,
    caller: Caller,
    drn: str,
    kind: str,
    params: dict[str, Any],
    *,
    at: dt.datetime,
    expiry: dt.timedelta,
    key: str | None = None,
) -> dict[str, Any]:
    """Queue a command for a connected meter; the command as :func:`get` shows it. ``key``: an idempotency key
    (for the management tokens, whose retry must not spend a second TID)."""
    caller.require("admin", "operator")
    if kind not in {k.value for k in OPERATOR_KINDS}:
        raise VendError("invalid_kind", f"kind must be one of {', '.join(OPERATOR_KINDS)}")
    if not dt.timedelta(seconds=1) <= expiry <= MAX_EXPIRY:
        raise VendError("invalid_request", "a command expires 1 s to 30 days after it is queued")
    what = CommandKind(kind)
    checked = _params(what, params)
    number = sts.MeterNumber.parse(drn).drn
    with engine.connect() as conn:
        meter_id = conn.execute(select(meters.c.id).where(meters.c.drn == number)).scalar()
        if meter_id is None:
            raise VendError("not_found", f"no meter {number}")
        if not connected(conn, meter_id):
            raise VendError("not_connected", f"meter {number} has no communication endpoint (keypad only)")
    if what in TOKEN_KINDS:
        issued = engineering(caller, number, what.value, checked["value"], key)
        vend_id = issued.body["id"]
        with engine.connect() as conn:
            found = conn.execute(select(meter_commands.c.id).where(meter_commands.c.vend_id == vend_id)).scalar()
        if found is None:  # the endpoint was removed between the check and the token: it is on the answer only
            raise VendError("not_connected", f"meter {number} was disconnected; token in vend {vend_id}")
        return get(engine, int(found))
    with engine.begin() as conn:
        command_id = queue_command(
            conn, int(meter_id), number, what, checked, actor=caller.name, at=at, expires_at=at + expiry
        )
        write_audit(conn, caller, at, "command_queued", "meter", number, command=command_id, kind=kind, **checked)
    return get(engine, command_id)


def _shown(row: Any) -> dict[str, Any]:
    params = dict(row.params or {})
    return {
        "id": row.id,
        "meter": row.drn,
        "kind": row.kind,
        "params": params,
        "status": row.status,
        "vend_id": row.vend_id,
        "actor": row.actor,
        "attempts": row.attempts,
        "result": row.result,
        "error": row.error,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "sent_at": row.sent_at,
        "finished_at": row.finished_at,
    }


_SELECT = select(meter_commands, meters.c.drn).join(meters, meters.c.id == meter_commands.c.meter_id)


def get(engine: Engine, command_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(_SELECT.where(meter_commands.c.id == command_id)).first()
    if row is None:
        raise VendError("not_found", f"no command {command_id}")
    return _shown(row)


def for_meter(engine: Engine, drn: str, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
    """A meter's commands, newest first."""
    number = sts.MeterNumber.parse(drn).drn
    query = _SELECT.where(meters.c.drn == number)
    if status is not None:
        query = query.where(meter_commands.c.status == status)
    query = query.order_by(meter_commands.c.created_at.desc(), meter_commands.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        if conn.execute(select(meters.c.id).where(meters.c.drn == number)).first() is None:
            raise VendError("not_found", f"no meter {number}")
        return [_shown(r) for r in conn.execute(query)]


def for_vend(engine: Engine, vend_id: str) -> dict[str, Any] | None:
    """The command carrying a vend's tokens (None: the meter was keypad-only when it was sold)."""
    with engine.connect() as conn:
        row = conn.execute(_SELECT.where(meter_commands.c.vend_id == vend_id)).first()
    return None if row is None else _shown(row)
