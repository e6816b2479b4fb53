"""Money to units: the pricing rules of a vend, pure and exact to the minor unit.

All money is an ``int`` of minor units (cents). Prices are ``Decimal`` per
unit (kWh or m3), VAT exclusive. A purchase is split in this order:

1. debt recovery: ``floor(paid * rate)``, at most the debt;
2. the fixed monthly charge (plus its VAT), from the month's first purchase;
3. energy, block by block: each block's units are priced and rounded *up* to
   the cent, so the customer never pays less than the price; the units are
   whole base units (0.1 kWh) and, when the amount field cannot carry the
   exact number (above 1,638.3 kWh it counts in steps), the largest number it
   can carry;
4. VAT on the energy, rounded half up;
5. what is left (less than one more base unit costs, or the units the amount
   field could not carry) is carried to the next purchase or refunded to the
   customer's balance.

So ``paid + carried_in == debt + fixed + fixed_vat + energy + energy_vat +
leftover`` always, and the receipt lists every term.

Inclining blocks count every unit the meter bought in the calendar month,
before this purchase; free basic electricity (FBE) is its own token and does
not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from itertools import pairwise

from mita.sts import decode_amount, encode_amount
from mita.sts.amount import MAX_UNITS

from .errors import VendError

UNITS_PER_KWH = 10  # token base units: 0.1 kWh (0.1 m3 for water and gas)


@dataclass(frozen=True)
class Block:
    """Units up to ``up_to`` (cumulative in the month, kWh; ``None``: no limit) at ``price`` per kWh."""

    up_to: Decimal | None
    price: Decimal


@dataclass(frozen=True)
class Tariff:
    blocks: tuple[Block, ...]
    vat_rate: Decimal = Decimal(0)
    fixed_monthly: int = 0  # minor units, VAT exclusive
    fbe_kwh: Decimal = Decimal(0)  # free basic electricity per month, for eligible customers
    minor_units: int = 100  # minor units per currency unit

    def __post_init__(self) -> None:
        if not self.blocks or self.blocks[-1].up_to is not None:
            raise VendError("invalid_tariff", "a tariff needs blocks, the last one without an upper limit")
        limits = [b.up_to for b in self.blocks[:-1]]
        if any(a is None or a <= 0 for a in limits) or any(
            a is not None and b is not None and a >= b for a, b in pairwise(limits)
        ):
            raise VendError("invalid_tariff", "block limits must be positive and increasing")
        if (
            any(b.price <= 0 for b in self.blocks)
            or self.vat_rate < 0
            or self.fixed_monthly < 0
            or self.minor_units < 1
        ):
            raise VendError("invalid_tariff", "prices must be positive, VAT and charges not negative")


@dataclass(frozen=True)
class Account:
    """What pricing needs to know about the meter and customer this month."""

    month_units: int = 0  # base units bought this calendar month, before this purchase
    first_purchase_of_month: bool = True
    debt: int = 0
    debt_rate: Decimal = Decimal(0)
    carried: int = 0  # leftover of earlier purchases, in minor units
    fbe_eligible: bool = False
    fbe_issued_this_month: bool = False


@dataclass(frozen=True)
class BlockLine:
    units: int  # base units
    price: Decimal  # per kWh
    charge: int  # minor units, VAT exclusive


@dataclass(frozen=True)
class Receipt:
    paid: int
    carried_in: int
    debt_recovered: int
    fixed_charge: int
    fixed_vat: int
    blocks: tuple[BlockLine, ...]
    energy_vat: int
    leftover: int
    units: int  # base units on the credit token
    fbe_units: int = 0  # base units on a separate free token

    @property
    def energy_charge(self) -> int:
        return sum(b.charge for b in self.blocks)

    def check(self) -> None:
        """The receipt's arithmetic, as an invariant: every cent is accounted for."""
        spent = self.debt_recovered + self.fixed_charge + self.fixed_vat + self.energy_charge + self.energy_vat
        if self.paid + self.carried_in != spent + self.leftover or min(self.leftover, self.units) < 0:
            raise AssertionError(f"receipt does not balance: {self}")


def _cents(value: Decimal, minor_units: int, rounding: str) -> int:
    return int((value * minor_units).to_integral_value(rounding=rounding))


def _representable(units: int) -> int:
    """The largest amount at most ``units`` that a token carries exactly."""
    units = min(units, MAX_UNITS)
    field_value = encode_amount(units)
    if decode_amount(field_value) == units:
        return units
    return decode_amount(field_value - 1)


