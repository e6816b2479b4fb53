"""Receipts and reversals: reading a vend, reprinting it, and undoing a purchase to the cent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from . import remote
from .answers import (
    month_of,
    same_seller,
    vend_response,
)
from .callers import Caller
from .desk import Desk
from .errors import VendError
from .lifecycles import VEND, VendStatus
from .schema import (
    customers,
    idempotency,
    ledger,
    meter_commands,
    meter_months,
    meters,
    supply_groups,
    tokens,
    vending_keys,
    vendors,
    vends,
)


class Receipts(Desk):
    # ------------------------------------------------------------------ reads, reprint, reversal

    def vend_of_key(self, caller: Caller, key: str) -> str | None:
        """The purchase a caller's idempotency key made, if it made one: how a till that lost an answer (or a
        channel that lost its note of a vend) finds what was issued without vending again."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(idempotency.c.vend_id)
                .join(vends, vends.c.id == idempotency.c.vend_id)
                .where(
                    idempotency.c.api_key_id == caller.api_key_id, idempotency.c.key == key, vends.c.kind == "purchase"
                )
            ).scalar()

    def get_vend(self, caller: Caller, vend_id: str, reprint: bool = False) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(vends, *remote.DELIVERY_COLUMNS)
                .select_from(vends.outerjoin(meter_commands, meter_commands.c.vend_id == vends.c.id))
                .where(vends.c.id == vend_id)
            ).first()
            if row is None or (caller.role == "vendor" and not same_seller(caller, row)):
                raise VendError("not_found", f"no vend {vend_id}")
            toks = conn.execute(select(tokens).where(tokens.c.vend_id == vend_id).order_by(tokens.c.seq)).all()
            drn = conn.execute(select(meters.c.drn).where(meters.c.id == row.meter_id)).scalar_one()
        made = [
            {
                "seq": t.seq,
                "kind": t.kind,
                "digits": t.digits,
                "tid": t.tid,
                "class": t.token_class,
                "subclass": t.subclass,
                "units": t.units,
            }
            for t in toks
        ]
        receipt = dict(row.receipt)
        key_doc = receipt.pop("key", None)
        out = vend_response(row.id, drn, row.created_at, made, receipt)
        if key_doc is not None:
            out["key"] = key_doc
        out["status"] = row.status
        out["delivery"] = remote.delivered(row)  # a connected meter's: how its tokens went to it
        if reprint:
            out["reprint"] = True
        return out

    def reprint(self, caller: Caller, vend_id: str) -> dict[str, Any]:
        out = self.get_vend(caller, vend_id, reprint=True)
        if out["status"] == "reversed":
            raise VendError("reversed", f"vend {vend_id} was reversed: its tokens are not handed out again")
        with self.engine.begin() as conn:
            self._audit(conn, caller, "reprint", "vend", vend_id)
        return out

    def reverse(self, caller: Caller, vend_id: str, reason: str) -> dict[str, Any]:
        caller.require("admin", "operator")
        at = self.clock()
        with self.engine.begin() as conn:
            meter_id = conn.execute(select(vends.c.meter_id).where(vends.c.id == vend_id)).scalar()
            if meter_id is None:
                raise VendError("not_found", f"no vend {vend_id}")
            # Lock in a vend's order (meter, then vendor, then customer and month), so that a reversal and a
            # vend for the same meter queue rather than deadlock, and the vend prices on the reversed totals.
            if self._for_update:
                conn.execute(select(meters.c.id).where(meters.c.id == meter_id).with_for_update())
            q = select(vends).where(vends.c.id == vend_id)
            row = conn.execute(q.with_for_update() if self._for_update else q).one()
            if not VEND.allows(row.status, VendStatus.REVERSED):
                raise VendError("already_reversed", f"vend {vend_id} was already reversed")
            if row.kind != "purchase":
                raise VendError("not_reversible", "only purchases can be reversed")
            if at - row.created_at > self.ctx.reversal_window:
                raise VendError("reversal_window_closed", "the reversal window for this vend has closed")
            lines = conn.execute(select(ledger).where(ledger.c.vend_id == vend_id)).all()
            conn.execute(
                insert(ledger),
                [
                    {"vend_id": vend_id, "account": x.account, "debit": x.credit, "credit": x.debit, "created_at": at}
                    for x in lines
                ],
            )
            rec = row.receipt
            self._uncharge_key(conn, rec.get("key"), row.units)
            if row.vendor_id is not None:
                conn.execute(
                    update(vendors)
                    .where(vendors.c.id == row.vendor_id, vendors.c.credit_limit.is_not(None))
                    .values(balance=vendors.c.balance - row.amount)
                )
            if row.customer_id is not None:
                shortfall = self._unbook_customer(conn, row.customer_id, rec)
                if shortfall:  # the leftover was spent since: the customer owes it, and the ledger says so
                    cust = f"customer:{row.customer_id}"
                    conn.execute(
                        insert(ledger),
                        [
                            {"vend_id": vend_id, "account": f"{cust}:debt", "debit": shortfall, "credit": 0,
                             "created_at": at},
                            {"vend_id": vend_id, "account": f"{cust}:carried", "debit": 0, "credit": shortfall,
                             "created_at": at},
                        ],
                    )  # fmt: skip
            month = month_of(row.created_at)
            conn.execute(
                update(meter_months)
                .where(meter_months.c.meter_id == row.meter_id, meter_months.c.month == month)
                .values(
                    units=meter_months.c.units - rec["units"],
                    purchases=meter_months.c.purchases - 1,
                    **({"fbe_issued": False} if rec["fbe_units"] else {}),
                    **({"fixed_charged": False} if rec["fixed_charge"] else {}),
                )
            )
            conn.execute(update(vends).where(vends.c.id == vend_id).values(status="reversed", reversed_at=at))
            self._audit(conn, caller, "reverse", "vend", vend_id, reason=reason, amount=row.amount)
        return self.get_vend(caller, vend_id)

    def _unbook_customer(self, conn: Connection, customer_id: int, rec: dict[str, Any]) -> int:
        """Give back what a reversed purchase took from and gave to the customer; returns the shortfall.

        If the leftover it carried forward has since been spent, the customer
        cannot give it back from the carried balance: the shortfall becomes
        debt, so the books still balance to the cent.
        """
        q = select(customers).where(customers.c.id == customer_id)
        cust = conn.execute(q.with_for_update() if self._for_update else q).one()
        carry = rec["leftover_policy"] == "carry"
        carried = cust.carried + rec["carried_in"] - (rec["leftover"] if carry else 0)
        refund = cust.refund_balance - (0 if carry else rec["leftover"])
        shortfall = int(max(0, -carried) + max(0, -refund))
        conn.execute(
            update(customers)
            .where(customers.c.id == customer_id)
            .values(
                debt=cust.debt + rec["debt_recovered"] + shortfall,
                carried=max(0, carried),
                refund_balance=max(0, refund),
            )
        )
        return shortfall

    @staticmethod
    def _uncharge_key(conn: Connection, cfg: dict[str, Any] | None, units: int) -> None:
        """A reversed vend gives its credit back to the key it was issued under (when the key is limited)."""
        if not cfg:
            return
        group = select(supply_groups.c.id).where(supply_groups.c.sgc == cfg["sgc"]).scalar_subquery()
        conn.execute(
            update(vending_keys)
            .where(
                vending_keys.c.supply_group_id == group,
                vending_keys.c.krn == cfg["krn"],
                vending_keys.c.credit_limit.is_not(None),
            )
            .values(credit_issued=vending_keys.c.credit_issued - units)
        )
