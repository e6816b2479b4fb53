"""What the vending service leaves for the head-end: a command and its outbox row, in the caller's transaction.

A vend for a connected meter (one with a row in ``meter_endpoints``) queues a ``deliver_tokens`` command in the
vend's own transaction, so the tokens are either sold and on their way or neither; the head-end (``mita worker``,
channel ``headend``) delivers them. The vending service never imports the head-end: this module writes the two
rows, and :mod:`mita.headend` reads them.

A vend's answers say how its delivery went (``delivery``: :func:`delivery`), from the command's row joined where
the vend is read (:data:`DELIVERY_COLUMNS`), so that showing it costs no query of its own; the answer to the vend
itself knows the command it has just queued (:func:`queued`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, insert, select

from .lifecycles import CommandKind, CommandStatus, OutboxStatus
from .schema import meter_commands, meter_endpoints, outbox
from .walltime import with_offset

#: The outbox channel of head-end commands.
CHANNEL = "headend"
#: The command kinds that deliver tokens a vend made (the last two: an operator's management token).
TOKEN_KINDS = frozenset({CommandKind.DELIVER_TOKENS, CommandKind.SET_POWER_LIMIT, CommandKind.SET_TARIFF_RATE})


def connected(conn: Connection, meter_id: int) -> bool:
    """Whether the meter has a communication endpoint (else its tokens go on the receipt only)."""
    found = conn.execute(select(meter_endpoints.c.meter_id).where(meter_endpoints.c.meter_id == meter_id)).first()
    return found is not None


def dedupe_key(command_id: int) -> str:
    return f"command:{command_id}"


def queue_command(
    conn: Connection,
    meter_id: int,
    drn: str,
    kind: CommandKind,
    params: dict[str, Any],
    *,
    actor: str,
    at: dt.datetime,
    expires_at: dt.datetime,
    vend_id: str | None = None,
) -> int:
    """Write a queued command and the outbox row that carries it; the command's id."""
    command_id = int(
        conn.execute(
            insert(meter_commands)
            .values(
                meter_id=meter_id,
                kind=kind.value,
                params=params,
                status=CommandStatus.QUEUED.value,
                vend_id=vend_id,
                actor=actor,
                attempts=0,
                created_at=at,
                expires_at=expires_at,
            )
            .returning(meter_commands.c.id)
        ).scalar_one()
    )
    conn.execute(
        insert(outbox).values(
            vend_id=vend_id,
            channel=CHANNEL,
            recipient=drn,
            dedupe_key=dedupe_key(command_id),
            payload={"command": command_id},
            status=OutboxStatus.PENDING.value,
            attempts=0,
            next_attempt_at=at,
            created_at=at,
        )
    )
    return command_id


def queue_delivery(
    conn: Connection,
    meter_id: int,
    drn: str,
    vend_id: str,
    digits: list[str],
    *,
    actor: str,
    at: dt.datetime,
    expiry: dt.timedelta,
    purpose: str,
    is_connected: bool | None = None,
) -> int | None:
    """Queue a vend's tokens for a connected meter, in entry order (a key change set first, as the vend made
    them); the command's id, None for a keypad meter. ``purpose`` says what the tokens are for: a purchase, or an
    engineering kind (the command's kind is then that kind where it is one, ``set_power_limit``,
    ``set_tariff_rate``). ``is_connected``: whether the meter has an endpoint, when the caller has read it in this
    transaction already (a purchase's one read of its meter does), else it is looked up here."""
    if not (connected(conn, meter_id) if is_connected is None else is_connected):
        return None
    kind = CommandKind(purpose) if purpose in TOKEN_KINDS else CommandKind.DELIVER_TOKENS
    params = {"tokens": digits, "purpose": purpose}
    return queue_command(conn, meter_id, drn, kind, params, actor=actor, at=at, expires_at=at + expiry, vend_id=vend_id)


# ---------------------------------------------------------------------- what a vend's answers show of it

#: The command's columns a vend's answer shows: outer-joined (``meter_commands.vend_id`` is unique) where the vend
#: is read, named apart from the vend's own ``status`` and ``id``.
DELIVERY_COLUMNS = (
    meter_commands.c.id.label("delivery_command"),
    meter_commands.c.status.label("delivery_status"),
    meter_commands.c.finished_at.label("delivery_finished_at"),
    meter_commands.c.error.label("delivery_error"),
)


def error_code(error: str | None) -> str | None:
    """The stable code of a command's last failure: the head-end writes ``code: short reason``."""
    return None if error is None else error.split(":", 1)[0].strip()


def delivery(
    command_id: int | None, status: str, finished_at: dt.datetime | None, error: str | None
) -> dict[str, Any] | None:
    """A vend's ``delivery``: None for a vend with no command (a keypad meter's: the receipt is the delivery),
    else the command, where it is, when it ended and why it failed (or why the last try did not reach the meter,
    while it waits to be tried again)."""
    if command_id is None:
        return None
    return {
        "command": int(command_id),
        "status": status,
        "finished_at": None if finished_at is None else with_offset(finished_at),
        "error": error_code(error),
    }


def delivered(row: Any) -> dict[str, Any] | None:
    """The ``delivery`` of a vend read with :data:`DELIVERY_COLUMNS`."""
    return delivery(row.delivery_command, row.delivery_status, row.delivery_finished_at, row.delivery_error)


def queued(command_id: int | None) -> dict[str, Any] | None:
    """The ``delivery`` of a vend whose command was queued in its own transaction (None: no command)."""
    return delivery(command_id, CommandStatus.QUEUED.value, None, None)
