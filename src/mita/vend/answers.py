"""The vending service's plain functions: ledger lines, receipts and answers, checks that need no database.

Two conventions every answer follows, kept here in one place:

* **Times** are stored as the utility's wall clock without a zone (like the meters' TIDs); they go out as
  RFC 3339 with that wall clock's offset (:func:`mita.vend.walltime.with_offset`).
* **Quantities** are counted in token base units, a tenth of the unit the meter measures (0.1 kWh, 0.1 m³); a
  receipt names that unit (:data:`UNIT`) beside the decimal quantity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.dialects import postgresql, sqlite

from mita import sts
from mita.sts.recipes import KeyConfig

from . import pricing
from .callers import Caller
from .errors import VendError
from .walltime import with_offset

MAX_AMOUNT = 10**11  # minor units: a billion in currency units is absurd for one vend

#: What a meter of each utility measures; a token's base unit is a tenth of it (STS: 0.1 kWh, 0.1 m³).
UNIT = {"electricity": "kWh", "water": "m³", "gas": "m³"}
BASE_UNITS_PER_UNIT = 10


def quantity(units: int) -> str:
    """Base units as decimal text in the meter's unit (35 -> ``"3.5"``, 30 -> ``"3"``): what
    ``str(Decimal(units) / 10)`` writes, for the amounts a token carries, without a Decimal."""
    whole, tenths = divmod(units, BASE_UNITS_PER_UNIT)
    if units < 0 or whole >= 10**26:  # not a token's amount: as Decimal writes it (signs, exponents)
        return str(Decimal(units) / BASE_UNITS_PER_UNIT)
    return f"{whole}.{tenths}" if tenths else str(whole)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # made once, not per call


def new_vend_id(raw: bytes | None = None) -> str:
    """A new vend's id: a random (version 4) UUID as text, from 16 random bytes (``raw``, for tests).

    What ``str(uuid.uuid4())`` makes, in a fifth of the time: the ``UUID`` class checks and converts its input
    in Python, and fresh random bytes need neither."""
    b = bytearray(os.urandom(16) if raw is None else raw)
    b[6] = b[6] & 0x0F | 0x40  # version 4
    b[8] = b[8] & 0x3F | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_rnd() -> int:
    """A token's 4-bit random number (RND), from the system's random source: the low half of a random byte (what
    ``secrets.randbelow(16)`` gives, in a quarter of the time)."""
    return os.urandom(1)[0] & 0x0F


def month_of(at: dt.datetime) -> str:
    """The calendar month a vend counts in (``2026-12``): the key of its meter's month row (``strftime`` took
    three times as long)."""
    return f"{at.year:04d}-{at.month:02d}"


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(_CANONICAL.encode(body).encode()).hexdigest()


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


def same_key(target: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether a key configuration (as stored with a vend) is ``config``, on the fields both name."""
    fields = [k for k in KeyConfig.__dataclass_fields__ if k in target and k in config]
    return bool(fields) and all(target[k] == config[k] for k in fields)


def last_tid(meter: Any, cfg: KeyConfig) -> int:
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


def reading(drn: str, at: dt.datetime, caller: Caller) -> dict[str, Any]:
    return {"drn": drn, "month": month_of(at), "at": at, "vendor_id": caller.vendor_id}


def same_seller(caller: Caller, row: Row[Any]) -> bool:
    """A vendor's tills see each other's sales; nobody else's."""
    if caller.vendor_id is not None:
        return bool(row.vendor_id == caller.vendor_id)
    return bool(row.api_key_id == caller.api_key_id)


def check_amount(amount: object) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise VendError("invalid_amount", "amount must be an integer number of minor units (cents)")
    if not 0 < amount <= MAX_AMOUNT:
        raise VendError("invalid_amount", f"amount must be between 1 and {MAX_AMOUNT} minor units")


def token_row(kind: str, token: sts.Token, digits: str, units: int) -> dict[str, Any]:
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
        "created_at": with_offset(at),
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
    """The itemised receipt: money in minor units; what was bought in base units, and as ``quantity`` in the
    ``unit`` the meter measures (``head.utility``). ``kwh`` repeats the quantity for electricity meters only:
    a water meter's 3 m³ is not 3 kWh."""
    utility = getattr(head, "utility", None) or "electricity"
    unit = UNIT[utility]

    def amount(units: int) -> dict[str, Any]:
        out: dict[str, Any] = {"units": units, "quantity": quantity(units), "unit": unit}
        if utility == "electricity":
            out["kwh"] = out["quantity"]
        return out

    return {
        "currency": head.currency,
        "paid": r.paid,
        "carried_in": r.carried_in,
        "debt_recovered": r.debt_recovered,
        "fixed_charge": r.fixed_charge,
        "fixed_vat": r.fixed_vat,
        "blocks": [{**amount(b.units), "price": str(b.price), "charge": b.charge} for b in r.blocks],
        "energy_charge": r.energy_charge,
        "energy_vat": r.energy_vat,
        "vat": r.fixed_vat + r.energy_vat,
        "leftover": r.leftover,
        "leftover_policy": "carry" if head.carry_leftover else "refund",
        **amount(r.units),
        "fbe_units": r.fbe_units,
    }
