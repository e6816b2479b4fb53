"""How large money and tariff values may be: the service's bounds, stated once.

The API's models refuse most of these before a request reaches the service, but the CLI, the imports and
scripts call the service directly: so the service checks them too, with typed errors. The bounds are wide
enough for any utility (a trillion currency units, a million per kWh) and narrow enough that a typing slip
(a VAT rate of 110 %, a negative charge, a price in cents where currency units were meant for a large
number) is refused rather than sold.

| value | bound | refused with |
|---|---|---|
| money (debt, credit limits, fixed charges) | whole minor units, 0 .. 10^15 | ``invalid_amount`` |
| VAT rate | a fraction, 0 .. 1 (0 % .. 100 %) | ``invalid_vat_rate`` |
| block price | more than 0, at most 10^6 currency units per kWh | ``invalid_tariff`` |
| block limit (``up_to``), free basic electricity | 0 .. 10^9 kWh (a limit more than 0) | ``invalid_tariff`` |
| minor units per currency unit | 1 .. 10^6 | ``invalid_tariff`` |
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import VendError

MAX_MONEY = 10**15  # minor units: the API's Money, and well inside a BIGINT
MAX_VAT_RATE = Decimal(1)
MAX_PRICE = Decimal(10**6)  # currency units per kWh (or m³)
MAX_KWH = Decimal(10**9)
MAX_MINOR_UNITS = 10**6


def money(value: object, field: str) -> int:
    """A whole number of minor units between 0 and MAX_MONEY (``True`` is not a number here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MONEY:
        raise VendError("invalid_amount", f"{field} must be a whole number of minor units from 0 to {MAX_MONEY}")
    return value


def decimal(value: object, field: str, code: str = "invalid_tariff") -> Decimal:
    """A finite decimal number (given as text or a number), or a typed error naming the field."""
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise VendError(code, f"{field} must be a decimal number") from None
    if not out.is_finite():
        raise VendError(code, f"{field} must be a finite decimal number")
    return out


def vat_rate(value: object) -> Decimal:
    rate = decimal(value, "vat_rate", "invalid_vat_rate")
    if not 0 <= rate <= MAX_VAT_RATE:
        raise VendError("invalid_vat_rate", "vat_rate is a fraction from 0 to 1 (0.15 is 15 %)")
    return rate


def check_tariff_spec(spec: object) -> None:
    """Every value of a tariff specification inside its bound (the block structure is pricing's to check)."""
    if not isinstance(spec, dict):
        raise VendError("invalid_tariff", "a tariff specification is an object with blocks")
    vat_rate(spec.get("vat_rate", "0"))
    money(spec.get("fixed_monthly", 0), "fixed_monthly")
    fbe = decimal(spec.get("fbe_kwh", "0"), "fbe_kwh")
    if not 0 <= fbe <= MAX_KWH:
        raise VendError("invalid_tariff", f"fbe_kwh must be from 0 to {MAX_KWH} kWh")
    minor = spec.get("minor_units", 100)
    if not isinstance(minor, int) or isinstance(minor, bool) or not 1 <= minor <= MAX_MINOR_UNITS:
        raise VendError("invalid_tariff", f"minor_units must be a whole number from 1 to {MAX_MINOR_UNITS}")
    blocks: Any = spec.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise VendError("invalid_tariff", "a tariff needs at least one block")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise VendError("invalid_tariff", f"blocks[{i}] must be an object with price and up_to")
        price = decimal(block.get("price"), f"blocks[{i}].price")
        if not 0 < price <= MAX_PRICE:
            raise VendError("invalid_tariff", f"blocks[{i}].price must be more than 0 and at most {MAX_PRICE}")
        if block.get("up_to") is not None:
            up_to = decimal(block["up_to"], f"blocks[{i}].up_to")
            if not 0 < up_to <= MAX_KWH:
                raise VendError("invalid_tariff", f"blocks[{i}].up_to must be more than 0 and at most {MAX_KWH} kWh")
