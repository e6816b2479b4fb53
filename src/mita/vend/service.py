"""The vending flows: quote, vend, reprint, reversal and engineering tokens.

One database transaction per vend, in this order: claim the idempotency key,
lock the meter's row, allocate TIDs, make the tokens, write the vend, its
tokens, its balanced ledger lines, the audit entry, the outbox row and the
stored response; commit; only then answer. If the commit fails or its fate
is unknown the caller is told to retry with the same key (503), and the retry
finds the committed vend if there is one. Two identical requests at once make
one vend: the second waits on the first's idempotency row and then answers
with the same response.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from mita import sts
from mita.sts import recipes
from mita.sts.recipes import KeyConfig, check_key_change

from . import hotpath, limits, pricing
from .audit import write_audit
from .errors import VendError, database_failure
from .keyring import WARN_DAYS, KeyInfo, KeyRing, check_issuable, expiry_warnings
from .schema import (
    campaigns,
    customers,
    idempotency,
    key_changes,
    ledger,
    meter_months,
    meters,
    supply_groups,
    tariff_versions,
    tokens,
    vending_keys,
    vendors,
    vends,
)

ROLES = ("admin", "operator", "vendor")
MAX_AMOUNT = 10**11  # minor units: a billion in currency units is absurd for one vend


@dataclass(frozen=True)
class Caller:
    api_key_id: int | None  # None: the system itself (the CLI, the demo)
    name: str
    role: str
    vendor_id: int | None = None

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise VendError("forbidden", f"this needs the role {' or '.join(roles)}; the key has {self.role}")


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def local_now() -> dt.datetime:
    """Vending runs on the utility's wall clock, like its meters' TIDs (no time zone)."""
    return dt.datetime.now().replace(microsecond=0)


class VendingService:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], dt.datetime] = local_now,
        rnd: Callable[[], int] = lambda: secrets.randbelow(16),
        reversal_window: dt.timedelta = dt.timedelta(hours=24),
        warn_days: int = WARN_DAYS,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.rnd = rnd
        self.reversal_window = reversal_window
        self.warn_days = warn_days
        self._for_update = engine.dialect.name != "sqlite"  # SQLite's BEGIN IMMEDIATE already serialises
        # A vending key's material never changes once stored (unique per group and KRN), and a tariff
        # version never changes once effective: both are safe to keep for the process's life.
        self.keyring = KeyRing()
        self._tariffs: dict[int, pricing.Tariff] = {}

    # ------------------------------------------------------------------ helpers

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
        last = _last_tid(meter, cfg)
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

    # ------------------------------------------------------------------ quote

    def quote(self, caller: Caller, drn: str, amount: int) -> dict[str, Any]:
        """What ``amount`` would buy now: no token, no change."""
        _check_amount(amount)
        number = sts.MeterNumber.parse(drn)
        at = self.clock()
        with self.engine.connect() as conn:
            found = hotpath.read_meter(conn, _reading(number.drn, at, caller))
            if found is None:
                raise VendError("not_found", f"no meter {number.drn}")
            meter = SimpleNamespace(**found)
            receipt = self._price(conn, meter, amount, at)
        return {"meter": meter.drn, "receipt": receipt_json(receipt, meter), "quoted_at": at.isoformat()}

    def _price(self, conn: Connection, meter: Any, amount: int, at: dt.datetime) -> pricing.Receipt:
        """Price ``amount`` for a meter row read by ``hotpath`` (its tariff, month and customer)."""
        if meter.tariff_id is None:
            raise VendError("no_tariff", "the meter has no tariff")
        tariff = self._tariff_version(conn, meter.version_id, at)
        account = pricing.Account(
            month_units=meter.month_units or 0,
            first_purchase_of_month=not meter.fixed_charged,
            debt=meter.debt or 0,
            debt_rate=Decimal(meter.debt_rate or "0"),
            carried=meter.carried or 0,
            fbe_eligible=bool(meter.fbe_eligible),
            fbe_issued_this_month=bool(meter.fbe_issued),
        )
        return pricing.price(tariff, amount, account, bool(meter.carry_leftover))

    # ------------------------------------------------------------------ vend

    def vend(self, caller: Caller, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Sell credit, exactly once per (caller, idempotency key). Returns (HTTP status, response)."""
        caller.require("admin", "operator", "vendor")
        if caller.api_key_id is None:
            raise VendError("forbidden", "vends are made with an API key, so that retries can be matched")
        if not key or len(key) > 200:
            raise VendError("invalid_idempotency_key", "an Idempotency-Key header of 1..200 characters is required")
        digest = request_hash(body)
        drn = sts.MeterNumber.parse(str(body.get("meter", ""))).drn  # a wrong check digit costs no database work
        amount = body.get("amount")
        _check_amount(amount)
        assert isinstance(amount, int)
        at = self.clock()
        try:
            with self.engine.begin() as conn:
                claimed, meter = hotpath.claim_and_load(
                    conn,
                    {"api_key_id": caller.api_key_id, "key": key, "hash": digest, "at": at},
                    _reading(drn, at, caller),
                )
                if meter is None:  # was the key ours to claim? (a key reused for another body is the error)
                    row = conn.execute(
                        select(idempotency.c.request_hash, idempotency.c.status_code).where(
                            idempotency.c.api_key_id == caller.api_key_id, idempotency.c.key == key
                        )
                    ).first()
                    if row is not None and (row.request_hash != digest or row.status_code != 0):
                        return self._answered(conn, caller, key, digest)
                    raise VendError("not_found", f"no meter {drn}")
                if not claimed:
                    return self._answered(conn, caller, key, digest)
                response = self._vend_locked(conn, caller, key, body, SimpleNamespace(**meter), at)
            return 201, response
        except (DBAPIError, psycopg.Error) as exc:
            # a lost connection or a serialisation failure: nothing was committed, or we cannot know, and a
            # retry with the same key is safe (503 retry); a refusal that would repeat is not worth retrying
            raise database_failure(exc, "retry", "retry with the same Idempotency-Key") from None

    def _answered(self, conn: Connection, caller: Caller, key: str, digest: str) -> tuple[int, dict[str, Any]]:
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
        return 200, row.response

    def _vend_locked(
        self, conn: Connection, caller: Caller, key: str, body: dict[str, Any], meter: Any, at: dt.datetime
    ) -> dict[str, Any]:
        """The vend itself, with the key claimed and the meter's row (``hotpath`` "load") locked."""
        amount: int = body["amount"]
        if meter.status != "active":
            raise VendError("meter_blocked", f"meter {meter.drn} is {meter.status}")
        month = f"{at:%Y-%m}"
        carry = bool(meter.carry_leftover)
        receipt = self._price(conn, meter, amount, at)
        group = SimpleNamespace(
            id=meter.supply_group_id, sgc=meter.sgc, krn=meter.g_krn, kt=meter.g_kt, ea=meter.g_ea,
            base_date=meter.g_base_date, ken=meter.g_ken,
        )  # fmt: skip

        current = self.current_config(meter, group)
        cfg = KeyConfig.from_mapping(meter.pending_key) if meter.pending_key else self.group_config(meter, group)
        made: list[dict[str, Any]] = []
        pending = current != cfg
        if pending:
            if not (body.get("include_key_change") or (meter.pending_key and meter.pending_key.get("attach"))):
                raise VendError(
                    "key_change_required",
                    f"meter {meter.drn} needs a key change first (KRN {meter.krn} -> {cfg.krn}, base date "
                    f"{meter.base_date} -> {cfg.base_date}); ask with include_key_change to get the tokens",
                )
            made += self._key_change_tokens(conn, meter, current, cfg)
            vk, _ = self.keyring.get(conn, cfg.sgc, cfg.krn)
        else:
            vk = KeyInfo(meter.key_id, meter.key_dkga, meter.key_status, meter.key_until, meter.key_limit)
        check_issuable(vk, at, cfg.sgc, cfg.krn)  # the key's state, read with the meter (or just now)
        decoder_key = self._decoder_key(conn, meter, cfg, fresh=False)
        ea = sts.EA(cfg.ea)
        # TIDs under a pending key are counted apart: a new base date restarts them (RO clears the store)
        after = self._tid_floor(conn, meter, cfg)
        credits = [("credit", receipt.units)] + ([("fbe", receipt.fbe_units)] if receipt.fbe_units else [])
        tids = self._tids(cfg, len(credits), at, after)
        for (what, units), tid in zip(credits, tids, strict=True):
            token = recipes.credit_token(meter.utility, tid, units, self.rnd())
            made.append(_token_row(what, token, sts.encode(token, ea, decoder_key), units))

        if meter.credit_limit is not None:  # a vendor on credit: its row is locked and its limit holds
            self._charge_vendor(conn, caller, receipt.paid)
        if vk.credit_limit is not None:
            self._charge_key(conn, vk.id, receipt.units + receipt.fbe_units)
        vend_id = str(uuid.uuid4())
        receipt_doc = receipt_json(receipt, meter)
        response = vend_response(vend_id, meter.drn, at, made, receipt_doc)
        key_doc = cfg.as_dict()
        response["key"] = key_doc
        response["warnings"] = expiry_warnings(at, vk.issued_until, cfg.ken, cfg.base_date, cfg.kt, self.warn_days)
        ids = {"vend_id": vend_id, "meter_id": meter.id, "at": at}
        vend_row = {
            "id": vend_id,
            "vendor_id": caller.vendor_id,
            "api_key_id": caller.api_key_id,
            "meter_id": meter.id,
            "customer_id": meter.customer_id,
            "amount": amount,
            "units": receipt.units + receipt.fbe_units,
            "receipt": json.dumps({**receipt_doc, "key": key_doc}),  # the key, for a reversal to find
            "at": at,
        }
        if pending:
            state = {**(meter.pending_key or {}), **cfg.as_dict(), "last_tid": tids[-1]}
            meter_write: hotpath.Write = ("meter_pending", {"id": meter.id, "pending": json.dumps(state)})
        else:
            meter_write = ("meter_tid", {"id": meter.id, "tid": tids[-1]})
        lines = ledger_lines(caller, meter, receipt, carry)
        summary = {"meter": meter.drn, "amount": amount, "units": receipt.units, "tokens": len(made)}
        delivery = {"meter": meter.drn, "tokens": [t["digits"] for t in made]}
        writes: list[hotpath.Write] = [
            ("vend", vend_row),
            ("token", [{**t, **ids, "seq": i, "base_date": cfg.base_date} for i, t in enumerate(made)]),
            meter_write,
            ("ledger", [{**ids, "account": a, "debit": d, "credit": c} for a, d, c in lines if d or c]),
            (
                "month",
                {
                    "meter_id": meter.id,
                    "month": month,
                    "units": receipt.units,
                    "fbe": bool(receipt.fbe_units),
                    "fixed": bool(receipt.fixed_charge),
                },
            ),
            ("audit", {**ids, "actor": caller.name, "detail": json.dumps(summary)}),
            (
                "outbox",
                {**ids, "recipient": meter.drn, "dedupe_key": f"receipt:{vend_id}", "payload": json.dumps(delivery)},
            ),
            (
                "answer",
                {"response": json.dumps(response), "vend_id": vend_id, "api_key_id": caller.api_key_id, "key": key},
            ),
        ]
        if meter.customer_id is not None:
            change = {
                "id": meter.customer_id,
                "debt": receipt.debt_recovered,
                "carried_in": receipt.carried_in,
                "carried_out": receipt.leftover if carry else 0,
                "refund": 0 if carry else receipt.leftover,
            }
            writes.append(("customer", change))
        hotpath.run(conn, writes)
        if pending:
            self._key_change_delivered(conn, meter.id, current, cfg, made, vend_id, at)
        return response

    @staticmethod
    def _key_change_delivered(
        conn: Connection,
        meter_id: int,
        old: KeyConfig,
        new: KeyConfig,
        made: list[dict[str, Any]],
        vend_id: str,
        at: dt.datetime,
    ) -> None:
        """Track the key change a vend carried: its campaign's row if it is the same change, else a new row.

        A planned campaign row for another target is cancelled: the meter now has this change pending,
        and the campaign must not overwrite it.
        """
        digits = [t["digits"] for t in made if t["kind"] == "key_change"]
        rows = conn.execute(
            select(key_changes.c.id, key_changes.c.status, key_changes.c.to_key, campaigns.c.target)
            .outerjoin(campaigns, campaigns.c.id == key_changes.c.campaign_id)
            .where(key_changes.c.meter_id == meter_id, key_changes.c.status.in_(("planned", "issued", "delivered")))
        ).all()
        want = new.as_dict()
        same = [r.id for r in rows if _same_key({k: v for k, v in (r.to_key or r.target or {}).items()
                                                 if v is not None and k != "dkga"}, want)]  # fmt: skip
        other = [r.id for r in rows if r.id not in same and r.status == "planned"]
        if other:
            conn.execute(update(key_changes).where(key_changes.c.id.in_(other)).values(status="cancelled"))
        if same:
            conn.execute(
                update(key_changes)
                .where(key_changes.c.id.in_(same))
                .values(
                    status="delivered",
                    vend_id=vend_id,  # the latest vend that carried the set
                    delivered_at=func.coalesce(key_changes.c.delivered_at, at),
                    tokens=digits,
                    from_key=old.as_dict(),
                    to_key=want,
                    issued_at=func.coalesce(key_changes.c.issued_at, at),
                )
            )
            return
        conn.execute(
            insert(key_changes).values(
                meter_id=meter_id, vend_id=vend_id, via="vend", from_key=old.as_dict(), to_key=want,
                tokens=digits, status="delivered", created_at=at, issued_at=at, delivered_at=at,
            )
        )  # fmt: skip

    def _tariff_version(self, conn: Connection, version_id: int | None, at: dt.datetime) -> pricing.Tariff:
        if version_id is None:
            raise VendError("no_tariff", f"the meter's tariff has no version in force at {at:%Y-%m-%d %H:%M}")
        tariff = self._tariffs.get(version_id)
        if tariff is None:
            spec = conn.execute(select(tariff_versions.c.spec).where(tariff_versions.c.id == version_id)).scalar_one()
            tariff = self._tariffs[version_id] = tariff_from_spec(spec)
        return tariff

    @staticmethod
    def _charge_vendor(conn: Connection, caller: Caller, paid: int) -> None:
        vendor = conn.execute(
            update(vendors)
            .where(vendors.c.id == caller.vendor_id)
            .values(balance=vendors.c.balance + paid)
            .returning(vendors.c.name, vendors.c.balance, vendors.c.credit_limit)
        ).one()
        if vendor.credit_limit is not None and vendor.balance > vendor.credit_limit:
            raise VendError("credit_limit", f"vendor {vendor.name} would exceed its credit limit")

    @staticmethod
    def _charge_key(conn: Connection, key_id: int, units: int) -> None:
        """Count credit against a vending key's limit (only keys with a limit pay for this row lock)."""
        q = (
            update(vending_keys)
            .where(vending_keys.c.id == key_id)
            .values(credit_issued=vending_keys.c.credit_issued + units)
            .returning(vending_keys.c.credit_issued, vending_keys.c.credit_limit)
        )
        row = conn.execute(q).one()
        if row.credit_limit is not None and row.credit_issued > row.credit_limit:
            raise VendError("key_credit_limit", "the vending key has issued all the credit it is allowed")

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
            _token_row("key_change", s, digits, 0)
            for s, digits in recipes.key_change_tokens(old, new, old_key, new_key)
        ]

    # ------------------------------------------------------------------ reads, reprint, reversal

    def get_vend(self, caller: Caller, vend_id: str, reprint: bool = False) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(vends).where(vends.c.id == vend_id)).first()
            if row is None or (caller.role == "vendor" and not _same_seller(caller, row)):
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
            if row.status == "reversed":
                raise VendError("already_reversed", f"vend {vend_id} was already reversed")
            if row.kind != "purchase":
                raise VendError("not_reversible", "only purchases can be reversed")
            if at - row.created_at > self.reversal_window:
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
            month = f"{row.created_at:%Y-%m}"
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

    # ------------------------------------------------------------------ engineering tokens

    ENGINEERING = tuple(recipes.ENGINEERING)

    def engineering(
        self, caller: Caller, drn: str, kind: str, value: int | None = None, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Operator tokens, audited: they carry a TID like any class 2 token. Returns (HTTP status, response).

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
            made = [_token_row("engineering", token, digits, 0)]
            vend_id = str(uuid.uuid4())
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
            response = vend_response(vend_id, meter.drn, at, made, {"engineering": kind, "value": value})
            if key is not None:
                conn.execute(
                    update(idempotency)
                    .where(idempotency.c.api_key_id == caller.api_key_id, idempotency.c.key == key)
                    .values(status_code=201, response=response, vend_id=vend_id)
                )
        return 201, response

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
                .where(key_changes.c.meter_id == meter.id, key_changes.c.status.in_(("planned", "issued", "delivered")))
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
            if _same_key(target, self.current_config(meter, group).as_dict()):
                return {"meter": meter.drn, "already_confirmed": True}
            raise VendError("key_change_superseded", f"meter {meter.drn} is not on the key vend {vend_id} carried")
        if not _same_key(target, meter.pending_key):
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
            vend_id = str(uuid.uuid4())
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
            last = _last_tid(meter, self.current_config(meter, self._group(conn, meter.supply_group_id)))
            conn.execute(update(meters).where(meters.c.id == meter.id).values(pending_key=None, last_tid=last))
            conn.execute(
                update(key_changes)
                .where(key_changes.c.meter_id == meter.id, key_changes.c.status.in_(("planned", "issued", "delivered")))
                .values(status="cancelled")
            )
            self._audit(conn, caller, "cancel_key_change", "meter", meter.drn, **meter.pending_key)
        cancelled = KeyConfig.from_mapping(meter.pending_key).as_dict()
        return {"meter": meter.drn, "cancelled": cancelled, "at": at.isoformat()}

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
                **{k: getattr(r, k).isoformat() if getattr(r, k) else None
                   for k in ("issued_at", "delivered_at", "confirmed_at")},
            }
            for r in rows
        ]  # fmt: skip


