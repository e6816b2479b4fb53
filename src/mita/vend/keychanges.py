"""Key changes of one meter: request, cancel, confirm (by an operator or an accepted vend), history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from mita import sts
from mita.sts.recipes import KeyConfig, check_key_change

from .answers import (
    last_tid,
    new_vend_id,
    same_key,
    vend_response,
)
from .callers import Caller
from .desk import Desk
from .errors import VendError
from .lifecycles import KEY_CHANGE
from .schema import (
    key_changes,
    meters,
    supply_groups,
    tokens,
    vends,
)
from .walltime import with_offset


class KeyChanges(Desk):
    def confirm_key_change(self, caller: Caller, drn: str, via: str = "operator") -> dict[str, Any]:
        """The meter accepted its key change: the pending configuration becomes current.

        ``via`` says who reported it: an operator, a campaign's field report, a smart meter, or a
        vend whose tokens the customer reports accepted.
        """
        caller.require("admin", "operator")
        at = self.clock()
        with self.engine.begin() as conn:
            meter = self._pending_meter(conn, drn)
            p = meter.pending_key
            new = KeyConfig.from_mapping(p)
            group_id = meter.supply_group_id
            if new.sgc != self._group(conn, group_id).sgc:  # an SGC change moves the meter to the other group
                group_id = conn.execute(select(supply_groups.c.id).where(supply_groups.c.sgc == new.sgc)).scalar_one()
            last = self._tid_floor(conn, meter, new)
            conn.execute(
                update(meters)
                .where(meters.c.id == meter.id)
                .values(
                    supply_group_id=group_id, krn=new.krn, kt=new.kt, ti=new.ti, ea=new.ea, base_date=new.base_date,
                    ken=new.ken, last_tid=last, pending_key=None,
                )
            )  # fmt: skip
            conn.execute(
                update(key_changes)
                .where(key_changes.c.meter_id == meter.id, key_changes.c.status.in_(KEY_CHANGE.open))
                .values(status="confirmed", confirmed_at=at)
            )
            self._audit(conn, caller, "confirm_key_change", "meter", meter.drn, via=via, **new.as_dict())
        return {"meter": meter.drn, "key": {**new.as_dict(), "last_tid": last}}

    def vend_accepted(self, caller: Caller, vend_id: str) -> dict[str, Any]:
        """The customer reports a vend's tokens accepted: the key change it carried is confirmed.

        Only that change: a late report about an older vend must not confirm a newer change the
        meter has not seen, so the vend's target is compared with what is pending.
        """
        caller.require("admin", "operator")
        with self.engine.connect() as conn:
            row = conn.execute(select(vends.c.receipt, vends.c.meter_id).where(vends.c.id == vend_id)).first()
            if row is None:
                raise VendError("not_found", f"no vend {vend_id}")
            carried = conn.execute(
                select(tokens.c.id).where(tokens.c.vend_id == vend_id, tokens.c.kind == "key_change")
            ).first()
            meter = conn.execute(select(meters).where(meters.c.id == row.meter_id)).one()
            group = self._group(conn, meter.supply_group_id)
        if carried is None:
            raise VendError("no_pending_key", f"vend {vend_id} carried no key change")
        target = row.receipt.get("key") or row.receipt.get("key_change", {}).get("to") or {}
        if not meter.pending_key:
            if same_key(target, self.current_config(meter, group).as_dict()):
                return {"meter": meter.drn, "already_confirmed": True}
            raise VendError("key_change_superseded", f"meter {meter.drn} is not on the key vend {vend_id} carried")
        if not same_key(target, meter.pending_key):
            raise VendError(
                "key_change_superseded", f"meter {meter.drn} has another key change pending than vend {vend_id}'s"
            )
        return self.confirm_key_change(caller, meter.drn, via="vend")

    KEY_FIELDS = ("sgc", "krn", "kt", "ti", "ea", "base_date", "ken")

    def request_key_change(self, caller: Caller, drn: str, changes: dict[str, Any]) -> dict[str, Any]:
        """An operator's key change for one meter (any of SGC, KRN, KT, TI, EA, base date, KEN).

        The tokens are issued now as a ``key_change`` vend (so reprints repeat them), the meter's
        record keeps the new configuration as pending until the change is confirmed, and a new base
        date sets RO = 1 (the meter clears its TID store).
        """
        caller.require("admin", "operator")
        unknown = set(changes) - set(self.KEY_FIELDS)
        if unknown or not changes:
            raise VendError("invalid_request", f"a key change sets some of {', '.join(self.KEY_FIELDS)}")
        at = self.clock()
        with self.engine.begin() as conn:
            meter = self._meter(conn, drn, lock=True)
            group = self._group(conn, meter.supply_group_id)
            if meter.pending_key:
                raise VendError("conflict", f"meter {meter.drn} has a key change pending: confirm it first")
            old = self.current_config(meter, group)
            new = KeyConfig(**{**old.as_dict(), **{k: v for k, v in changes.items() if v is not None}})
            new = KeyConfig(
                str(new.sgc), int(new.krn), int(new.kt), int(new.ti), int(sts.EA.parse(new.ea)),
                int(sts.BaseDate.parse(new.base_date)), int(new.ken),
            )  # fmt: skip
            sts.identity.check_key_params(new.kt, new.sgc, new.ti, new.krn)
            if not 0 <= new.ken <= 255:
                raise sts.RangeError("KEN must be 0..255")
            info, _ = self.keyring.get(conn, new.sgc, new.krn)
            if info.status != "active":  # credit under the new key must be sellable at once
                raise VendError("no_vending_key", f"vending key {new.sgc}/{new.krn} is {info.status}, not active")
            check_key_change(old, new, info.dkga)
            made = self._key_change_tokens(conn, meter, old, new)
            # a campaign that planned this meter must not overwrite the change made here
            conn.execute(
                update(key_changes)
                .where(key_changes.c.meter_id == meter.id, key_changes.c.status == "planned")
                .values(status="cancelled")
            )
            vend_id = new_vend_id()
            doc = {"key_change": {"from": old.as_dict(), "to": new.as_dict()}}
            conn.execute(
                insert(vends).values(
                    id=vend_id, vendor_id=None, api_key_id=caller.api_key_id, meter_id=meter.id,
                    customer_id=meter.customer_id, kind="key_change", amount=0, units=0, receipt=doc,
                    status="completed", created_at=at,
                )
            )  # fmt: skip
            self._insert_tokens(conn, vend_id, meter.id, old.base_date, at, made)
            pending = {**new.as_dict(), "last_tid": -1}
            conn.execute(update(meters).where(meters.c.id == meter.id).values(pending_key=pending))
            conn.execute(
                insert(key_changes).values(
                    meter_id=meter.id, vend_id=vend_id, via="operator", from_key=old.as_dict(), to_key=new.as_dict(),
                    tokens=[t["digits"] for t in made], status="issued", created_at=at, issued_at=at,
                )
            )  # fmt: skip
            self._audit(conn, caller, "request_key_change", "meter", meter.drn, **new.as_dict())
        return vend_response(vend_id, meter.drn, at, made, doc)

    def cancel_key_change(self, caller: Caller, drn: str) -> dict[str, Any]:
        """Forget a pending key change the meter never got: it stays on its current key.

        Only for a change whose tokens were not entered (a meter that did install them would
        then refuse every token made under its old key); the tokens stay in the history.
        """
        caller.require("admin", "operator")
        at = self.clock()
        with self.engine.begin() as conn:
            meter = self._pending_meter(conn, drn)
            # TIDs sold under the cancelled key stay used: on the meter's base date its count keeps them
            last = last_tid(meter, self.current_config(meter, self._group(conn, meter.supply_group_id)))
            conn.execute(update(meters).where(meters.c.id == meter.id).values(pending_key=None, last_tid=last))
            conn.execute(
                update(key_changes)
                .where(key_changes.c.meter_id == meter.id, key_changes.c.status.in_(KEY_CHANGE.open))
                .values(status="cancelled")
            )
            self._audit(conn, caller, "cancel_key_change", "meter", meter.drn, **meter.pending_key)
        cancelled = KeyConfig.from_mapping(meter.pending_key).as_dict()
        return {"meter": meter.drn, "cancelled": cancelled, "at": with_offset(at)}

    def key_change_history(self, caller: Caller, drn: str) -> list[dict[str, Any]]:
        """Every key change the meter was sent, oldest first, with how far it got."""
        caller.require("admin", "operator")
        number = sts.MeterNumber.parse(drn)
        with self.engine.connect() as conn:
            meter_id = conn.execute(select(meters.c.id).where(meters.c.drn == number.drn)).scalar()
            if meter_id is None:
                raise VendError("not_found", f"no meter {number.drn}")
            rows = conn.execute(
                select(key_changes).where(key_changes.c.meter_id == meter_id).order_by(key_changes.c.id)
            ).all()
        return [
            {
                "id": r.id, "via": r.via, "campaign": r.campaign_id, "vend": r.vend_id, "status": r.status,
                "from": r.from_key, "to": r.to_key, "tokens": r.tokens,
                **{k: with_offset(getattr(r, k)) if getattr(r, k) else None
                   for k in ("issued_at", "delivered_at", "confirmed_at")},
            }
            for r in rows
        ]  # fmt: skip
