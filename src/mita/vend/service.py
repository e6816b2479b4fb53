"""The vending service: one object over its jobs, each in its own module.

| job | module | what it does |
|---|---|---|
| purchases | :mod:`.purchase` | quotes and vends (money in, tokens out, exactly once per Idempotency-Key) |
| receipts | :mod:`.reversal` | reading a vend, reprints, reversals |
| engineering tokens | :mod:`.engineering` | an operator's clear tamper, clear credit, power limits, meter tests |
| key changes | :mod:`.keychanges` | one meter's key change: request, cancel, confirm, history |
| registry | :mod:`.registry` | setting the utility up: API keys, vendors, supply groups, tariffs, customers, meters |

They share a :class:`~.desk.VendContext` (database, clock, random source, policy, caches) and speak in results
and typed errors (:class:`~.errors.VendError`, with a stable code), never in HTTP statuses: the shells map codes
to statuses (``mita.api.codes``). Ledger lines, receipts and answers are plain functions in :mod:`.answers`;
callers and their roles in :mod:`.callers`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from mita.sts.recipes import KeyConfig, check_key_change

from .answers import (
    MAX_AMOUNT,
    ledger_lines,
    random_rnd,
    receipt_json,
    request_hash,
    tariff_from_spec,
    vend_response,
)
from .callers import ROLES, Caller, local_now
from .desk import Desk, Issued, VendContext
from .doctor import TokenDoctor
from .engineering import EngineeringTokens
from .keychanges import KeyChanges
from .keyring import WARN_DAYS, KeyRing
from .purchase import Purchases
from .registry import Registry
from .reversal import Receipts

__all__ = [
    "MAX_AMOUNT",
    "ROLES",
    "Caller",
    "Issued",
    "KeyConfig",
    "VendingService",
    "check_key_change",
    "ledger_lines",
    "local_now",
    "receipt_json",
    "request_hash",
    "tariff_from_spec",
    "vend_response",
]


class VendingService:
    """The jobs of the vending service over one shared context; each method hands the call to its job."""

    ENGINEERING = EngineeringTokens.ENGINEERING
    KEY_FIELDS = KeyChanges.KEY_FIELDS
    current_config = staticmethod(Desk.current_config)
    meter_config = staticmethod(Desk.meter_config)
    group_config = staticmethod(Desk.group_config)

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], dt.datetime] = local_now,
        rnd: Callable[[], int] = random_rnd,
        reversal_window: dt.timedelta = dt.timedelta(hours=24),
        warn_days: int = WARN_DAYS,
        delivery_expiry: dt.timedelta = dt.timedelta(hours=24),
    ) -> None:
        self.ctx = VendContext(engine, clock, rnd, reversal_window, warn_days, delivery_expiry)
        self.purchases = Purchases(self.ctx)
        self.receipts = Receipts(self.ctx)
        self.engineering_tokens = EngineeringTokens(self.ctx)
        self.key_changes = KeyChanges(self.ctx)
        self.registry = Registry(engine, clock)
        # the jobs' methods, under the names the shells and scripts have always called
        self.quote = self.purchases.quote
        self.vend = self.purchases.vend
        self.get_vend = self.receipts.get_vend
        self.reprint = self.receipts.reprint
        self.vend_of_key = self.receipts.vend_of_key
        self.reverse = self.receipts.reverse
        self.engineering = self.engineering_tokens.engineering
        self.confirm_key_change = self.key_changes.confirm_key_change
        self.vend_accepted = self.key_changes.vend_accepted
        self.request_key_change = self.key_changes.request_key_change
        self.cancel_key_change = self.key_changes.cancel_key_change
        self.key_change_history = self.key_changes.key_change_history
        self.doctor = TokenDoctor(self.ctx).doctor  # why a meter would take or refuse a token

    @property
    def engine(self) -> Engine:
        return self.ctx.engine

    @property
    def clock(self) -> Callable[[], dt.datetime]:
        return self.ctx.clock

    @property
    def keyring(self) -> KeyRing:
        return self.ctx.keyring

    @property
    def reversal_window(self) -> dt.timedelta:
        return self.ctx.reversal_window

    @property
    def warn_days(self) -> int:
        return self.ctx.warn_days

    def _tid_floor(self, conn: Any, meter: Any, cfg: KeyConfig) -> int:
        return self.purchases._tid_floor(conn, meter, cfg)
