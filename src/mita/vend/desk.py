"""The base of the vending service's jobs (purchases, receipts, engineering tokens, key changes): their shared
context, and what every one of them does to find a meter, its key and its TIDs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select

from mita import sts
from mita.sts import recipes
from mita.sts.recipes import KeyConfig

from . import limits, pricing
from .answers import (
    dialect_insert,
    last_tid,
    random_rnd,
    token_row,
)
from .audit import write_audit
from .callers import Caller, local_now
from .errors import VendError
from .keyring import WARN_DAYS, KeyRing
from .schema import (
    idempotency,
    meters,
    supply_groups,
    tokens,
    vends,
)


@dataclass(frozen=True)
class Issued:
    """Tokens handed out: the answer, and whether it replays one given before for the same Idempotency-Key."""

    body: dict[str, Any]
    replayed: bool = False


@dataclass
class VendContext:
    """What every job of the vending service shares: the database, the clock and the random source, the policy
    (reversal window, warning days, how long a remote delivery is tried), and the per-process caches. A vending
    key's material never changes once stored (unique per group and KRN), and a tariff version never changes once
    effective: both are safe to keep for the process's life."""

    engine: Engine
    clock: Callable[[], dt.datetime] = local_now
    rnd: Callable[[], int] = random_rnd
    reversal_window: dt.timedelta = dt.timedelta(hours=24)
    warn_days: int = WARN_DAYS
    delivery_expiry: dt.timedelta = dt.timedelta(hours=24)  # how long a connected meter's tokens are tried
    keyring: KeyRing = field(default_factory=KeyRing)
    tariffs: dict[int, pricing.Tariff] = field(default_factory=dict)

    @property
    def for_update(self) -> bool:
        return self.engine.dialect.name != "sqlite"  # SQLite's BEGIN IMMEDIATE already serialises


