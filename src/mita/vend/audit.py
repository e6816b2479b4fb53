"""The append-only audit log's one writer (the vend's own entry goes with its other writes, in hotpath)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import Connection, insert

from .schema import audit


class Actor(Protocol):
    @property
    def name(self) -> str: ...


def write_audit(
    conn: Connection, caller: Actor, at: dt.datetime, action: str, entity: str, entity_id: object, **detail: Any
) -> None:
    """One entry: who did what to which thing, and the details (never key material)."""
    conn.execute(
        insert(audit).values(
            at=at, actor=caller.name, action=action, entity=entity, entity_id=str(entity_id), detail=detail
        )
    )
