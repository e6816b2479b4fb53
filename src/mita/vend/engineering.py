"""Engineering tokens: an operator's clear tamper, clear credit, power limits and meter tests, audited."""

from __future__ import annotations

from sqlalchemy import insert, update

from mita import sts
from mita.sts import recipes

from . import remote
from .answers import (
    new_vend_id,
    request_hash,
    token_row,
    vend_response,
)
from .callers import Caller
from .desk import Desk, Issued
from .schema import (
    idempotency,
    meters,
    vends,
)


class EngineeringTokens(Desk):
    # ------------------------------------------------------------------ engineering tokens

    ENGINEERING = tuple(recipes.ENGINEERING)

    def engineering(
        self, caller: Caller, drn: str, kind: str, value: int | None = None, key: str | None = None
    ) -> Issued:
        """Operator tokens, audited: they carry a TID like any class 2 token.

        With an Idempotency-Key ``key`` a retry answers 200 with the token first made, as a vend's does:
        each token is a new TID, and a second clear-credit token is one the meter would also take.
        """
        caller.require("admin", "operator")
        recipes.engineering_token(kind, 0, value, 0)  # an unknown kind or a missing value, before any work
        number = sts.MeterNumber.parse(drn)
        digest = request_hash({"op": "engineering", "meter": number.drn, "kind": kind, "value": value})
        at = self.clock()
        with self.engine.begin() as conn:
            if key is not None and not self._claim(conn, caller, key, digest, at):
                return self._answered(conn, caller, key, digest)
            meter = self._meter(conn, drn, lock=True)
            group = self._group(conn, meter.supply_group_id)
            cfg = self.meter_config(meter, group)
            tid: int | None = None
            if recipes.engineering_needs_tid(kind):
                (tid,) = self._tids(cfg, 1, at, self._tid_floor(conn, meter, cfg))
                token = recipes.engineering_token(kind, tid, value, self.rnd())
                digits = sts.encode(token, sts.EA(cfg.ea), self._decoder_key(conn, meter, cfg))
                if meter.pending_key:
                    state = {**meter.pending_key, "last_tid": tid}
                    conn.execute(update(meters).where(meters.c.id == meter.id).values(pending_key=state))
                else:
                    conn.execute(update(meters).where(meters.c.id == meter.id).values(last_tid=tid))
            else:  # class 1: sent in clear, no TID
                token = recipes.engineering_token(kind, 0, value, 0)
                digits = sts.encode(token, sts.EA.STA, 0)
            made = [token_row("engineering", token, digits, 0)]
            vend_id = new_vend_id()
            conn.execute(
                insert(vends).values(
                    id=vend_id,
                    vendor_id=None,
                    api_key_id=caller.api_key_id,
                    meter_id=meter.id,
                    customer_id=meter.customer_id,
                    kind="engineering",
                    amount=0,
                    units=0,
                    receipt={"engineering": kind, "value": value},
                    status="completed",
                    created_at=at,
                )
            )
            self._insert_tokens(conn, vend_id, meter.id, cfg.base_date, at, made)
            self._audit(conn, caller, "engineering_token", "meter", meter.drn, kind=kind, value=value, tid=tid)
            command = remote.queue_delivery(
                conn, meter.id, meter.drn, vend_id, [digits], actor=caller.name, at=at,
                expiry=self.ctx.delivery_expiry, purpose=kind,
            )  # fmt: skip
            response = vend_response(vend_id, meter.drn, at, made, {"engineering": kind, "value": value})
            response["delivery"] = remote.queued(command)
            if key is not None:
                conn.execute(
                    update(idempotency)
                    .where(idempotency.c.api_key_id == caller.api_key_id, idempotency.c.key == key)
                    .values(status_code=201, response=response, vend_id=vend_id)
                )
        return Issued(response)