class Desk:
    """The base of every job: the shared context, and how to find a meter, its key configuration, its decoder
    key, its next TIDs, an idempotency claim, and the audit log."""

    def __init__(self, ctx: VendContext) -> None:
        self.ctx = ctx

    @property
    def engine(self) -> Engine:
        return self.ctx.engine

    @property
    def keyring(self) -> KeyRing:
        return self.ctx.keyring

    def clock(self) -> dt.datetime:
        return self.ctx.clock()

    def rnd(self) -> int:
        return self.ctx.rnd()

    @property
    def _for_update(self) -> bool:
        return self.ctx.for_update

    def _meter(self, conn: Connection, drn: str, lock: bool = False) -> Row[Any]:
        number = sts.MeterNumber.parse(drn)  # refuses a wrong check digit before any lookup
        q = select(meters).where(meters.c.drn == number.drn)
        if lock and self._for_update:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise VendError("not_found", f"no meter {number.drn}")
        return row

    def _pending_meter(self, conn: Connection, drn: str) -> Row[Any]:
        """The meter's row, locked, for confirming or cancelling the key change it must have pending."""
        meter = self._meter(conn, drn, lock=True)
        if not meter.pending_key:
            raise VendError("no_pending_key", f"meter {meter.drn} has no key change pending")
        return meter

    def _group(self, conn: Connection, group_id: int) -> Row[Any]:
        row = conn.execute(select(supply_groups).where(supply_groups.c.id == group_id)).first()
        assert row is not None  # a foreign key guarantees it
        return row

    @staticmethod
    def current_config(meter: Any, group: Any) -> KeyConfig:
        """The key configuration the meter has now (confirmed)."""
        return KeyConfig(group.sgc, meter.krn, meter.kt, meter.ti, meter.ea, meter.base_date, meter.ken)

    @classmethod
    def meter_config(cls, meter: Any, group: Any) -> KeyConfig:
        """The configuration tokens are made under: the pending one once its key change was issued."""
        if meter.pending_key:
            return KeyConfig.from_mapping(meter.pending_key)
        return cls.current_config(meter, group)

    @staticmethod
    def group_config(meter: Any, group: Any) -> KeyConfig:
        """Where the supply group's key rotation puts the meter: its KRN, base date and KEN.

        The meter keeps its own key type, TI and algorithm: moving those (an EA07 → EA11 migration,
        say) is a campaign's or an operator's explicit decision, never a side effect of a purchase.
        """
        return KeyConfig(group.sgc, group.krn, meter.kt, meter.ti, meter.ea, group.base_date, group.ken)

    def _decoder_key(self, conn: Connection, meter: Any, cfg: KeyConfig, fresh: bool = True) -> int:
        return self.keyring.decoder_key(conn, cfg, meter.drn, meter.iin, fresh)

    def _tids(self, cfg: KeyConfig, count: int, at: dt.datetime, after: int) -> list[int]:
        """``count`` TIDs for the meter, increasing, never reused, within the key's life."""
        try:
            first = max(sts.tid_from_datetime(at, cfg.base_date), after + 1)
        except sts.TidOutOfRangeError:
            raise VendError(
                "key_change_required", f"the meter's base date {cfg.base_date} has rolled over: change its key"
            ) from None
        out = list(range(first, first + count))
        if out and out[-1] > sts.tid.TID_MAX:
            raise VendError("key_change_required", "the meter's TIDs are exhausted on this base date")
        if cfg.kt != 0 and out and out[-1] >> 16 > cfg.ken:
            raise VendError("key_change_required", f"the meter's key expires (KEN {cfg.ken}) before this TID")
        return out

    @staticmethod
    def _tid_floor(conn: Connection, meter: Any, cfg: KeyConfig) -> int:
        """The last TID ever issued to the meter on ``cfg``'s base date: the next must be above it.

        On the meter's own base date its row keeps the count (with the pending key's, for tokens made
        under a change not yet confirmed; a cancel folds that into the row). On another base date (a
        roll-over under way) the tokens table is asked, as an earlier change to that base date may have
        been cancelled after its tokens were sold: a TID once used is never used again.
        """
        last = last_tid(meter, cfg)
        if cfg.base_date != meter.base_date:
            issued = conn.execute(
                select(func.max(tokens.c.tid)).where(tokens.c.meter_id == meter.id, tokens.c.base_date == cfg.base_date)
            ).scalar()
            last = max(last, -1 if issued is None else int(issued))
        return last

    def _audit(
        self, conn: Connection, caller: Caller, action: str, entity: str, entity_id: object, **detail: Any
    ) -> None:
        write_audit(conn, caller, self.clock(), action, entity, entity_id, **detail)

    def _answered(self, conn: Connection, caller: Caller, key: str, digest: str) -> Issued:
        """The stored answer of a request whose key was claimed before (waiting if it was in flight)."""
        row = conn.execute(
            select(idempotency).where(idempotency.c.api_key_id == caller.api_key_id, idempotency.c.key == key)
        ).first()
        if row is None:  # the other claimer rolled back between our two statements
            raise VendError("retry", "the first request with this key did not complete; retry with the same key")
        if row.request_hash != digest:
            raise VendError("idempotency_conflict", "this Idempotency-Key was used with a different request")
        if row.status_code == 0:
            raise VendError("in_progress", "this request is still being processed; retry with the same key")
        status = conn.execute(select(vends.c.status).where(vends.c.id == row.vend_id)).scalar()
        if status == "reversed":
            raise VendError("reversed", f"vend {row.vend_id} was reversed: its tokens are not handed out again")
        return Issued(row.response, replayed=True)

    @staticmethod
    def _insert_tokens(
        conn: Connection, vend_id: str, meter_id: int, base_date: int, at: dt.datetime, made: list[dict[str, Any]]
    ) -> None:
        rows = [
            {**t, "seq": i, "vend_id": vend_id, "meter_id": meter_id, "base_date": base_date, "created_at": at}
            for i, t in enumerate(made)
        ]
        conn.execute(insert(tokens), rows)

    def _key_change_tokens(self, conn: Connection, meter: Any, old: KeyConfig, new: KeyConfig) -> list[dict[str, Any]]:
        """The set that moves a meter from ``old`` to ``new``, encrypted under its old key (deterministic)."""
        old_key = self._decoder_key(conn, meter, old)
        new_key = self._decoder_key(conn, meter, new)
        return [
            token_row("key_change", s, digits, 0) for s, digits in recipes.key_change_tokens(old, new, old_key, new_key)
        ]

    @staticmethod
    def _claim(conn: Connection, caller: Caller, key: str, digest: str, at: dt.datetime) -> bool:
        """Claim an Idempotency-Key in the request's transaction; False if a request claimed it before.

        A claim still in flight in another transaction makes this wait for it (the row's unique index).
        """
        if caller.api_key_id is None:
            raise VendError("forbidden", "an Idempotency-Key belongs to an API key; this caller has none")
        if not 1 <= len(key) <= limits.IDEMPOTENCY_KEY:
            raise VendError("invalid_idempotency_key", "an Idempotency-Key header of 1..200 characters is required")
        claim = dialect_insert(conn)(idempotency).values(
            api_key_id=caller.api_key_id, key=key, request_hash=digest, status_code=0, response={}, created_at=at
        )
        return conn.execute(claim.on_conflict_do_nothing().returning(idempotency.c.key)).first() is not None
