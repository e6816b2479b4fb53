"""What a customer's and a meter's fields may hold: one table each, read by a single create (the registry)
and by the CSV import (:mod:`.imports`), so both refuse the same values with the same codes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from mita import sts
from mita.sts.identity import check_key_params

from . import bounds, limits
from .errors import VendError
from .lifecycles import Utility


def text(value: str | None, field: str, longest: int, required: bool = True) -> None:
    """Names go into the database and onto receipts: printable, and as long as their column."""
    if value is None or value == "":
        if required:
            raise VendError("invalid_request", f"{field} is required")
        return
    if len(value) > longest or not value.isprintable():
        raise VendError("invalid_request", f"{field} must be printable text of at most {longest} characters")


#: How each field of a customer is checked and stored: ``create_customer`` and the CSV import
#: (:mod:`.imports`) both go through this table, so they refuse the same values with the same codes.
CUSTOMER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "account": lambda v: _text_value(v, "account", limits.ACCOUNT),
    "name": lambda v: _text_value(v, "name", limits.PERSON),
    "phone": lambda v: _text_value(v, "phone", limits.PHONE, required=False),
    "fbe_eligible": lambda v: _flag(v, "fbe_eligible"),
    "debt": lambda v: bounds.money(v, "debt"),
    "debt_rate": lambda v: _debt_rate(v),
}

#: A meter's own fields (the supply group, customer and tariff are looked up; the key configuration is checked
#: against the group by :func:`meter_key`).
METER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "drn": lambda v: sts.MeterNumber.parse(str(v)).drn,
    "utility": lambda v: _utility(v),
    "manufacturer": lambda v: _text_value(v, "manufacturer", limits.LABEL, required=False) or "",
    "area": lambda v: _text_value(v, "area", limits.LABEL, required=False) or "",
    "ti": lambda v: _small(v, "ti"),
}


#: The key configuration a meter may be given (absent: its supply group's), each checked on its own; then
#: :func:`meter_key` checks them together against the group.
METER_KEY_FIELDS: dict[str, Callable[[Any], Any]] = {
    "krn": lambda v: _optional(v, lambda x: _small(x, "krn")),
    "kt": lambda v: _optional(v, lambda x: _small(x, "kt")),
    "ea": lambda v: _optional(v, lambda x: int(sts.EA.parse(x))),
    "base_date": lambda v: _optional(v, lambda x: int(sts.BaseDate.parse(x))),
    "ken": lambda v: _optional(v, _ken),
}


def _optional(value: object, check: Callable[[Any], Any]) -> Any:
    return None if value is None else check(value)


def _ken(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise sts.RangeError("KEN must be 0..255")
    return value


def _text_value(value: object, field: str, longest: int, required: bool = True) -> str | None:
    if value is not None and not isinstance(value, str):
        raise VendError("invalid_request", f"{field} must be text")
    text(value, field, longest, required)
    return value or None


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise VendError("invalid_request", f"{field} must be true or false")
    return value


def _debt_rate(value: object) -> str:
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise VendError("invalid_debt_rate", "debt_rate is a decimal fraction such as 0.25") from None
    if not rate.is_finite() or not 0 <= rate <= 1:
        raise VendError("invalid_debt_rate", "debt_rate must be a fraction from 0 to 1")
    return str(rate)


def _utility(value: object) -> str:
    if value not in tuple(Utility):
        raise VendError("invalid_utility", "utility is electricity, water or gas")
    return str(value)


def _small(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 9999:
        raise VendError("invalid_request", f"{field} must be a whole number from 0 to 9999")
    return value


def customer_row(values: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    """A customers row from checked values (:data:`CUSTOMER_FIELDS`)."""
    return {**values, "carried": 0, "refund_balance": 0, "created_at": at}


def meter_key(
    group: Any,
    *,
    ti: int,
    krn: int | None = None,
    kt: int | None = None,
    ea: int | None = None,
    base_date: int | None = None,
    ken: int | None = None,
) -> dict[str, int]:
    """A new meter's key configuration: what it was given, the supply group's for the rest, checked together."""
    values = dict(
        krn=group.krn if krn is None else krn,
        kt=group.kt if kt is None else kt,
        ea=group.ea if ea is None else int(sts.EA.parse(ea)),
        base_date=group.base_date if base_date is None else int(sts.BaseDate.parse(base_date)),
        ken=group.ken if ken is None else ken,
    )
    check_key_params(values["kt"], group.sgc, ti, values["krn"])
    if not 0 <= values["ken"] <= 255:
        raise sts.RangeError("KEN must be 0..255")
    if values["ea"] == sts.EA.MISTY1 and group.dkga != 4:
        raise VendError("invalid_dkga", "an EA11 meter needs a 128-bit key: its supply group must use DKGA04")
    return values


def meter_row(
    own: dict[str, Any], group: Any, key: dict[str, int], customer_id: int | None, tariff_id: int | None,
    at: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """A meters row from checked values (:data:`METER_FIELDS`, :func:`meter_key`)."""
    return {
        **own, **key, "iin": sts.MeterNumber.parse(own["drn"]).iin, "supply_group_id": group.id,
        "customer_id": customer_id, "tariff_id": tariff_id, "status": "active", "last_tid": -1, "created_at": at,
    }  # fmt: skip