def _fill_blocks(tariff: Tariff, month_units: int, budget: int, vat: Decimal) -> tuple[list[BlockLine], int]:
    """Buy as many base units as ``budget`` (VAT inclusive) affords, cheapest block first."""
    lines: list[BlockLine] = []
    used_units = month_units
    spent = 0
    m = tariff.minor_units
    for block in tariff.blocks:
        room = None if block.up_to is None else int(block.up_to * UNITS_PER_KWH) - used_units
        if room is not None and room <= 0:
            continue
        unit_price = block.price / UNITS_PER_KWH  # per base unit, VAT exclusive
        gross_unit = unit_price * (1 + vat) * m
        # The largest n whose cost (charge rounded up, VAT half up) fits: cost grows with n, so a binary
        # search, bounded by the block and by what one token can carry whatever the price.
        most = MAX_UNITS - (used_units - month_units)
        if room is not None:
            most = min(most, room)
        # Rounding moves the cost of n units by under 2 cents from n times the unit price: the answer lies in
        # the window that slack allows around the plain estimate, most often at it or next to it, so it is
        # looked for there first (two costs worked out, where a bisection of the window took five).
        estimate = int(Decimal(budget - spent) / gross_unit)
        slack = int(2 / gross_unit) + 2
        lo, hi = max(0, estimate - slack), max(0, min(most, estimate + slack))
        n, cost = _largest(lo, hi, min(max(estimate, lo), hi), budget - spent, unit_price, vat, m)
        if n <= 0:
            break
        lines.append(BlockLine(n, block.price, cost[0]))
        spent += cost[1]
        used_units += n
        if room is None or n < room:
            break
    return lines, spent


def _block_cost(n: int, unit_price: Decimal, vat: Decimal, m: int) -> tuple[int, int]:
    """``n`` units' charge (VAT exclusive, rounded up) and their cost (with the VAT, rounded half up)."""
    charge = _cents(n * unit_price, m, ROUND_CEILING)
    return charge, charge + _cents(Decimal(charge) * vat / m, m, ROUND_HALF_UP)


def _largest(
    lo: int, hi: int, start: int, budget: int, unit_price: Decimal, vat: Decimal, m: int
) -> tuple[int, tuple[int, int]]:
    """The most units in ``0..hi`` whose cost fits ``budget``, with their charge and cost: looked for at ``start``
    and next to it first (where the estimate puts it, most often), then by bisection of ``lo..hi`` (of ``0..hi``
    if even ``lo`` is too dear). Costs grow with the units."""
    cost = _block_cost(start, unit_price, vat, m)
    if cost[1] <= budget:
        if start == hi:
            return start, cost
        more = _block_cost(start + 1, unit_price, vat, m)
        if more[1] > budget:
            return start, cost
        lo = start + 1
    else:
        if start > lo:
            less = _block_cost(start - 1, unit_price, vat, m)
            if less[1] <= budget:
                return start - 1, less
        hi = start - 1
        if lo > hi or _block_cost(lo, unit_price, vat, m)[1] > budget:
            lo = 0  # no units cost nothing: 0 always fits
    while lo < hi:  # lo fits
        mid = (lo + hi + 1) // 2
        if _block_cost(mid, unit_price, vat, m)[1] <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo, _block_cost(lo, unit_price, vat, m)


def price(tariff: Tariff, paid: int, account: Account, carry_leftover: bool = True) -> Receipt:
    """Split ``paid`` minor units into a receipt. Raises ``VendError`` when it buys nothing."""
    if paid <= 0:
        raise VendError("invalid_amount", "the amount paid must be positive")
    m = tariff.minor_units
    vat = tariff.vat_rate
    carried_in = account.carried if carry_leftover else 0
    debt = min(account.debt, _cents(Decimal(paid) * account.debt_rate / m, m, ROUND_FLOOR))
    available = paid + carried_in - debt
    fixed = tariff.fixed_monthly if account.first_purchase_of_month else 0
    fixed_vat = _cents(Decimal(fixed) * vat / m, m, ROUND_HALF_UP)
    if fixed + fixed_vat > available:
        raise VendError(
            "amount_too_small", f"the amount does not cover the monthly fixed charge of {fixed + fixed_vat}"
        )
    available -= fixed + fixed_vat

    lines, _ = _fill_blocks(tariff, account.month_units, available, vat)
    units = sum(b.units for b in lines)
    exact = _representable(units)
    if exact < units:  # drop the excess from the last (dearest) blocks
        excess = units - exact
        trimmed: list[BlockLine] = []
        for line in reversed(lines):
            drop = min(excess, line.units)
            excess -= drop
            if line.units - drop:
                n = line.units - drop
                trimmed.append(BlockLine(n, line.price, _cents(n * line.price / UNITS_PER_KWH, m, ROUND_CEILING)))
        lines = list(reversed(trimmed))
        units = exact
    if units <= 0:
        raise VendError("amount_too_small", "the amount does not buy a single unit (0.1 kWh)")
    energy = sum(b.charge for b in lines)
    energy_vat = sum(_cents(Decimal(b.charge) * vat / m, m, ROUND_HALF_UP) for b in lines)
    leftover = available - energy - energy_vat
    fbe = 0
    if account.fbe_eligible and not account.fbe_issued_this_month and tariff.fbe_kwh > 0:
        fbe = _representable(int(tariff.fbe_kwh * UNITS_PER_KWH))
    receipt = Receipt(
        paid=paid,
        carried_in=carried_in,
        debt_recovered=debt,
        fixed_charge=fixed,
        fixed_vat=fixed_vat,
        blocks=tuple(lines),
        energy_vat=energy_vat,
        leftover=leftover,
        units=units,
        fbe_units=fbe,
    )
    receipt.check()
    return receipt
