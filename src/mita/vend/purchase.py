"""Purchases: quotes and vends.

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
import json
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import psycopg
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from mita import sts
from mita.sts import recipes
from mita.sts.recipes import KeyConfig

from . import hotpath, pricing, remote
from .answers import (
    check_amount,
    ledger_lines,
    month_of,
    new_vend_id,
    reading,
    receipt_json,
    request_hash,
    same_key,
    tariff_from_spec,
    token_row,
    vend_response,
)
from .callers import Caller
from .desk import Desk, Issued
from .errors import VendError, database_failure
from .jsontext import json_text
from .keyring import KeyInfo, check_issuable, expiry_warnings
from .lifecycles import KEY_CHANGE
from .schema import (
    campaigns,
    idempotency,
    key_changes,
    tariff_versions,
    vending_keys,
    vendors,
)
from .walltime import with_offset


class NeedsSql(BaseException):
    """Raised by :data:`NO_SQL` when a sale needs a statement; a BaseException, so that no ``except Exception``
    on the way mistakes it for a failure of its own."""


class _NoSql:
    """A connection that runs nothing: any use raises :class:`NeedsSql` (the event loop's path then gives the
    vend to the thread's)."""

    def __getattr__(self, name: str) -> Any:
        raise NeedsSql(name)


NO_SQL: Connection = _NoSql()  # type: ignore[assignment]


_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # made once, not per call


def encoded(answer: dict[str, Any]) -> str:
    """The answer as JSON, once: stored for a replay and sent as the body. Compact, UTF-8 as it is, no NaN:
    the bytes Starlette's ``JSONResponse`` would make of it. The standard library's encoder, which refuses a
    NaN (orjson would write null): every value the vend's other documents hold is in its answer too, so this
    is their check as well (:mod:`.jsontext`)."""
    return _COMPACT.encode(answer)


@dataclass(frozen=True)
class Answered(Issued):
    """A new vend's answer with its body already encoded (:func:`encoded`), so that the route sends these bytes
    instead of encoding the answer a second time."""

    text: str = ""


@dataclass
class Sale:
    """A vend worked out with its meter locked: the answer, the rows to write, and what the writes after them
    (a connected meter's delivery, a key change's record) need."""

    response: dict[str, Any]
    text: str  # the response encoded (stored with the key, and the body sent)
    writes: list[hotpath.Write]
    made: list[dict[str, Any]]
    pending: bool
    connected: bool
    current: KeyConfig
    cfg: KeyConfig

    @property
    def final(self) -> bool:
        """Whether the rows of ``writes`` are the transaction's last (its COMMIT can go with them)."""
        return not (self.pending or self.connected)


class Purchases(Desk):
    # ------------------------------------------------------------------ quote

    def quote(self, caller: Caller, drn: str, amount: int) -> dict[str, Any]:
        """What ``amount`` would buy now: no token, no change."""
        check_amount(amount)
        number = sts.MeterNumber.parse(drn)
        at = self.clock()
        with self.engine.connect() as conn:
            found = hotpath.read_meter(conn, reading(number.drn, at, caller))
            if found is None:
                raise VendError("not_found", f"no meter {number.drn}")
            meter = SimpleNamespace(**found)
            receipt = self._price(conn, meter, amount, at)
        return {"meter": meter.drn, "receipt": receipt_json(receipt, meter), "quoted_at": with_offset(at)}

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

    def vend(self, caller: Caller, key: str, body: dict[str, Any]) -> Issued:
        """Sell credit, exactly once per (caller, idempotency key): the answer, or the one first given for it."""
        digest, drn = self._checked(caller, key, body)
        at = self.clock()
        try:
            with self.engine.begin() as conn:
                claimed, meter = hotpath.claim_and_load(
                    conn,
                    {"api_key_id": caller.api_key_id, "key": key, "hash": digest, "at": at},
                    reading(drn, at, caller),
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
            return Issued(response)
        except (DBAPIError, psycopg.Error) as exc:
            # a lost connection or a serialisation failure: nothing was committed, or we cannot know, and a
            # retry with the same key is safe (503 retry); a refusal that would repeat is not worth retrying
            raise database_failure(exc, "retry", "retry with the same Idempotency-Key") from None

    async def vend_async(self, caller: Caller, key: str, body: dict[str, Any]) -> Issued | None:
        """:meth:`vend` on the event loop, for the common case; None when :meth:`vend` must do it (in a thread).

        The common case is a keypad meter with no key change due, no credit limit to charge, and its tariff
        version and vending key already in this process's caches: then the vend is two round trips on a
        connection of :class:`hotpath.AsyncPool` (claim, lock and read; write and commit) and the Python between
        them, with no thread and no SQLAlchemy. Anything else (a replay, a missing meter, a connected meter, a
        statement ``_sale`` would need) rolls back what this began, so nothing of it remains, and answers None.
        Refusals and database failures are raised as :meth:`vend` raises them.
        """
        pool = hotpath.AsyncPool.of(self.engine)
        if pool is None:
            return None
        digest, drn = self._checked(caller, key, body)
        conn, done = await pool.take(), False
        try:
            at = self.clock()
            claimed, meter = await hotpath.claim_and_load_async(
                conn, {"api_key_id": caller.api_key_id, "key": key, "hash": digest, "at": at}, reading(drn, at, caller)
            )
            if meter is None or not claimed or meter["connected"]:
                return None
            try:
                sale = self._sale(NO_SQL, caller, key, body, SimpleNamespace(**meter), at)
            except NeedsSql:
                return None
            if not sale.final:  # (a connected meter was sent back above; a key change needs SQL)
                return None
            await hotpath.run_async(conn, sale.writes)
            done = True
            return Answered(sale.response, text=sale.text)
        except psycopg.Error as exc:
            raise database_failure(exc, "retry", "retry with the same Idempotency-Key") from None
        finally:
            await pool.give(conn, committed=done)

    @staticmethod
    def _checked(caller: Caller, key: str, body: dict[str, Any]) -> tuple[str, str]:
        """What is refused before any database work; the request's hash and the meter number."""
        caller.require("admin", "operator", "vendor")
        if caller.api_key_id is None:
            raise VendError("forbidden", "vends are made with an API key, so that retries can be matched")
        if not key or len(key) > 200:
            raise VendError("invalid_idempotency_key", "an Idempotency-Key header of 1..200 characters is required")
        digest = request_hash(body)
        drn = sts.MeterNumber.parse(str(body.get("meter", ""))).drn  # a wrong check digit costs no database work
        check_amount(body.get("amount"))
        return digest, drn

    def _vend_locked(
        self, conn: Connection, caller: Caller, key: str, body: dict[str, Any], meter: Any, at: dt.datetime
    ) -> dict[str, Any]:
        """The vend itself, with the key claimed and the meter's row (``hotpath`` "load") locked."""
        sale = self._sale(conn, caller, key, body, meter, at)
        hotpath.run(conn, sale.writes, commit=sale.final)
        if sale.final:
            return sale.response
        response, vend_id, made = sale.response, sale.response["id"], sale.made
        if meter.connected:
            # The command's id is known only now, after the answer was stored with the vend: the stored answer is
            # written again with it, so that a replay is the same answer. The meter's read said it is connected,
            # so the delivery does not ask again: the statement count is the one it always was.
            command = remote.queue_delivery(
                conn, meter.id, meter.drn, vend_id, [t["digits"] for t in made], actor=caller.name, at=at,
                expiry=self.ctx.delivery_expiry, purpose="purchase", is_connected=True,
            )  # fmt: skip
            response["delivery"] = remote.queued(command)
            conn.execute(
                update(idempotency)
                .where(idempotency.c.api_key_id == caller.api_key_id, idempotency.c.key == key)
                .values(response=response)
            )
        if sale.pending:
            self._key_change_delivered(conn, meter.id, sale.current, sale.cfg, made, vend_id, at)
        return response

    def _sale(
        self, conn: Connection, caller: Caller, key: str, body: dict[str, Any], meter: Any, at: dt.datetime
    ) -> Sale:
        """Price, tokens, the answer and the rows to write, for a meter read (and locked) by ``hotpath``.

        Its statements (a tariff or key not cached yet, a key change, a credit limit) go through ``conn``:
        :data:`NO_SQL` in :meth:`vend_async`, where any of them means the thread's path.
        """
        amount: int = body["amount"]
        if meter.status != "active":
            raise VendError("meter_blocked", f"meter {meter.drn} is {meter.status}")
        month = month_of(at)
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
            made.append(token_row(what, token, sts.encode(token, ea, decoder_key), units))

        if meter.credit_limit is not None:  # a vendor on credit: its row is locked and its limit holds
            self._charge_vendor(conn, caller, receipt.paid)
        if vk.credit_limit is not None:
            self._charge_key(conn, vk.id, receipt.units + receipt.fbe_units)
        vend_id = new_vend_id()
        receipt_doc = receipt_json(receipt, meter)
        response = vend_response(vend_id, meter.drn, at, made, receipt_doc)
        key_doc = cfg.as_dict()
        response["key"] = key_doc
        response["warnings"] = expiry_warnings(at, vk.issued_until, cfg.ken, cfg.base_date, cfg.kt, self.ctx.warn_days)
        response["delivery"] = None  # a keypad meter's: the receipt is the delivery (a connected one's: below)
        text = encoded(response)
        ids = {"vend_id": vend_id, "meter_id": meter.id, "at": at}
        vend_row = {
            "id": vend_id,
            "vendor_id": caller.vendor_id,
            "api_key_id": caller.api_key_id,
            "meter_id": meter.id,
            "customer_id": meter.customer_id,
            "amount": amount,
            "units": receipt.units + receipt.fbe_units,
            "receipt": json_text({**receipt_doc, "key": key_doc}),  # the key, for a reversal to find
            "at": at,
        }
        if pending:
            state = {**(meter.pending_key or {}), **cfg.as_dict(), "last_tid": tids[-1]}
            meter_write: hotpath.Write = ("meter_pending", {"id": meter.id, "pending": json_text(state)})
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
            ("audit", {**ids, "actor": caller.name, "detail": json_text(summary)}),
            (
                "outbox",
                {**ids, "recipient": meter.drn, "dedupe_key": f"receipt:{vend_id}", "payload": json_text(delivery)},
            ),
            (
                "answer",
                {"response": text, "vend_id": vend_id, "api_key_id": caller.api_key_id, "key": key},
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
        return Sale(response, text, writes, made, pending, bool(meter.connected), current, cfg)

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
            .where(key_changes.c.meter_id == meter_id, key_changes.c.status.in_(KEY_CHANGE.open))
        ).all()
        want = new.as_dict()
        same = [r.id for r in rows if same_key({k: v for k, v in (r.to_key or r.target or {}).items()
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
        tariff = self.ctx.tariffs.get(version_id)
        if tariff is None:
            spec = conn.execute(select(tariff_versions.c.spec).where(tariff_versions.c.id == version_id)).scalar_one()
            tariff = self.ctx.tariffs[version_id] = tariff_from_spec(spec)
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