# ---------------------------------------------------------------------- plain functions


def ledger_lines(caller: Caller, meter: Any, r: pricing.Receipt, carry: bool) -> list[tuple[str, int, int]]:
    """(account, debit, credit) for one purchase: money in on the left, where it went on the right."""
    cust = f"customer:{meter.customer_id}" if meter.customer_id is not None else f"meter:{meter.id}"
    lines = [
        (f"vendor:{caller.vendor_id or 'direct'}", r.paid, 0),
        (f"{cust}:carried", r.carried_in, 0),
        (f"{cust}:debt", 0, r.debt_recovered),
        ("revenue:fixed_charge", 0, r.fixed_charge),
        ("tax:vat", 0, r.fixed_vat + r.energy_vat),
        ("revenue:energy", 0, r.energy_charge),
        (f"{cust}:{'carried' if carry else 'refund'}", 0, r.leftover),
    ]
    assert sum(d for _, d, _ in lines) == sum(c for _, _, c in lines)  # double entry balances
    return lines


def _same_key(target: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether a key configuration (as stored with a vend) is ``config``, on the fields both name."""
    fields = [k for k in KeyConfig.__dataclass_fields__ if k in target and k in config]
    return bool(fields) and all(target[k] == config[k] for k in fields)


def _last_tid(meter: Any, cfg: KeyConfig) -> int:
    """The last TID the meter has seen or will see before the next token under ``cfg``.

    TIDs issued under a pending key are counted on the pending record; on a new base date they start
    again (the key change's RO bit clears the meter's store), on the same base date they must stay
    above the ones already in the meter.
    """
    pending = meter.pending_key or {}
    under_new: int = pending.get("last_tid", -1) if pending.get("base_date") == cfg.base_date else -1
    if cfg.base_date != meter.base_date:
        return under_new
    return max(under_new, int(meter.last_tid))


def dialect_insert(conn: Connection) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (both PostgreSQL and SQLite have it)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _reading(drn: str, at: dt.datetime, caller: Caller) -> dict[str, Any]:
    return {"drn": drn, "month": f"{at:%Y-%m}", "at": at, "vendor_id": caller.vendor_id}


def _same_seller(caller: Caller, row: Row[Any]) -> bool:
    """A vendor's tills see each other's sales; nobody else's."""
    if caller.vendor_id is not None:
        return bool(row.vendor_id == caller.vendor_id)
    return bool(row.api_key_id == caller.api_key_id)


def _check_amount(amount: object) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise VendError("invalid_amount", "amount must be an integer number of minor units (cents)")
    if not 0 < amount <= MAX_AMOUNT:
        raise VendError("invalid_amount", f"amount must be between 1 and {MAX_AMOUNT} minor units")


def _token_row(kind: str, token: sts.Token, digits: str, units: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "tid": getattr(token, "tid", None),
        "token_class": token.token_class,
        "subclass": token.subclass,
        "digits": digits,
        "units": units,
    }


def vend_response(
    vend_id: str, drn: str, at: dt.datetime, made: list[dict[str, Any]], receipt: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": vend_id,
        "meter": drn,
        "created_at": at.isoformat(),
        "tokens": [
            {
                "seq": i,
                "kind": t["kind"],
                "digits": t["digits"],
                "tid": t["tid"],
                "class": t.get("token_class", t.get("class")),
                "subclass": t["subclass"],
                "units": t["units"],
            }
            for i, t in enumerate(made)
        ],
        "receipt": receipt,
    }


def tariff_from_spec(spec: dict[str, Any]) -> pricing.Tariff:
    try:
        return pricing.Tariff(
            blocks=tuple(
                pricing.Block(None if b.get("up_to") is None else Decimal(str(b["up_to"])), Decimal(str(b["price"])))
                for b in spec["blocks"]
            ),
            vat_rate=Decimal(str(spec.get("vat_rate", "0"))),
            fixed_monthly=int(spec.get("fixed_monthly", 0)),
            fbe_kwh=Decimal(str(spec.get("fbe_kwh", "0"))),
            minor_units=int(spec.get("minor_units", 100)),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise VendError("invalid_tariff", f"tariff specification is not valid: {exc}") from None


def receipt_json(r: pricing.Receipt, head: Any) -> dict[str, Any]:
    """The itemised receipt: money in minor units, energy in base units (0.1 kWh) and kWh."""
    return {
        "currency": head.currency,
        "paid": r.paid,
        "carried_in": r.carried_in,
        "debt_recovered": r.debt_recovered,
        "fixed_charge": r.fixed_charge,
        "fixed_vat": r.fixed_vat,
        "blocks": [
            {"units": b.units, "kwh": str(Decimal(b.units) / 10), "price": str(b.price), "charge": b.charge}
            for b in r.blocks
        ],
        "energy_charge": r.energy_charge,
        "energy_vat": r.energy_vat,
        "vat": r.fixed_vat + r.energy_vat,
        "leftover": r.leftover,
        "leftover_policy": "carry" if head.carry_leftover else "refund",
        "units": r.units,
        "kwh": str(Decimal(r.units) / 10),
        "fbe_units": r.fbe_units,
    }
