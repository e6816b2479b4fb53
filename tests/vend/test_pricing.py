"""The pricing rules of a vend (mita.vend.pricing), one rule at a time, with no database.

The rules are the ones ``mita.vend.pricing``'s docstring states: debt first (a rate of the amount paid, at most
the debt), then the month's fixed charge and its VAT on the month's first purchase, then energy block by block
(each block's charge rounded up to the cent, its VAT rounded half up), free basic electricity as its own token
once a month, units the STS amount field can carry exactly, and a leftover carried or refunded so that no cent
is lost. Most tests use a VAT-free tariff with round prices so that the expected receipt can be worked out by
hand; Hypothesis then checks the invariants over random tariffs, amounts and accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mita.sts import decode_amount, encode_amount
from mita.sts.amount import MAX_UNITS
from mita.vend.errors import VendError
from mita.vend.pricing import (
    UNITS_PER_KWH,
    Account,
    Block,
    BlockLine,
    Receipt,
    Tariff,
    _block_cost,
    _fill_blocks,
    price,
)

D = Decimal

#: 10 kWh at 1.00, the next 10 kWh at 2.00, then 4.00: 10c, 20c and 40c per base unit (0.1 kWh), no VAT.
STEPS = Tariff((Block(D(10), D("1.00")), Block(D(20), D("2.00")), Block(None, D("4.00"))))
#: A realistic domestic tariff: three inclining blocks, 15% VAT, a fixed monthly charge and 50 kWh FBE.
DOMESTIC = Tariff(
    (Block(D(50), D("1.10")), Block(D(350), D("2.00")), Block(None, D("3.15"))),
    vat_rate=D("0.15"),
    fixed_monthly=2000,
    fbe_kwh=D(50),
)
#: One block, 1.00 per kWh: 10c per base unit.
FLAT = Tariff((Block(None, D("1.00")),))
MID_MONTH = Account(first_purchase_of_month=False)


def lines(receipt: Receipt) -> list[tuple[int, str, int]]:
    """A receipt's block lines as (units, price, charge), easy to compare."""
    return [(b.units, str(b.price), b.charge) for b in receipt.blocks]


def half_up(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def balances(r: Receipt) -> bool:
    """paid + carried_in == debt + fixed + fixed VAT + energy + energy VAT + leftover, to the cent."""
    spent = r.debt_recovered + r.fixed_charge + r.fixed_vat + r.energy_charge + r.energy_vat
    return r.paid + r.carried_in == spent + r.leftover


def representable(units: int) -> bool:
    return decode_amount(encode_amount(units)) == units


# ---------------------------------------------------------------------------------------------- inclining blocks


def test_purchase_within_the_first_block() -> None:
    r = price(STEPS, 500, MID_MONTH)
    assert lines(r) == [(50, "1.00", 500)]
    assert (r.units, r.leftover, r.energy_vat) == (50, 0, 0)


@pytest.mark.parametrize(
    ("month_units", "expected"),
    [
        (0, [(50, "1.00", 500)]),
        (60, [(40, "1.00", 400), (5, "2.00", 100)]),  # 40 units left in block 1
        (100, [(25, "2.00", 500)]),  # block 1 exactly full: start in block 2
        (150, [(25, "2.00", 500)]),
        (199, [(1, "2.00", 20), (12, "4.00", 480)]),
        (200, [(12, "4.00", 480)]),  # blocks 1 and 2 full: only the last block is left
        (10_000, [(12, "4.00", 480)]),
    ],
)
def test_units_bought_earlier_in_the_month_move_the_starting_block(
    month_units: int, expected: list[tuple[int, str, int]]
) -> None:
    r = price(STEPS, 500, Account(month_units=month_units, first_purchase_of_month=False))
    assert lines(r) == expected
    assert r.units == sum(u for u, _, _ in expected)
    assert r.leftover == 500 - sum(c for _, _, c in expected)


def test_a_purchase_spanning_two_blocks() -> None:
    r = price(STEPS, 1500, Account(month_units=50, first_purchase_of_month=False))
    assert lines(r) == [(50, "1.00", 500), (50, "2.00", 1000)]
    assert (r.units, r.leftover) == (100, 0)


def test_a_purchase_spanning_three_blocks() -> None:
    r = price(STEPS, 2900 + 15, Account(month_units=50, first_purchase_of_month=False))
    assert lines(r) == [(50, "1.00", 500), (100, "2.00", 2000), (10, "4.00", 400)]
    assert (r.units, r.leftover) == (160, 15)


def test_several_purchases_in_a_month_climb_the_blocks() -> None:
    month_units, seen = 0, list[list[tuple[int, str, int]]]()
    for paid in (700, 700, 2000, 400):
        r = price(STEPS, paid, Account(month_units=month_units, first_purchase_of_month=not seen))
        seen.append(lines(r))
        month_units += r.units
    assert seen == [
        [(70, "1.00", 700)],
        [(30, "1.00", 300), (20, "2.00", 400)],
        [(80, "2.00", 1600), (10, "4.00", 400)],
        [(10, "4.00", 400)],
    ]
    assert month_units == 220


def test_month_rollover_starts_again_at_the_first_block_with_the_fixed_charge() -> None:
    late_march = price(DOMESTIC, 10_000, Account(month_units=1000, first_purchase_of_month=False))
    assert late_march.fixed_charge == 0
    assert [b.price for b in late_march.blocks] == [D("2.00")]
    april = price(DOMESTIC, 10_000, Account())  # the new month: no units yet, first purchase
    assert (april.fixed_charge, april.fixed_vat) == (2000, 300)
    assert april.blocks[0].price == D("1.10")
    # 10000 - 2300 fixed = 7700; block 1: 500 units, 5500c + 825c VAT; the 1375c left buy 59 units of block 2
    # at 23c with VAT (1180c + 177c VAT), and 18c are left over
    assert lines(april) == [(500, "1.10", 5500), (59, "2.00", 1180)]
    assert (april.energy_vat, april.leftover) == (825 + 177, 18)


# ---------------------------------------------------------------------------------------------- fixed charge


def test_fixed_charge_and_its_vat_on_the_first_purchase_of_the_month_only() -> None:
    first = price(DOMESTIC, 5000, Account())
    second = price(DOMESTIC, 5000, Account(month_units=first.units, first_purchase_of_month=False))
    assert (first.fixed_charge, first.fixed_vat) == (2000, 300)
    assert (second.fixed_charge, second.fixed_vat) == (0, 0)
    assert second.units > first.units  # the same money buys more once the month's charge is paid


def test_amount_that_covers_only_the_fixed_charge_is_too_small() -> None:
    for paid in (1, 2299, 2300, 2300 + 12):  # 2300 = fixed + VAT; one base unit costs 12.65c with VAT
        with pytest.raises(VendError) as exc:
            price(DOMESTIC, paid, Account())
        assert exc.value.code == "amount_too_small"
    assert price(DOMESTIC, 2300 + 13, Account()).units == 1


def test_amount_too_small_for_a_single_unit() -> None:
    with pytest.raises(VendError) as exc:
        price(STEPS, 9, MID_MONTH)  # one base unit costs 10c
    assert exc.value.code == "amount_too_small"
    assert price(STEPS, 10, MID_MONTH).units == 1


# ---------------------------------------------------------------------------------------------- debt recovery


@pytest.mark.parametrize(
    ("paid", "debt", "rate", "recovered"),
    [
        (10_000, 5_000, "0.2", 2_000),  # the rate
        (10_000, 1_500, "0.2", 1_500),  # capped at the debt
        (10_000, 0, "0.2", 0),
        (10_000, 5_000, "0", 0),
        (999, 5_000, "0.25", 249),  # 249.75: floored, the customer is never over-charged
        (1_000, 10**6, "0.5", 500),
    ],
)
def test_debt_recovery_is_capped_at_the_rate_and_at_the_debt(paid: int, debt: int, rate: str, recovered: int) -> None:
    r = price(FLAT, paid, Account(first_purchase_of_month=False, debt=debt, debt_rate=D(rate)))
    assert r.debt_recovered == recovered
    assert r.units == (paid - recovered) // 10
    assert balances(r)


def test_debt_at_the_full_rate_leaves_nothing_to_buy_with() -> None:
    with pytest.raises(VendError) as exc:
        price(STEPS, 1000, Account(first_purchase_of_month=False, debt=10**6, debt_rate=D(1)))
    assert exc.value.code == "amount_too_small"


def test_debt_is_recovered_from_the_amount_paid_not_from_the_carried_leftover() -> None:
    r = price(STEPS, 1000, Account(first_purchase_of_month=False, debt=10**6, debt_rate=D(1), carried=100))
    assert (r.debt_recovered, r.carried_in, r.units, r.leftover) == (1000, 100, 10, 0)


# ---------------------------------------------------------------------------------------------- free basic electricity


@pytest.mark.parametrize(
    ("eligible", "issued", "fbe_units"),
    [(True, False, 500), (True, True, 0), (False, False, 0), (False, True, 0)],
)
def test_fbe_only_for_eligible_customers_and_once_a_month(eligible: bool, issued: bool, fbe_units: int) -> None:
    account = Account(fbe_eligible=eligible, fbe_issued_this_month=issued)
    r = price(DOMESTIC, 10_000, account)
    plain = price(DOMESTIC, 10_000, Account())
    assert r.fbe_units == fbe_units
    # FBE is free and apart: it changes neither the money nor the credit token
    assert (r.units, r.blocks, r.energy_vat, r.leftover) == (
        plain.units,
        plain.blocks,
        plain.energy_vat,
        plain.leftover,
    )


def test_no_fbe_when_the_tariff_has_none() -> None:
    assert price(STEPS, 1000, Account(fbe_eligible=True)).fbe_units == 0


def test_fbe_does_not_count_towards_the_blocks() -> None:
    r = price(DOMESTIC, 10_000, Account(fbe_eligible=True))
    assert r.fbe_units == 500
    assert sum(b.units for b in r.blocks) == r.units  # the credit token's units only


def test_fbe_units_are_representable_by_the_amount_field() -> None:
    # A (generous) 2,000 kWh allowance: 20,000 base units is not a value the amount field carries (above
    # 16,383 it counts in tens), so the FBE token would be rounded *up* on encoding and the meter would get
    # more than the receipt says. Like the credit units, the FBE units must be a value the token carries.
    tariff = Tariff((Block(None, D("1.00")),), fbe_kwh=D(2000))
    r = price(tariff, 1000, Account(fbe_eligible=True))
    assert r.fbe_units > 0
    assert representable(r.fbe_units), (
        f"FBE of {r.fbe_units} base units encodes as {decode_amount(encode_amount(r.fbe_units))}"
    )


# ---------------------------------------------------------------------------------------------- VAT and rounding


def test_fixed_charge_vat_is_rounded_half_up() -> None:
    vat = D("0.15")
    blocks = (Block(None, D("1.00")),)
    assert price(Tariff(blocks, vat_rate=vat, fixed_monthly=1010), 10_000, Account()).fixed_vat == 152  # 151.5
    assert price(Tariff(blocks, vat_rate=vat, fixed_monthly=1003), 10_000, Account()).fixed_vat == 150  # 150.45
    assert price(Tariff(blocks, vat_rate=vat, fixed_monthly=1017), 10_000, Account()).fixed_vat == 153  # 152.55


def test_energy_vat_is_rounded_half_up_per_block() -> None:
    # 1 kWh at 0.50 (5c a unit), then 1.50 (15c a unit); VAT 1%. Block 1: 10 units, 50c, VAT 0.5 -> 1;
    # block 2: 10 units, 150c, VAT 1.5 -> 2. Per block: 3c of VAT (rounding the 200c total would give 2c).
    tariff = Tariff((Block(D(1), D("0.50")), Block(None, D("1.50"))), vat_rate=D("0.01"))
    r = price(tariff, 203, MID_MONTH)
    assert lines(r) == [(10, "0.50", 50), (10, "1.50", 150)]
    assert (r.energy_vat, r.leftover) == (3, 0)


def test_energy_charge_is_rounded_up_so_the_customer_never_pays_less_than_the_price() -> None:
    tariff = Tariff((Block(None, D("1.234")),))  # 12.34c per base unit
    r = price(tariff, 100, MID_MONTH)
    assert lines(r) == [(8, "1.234", 99)]  # 98.72c rounded up
    assert r.leftover == 1


def test_energy_vat_half_up_on_the_rounded_charge() -> None:
    tariff = Tariff((Block(None, D("1.234")),), vat_rate=D("0.15"))
    r = price(tariff, 200, MID_MONTH)
    assert lines(r) == [(14, "1.234", 173)]  # 172.76 -> 173
    assert (r.energy_vat, r.leftover) == (26, 1)  # 25.95 -> 26


def test_the_leftover_cannot_buy_one_more_base_unit() -> None:
    # 0.274/kWh + 16% VAT. 2301c buys 724 units: ceil(724 x 2.74c) = 1984c, VAT 317.44 -> 317c, total 2301c.
    # The docstring: the leftover is "less than one more base unit costs".
    tariff = Tariff((Block(None, D("0.274")),), vat_rate=D("0.16"))
    r = price(tariff, 2301, MID_MONTH)
    assert (r.units, r.leftover) == (724, 0), f"got {r.units} units and {r.leftover}c left over"


def test_an_amount_that_buys_one_unit_is_not_too_small() -> None:
    # 1.00/kWh + 4% VAT: one base unit costs 10c + VAT 0.4 -> 0c = 10c, so 10c buys it.
    tariff = Tariff((Block(None, D("1.00")),), vat_rate=D("0.04"))
    r = price(tariff, 10, MID_MONTH)
    assert (r.units, r.energy_vat, r.leftover) == (1, 0, 0)


# ---------------------------------------------------------------------------------------------- the amount field


def test_units_above_1638_3_kwh_are_the_largest_value_the_amount_field_carries() -> None:
    # 16,385 units at 10c would be 163,850c; above 16,383 the field counts in tens: 16,384 is carried
    r = price(FLAT, 163_850, MID_MONTH)
    assert r.units == 16_384
    assert representable(r.units)
    assert lines(r) == [(16_384, "1.00", 163_840)]
    assert r.leftover == 10


def test_units_the_field_cannot_carry_are_dropped_from_the_dearest_blocks() -> None:
    # block 1 ends at 16,385 units; 3 more units in block 2 make 16,388, which the field cannot carry: the
    # 3 units of block 2 and 1 unit of block 1 are dropped (16,384), and their money is the leftover
    tariff = Tariff((Block(D("1638.5"), D("1.00")), Block(None, D("2.00"))))
    paid = 163_850 + 3 * 20
    r = price(tariff, paid, MID_MONTH)
    assert lines(r) == [(16_384, "1.00", 163_840)]
    assert (r.units, r.leftover) == (16_384, paid - 163_840)


def test_units_are_capped_at_the_largest_amount_a_token_carries() -> None:
    tariff = Tariff((Block(None, D("0.01")),))  # 0.1c per base unit
    r = price(tariff, 10**9, MID_MONTH)
    assert r.units == MAX_UNITS
    assert representable(r.units)
    assert r.leftover > 0 and balances(r)


@pytest.mark.parametrize("units", [16_383, 16_384, 16_390, 16_394, 180_214, 180_220, 180_224, 1_000_003, 1_811_000])
def test_large_purchases_give_representable_units(units: int) -> None:
    r = price(FLAT, units * 10, MID_MONTH)  # 10c per base unit
    assert representable(r.units)
    assert r.units <= units
    assert not any(representable(u) for u in range(r.units + 1, units + 1))  # the largest one
    assert r.leftover == (units - r.units) * 10


# ---------------------------------------------------------------------------------------------- carry or refund


def test_carried_leftover_is_spent_on_the_next_purchase() -> None:
    r = price(STEPS, 495, Account(first_purchase_of_month=False, carried=7), carry_leftover=True)
    assert (r.carried_in, r.units, r.leftover) == (7, 50, 2)


def test_refund_policy_ignores_the_carried_balance() -> None:
    r = price(STEPS, 495, Account(first_purchase_of_month=False, carried=7), carry_leftover=False)
    assert (r.carried_in, r.units, r.leftover) == (0, 49, 5)


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Tariff(()), id="no-blocks"),
        pytest.param(lambda: Tariff((Block(D(50), D(1)),)), id="last-block-with-limit"),
        pytest.param(lambda: Tariff((Block(D(50), D(1)), Block(D(100), D(2)))), id="last-of-two-with-limit"),
        pytest.param(lambda: Tariff((Block(D(50), D(1)), Block(D(50), D(2)), Block(None, D(3)))), id="equal-limits"),
        pytest.param(lambda: Tariff((Block(D(90), D(1)), Block(D(50), D(2)), Block(None, D(3)))), id="decreasing"),
        pytest.param(lambda: Tariff((Block(None, D(1)), Block(None, D(2)))), id="middle-block-no-limit"),
        pytest.param(lambda: Tariff((Block(D(0), D(1)), Block(None, D(2)))), id="zero-limit"),
        pytest.param(lambda: Tariff((Block(D(-5), D(1)), Block(None, D(2)))), id="negative-limit"),
        pytest.param(lambda: Tariff((Block(None, D(0)),)), id="zero-price"),
        pytest.param(lambda: Tariff((Block(D(50), D(0)), Block(None, D(2)))), id="zero-price-first-block"),
        pytest.param(lambda: Tariff((Block(None, D("-1.00")),)), id="negative-price"),
        pytest.param(lambda: Tariff((Block(None, D(1)),), vat_rate=D("-0.15")), id="negative-vat"),
        pytest.param(lambda: Tariff((Block(None, D(1)),), fixed_monthly=-1), id="negative-fixed-charge"),
    ],
)
def test_invalid_tariffs_are_refused(make: Callable[[], Tariff]) -> None:
    with pytest.raises(VendError) as exc:
        make()
    assert exc.value.code == "invalid_tariff"


@pytest.mark.parametrize("paid", [0, -1, -10_000])
def test_non_positive_amounts_are_refused(paid: int) -> None:
    with pytest.raises(VendError) as exc:
        price(STEPS, paid, MID_MONTH)
    assert exc.value.code == "invalid_amount"


# ---------------------------------------------------------------------------------------------- properties

PRICES = st.integers(min_value=1, max_value=50_000).map(lambda n: D(n) / 10_000)  # 0.0001 .. 5.0000 per kWh
VATS = st.sampled_from([D(0), D("0.04"), D("0.05"), D("0.075"), D("0.14"), D("0.15"), D("0.16"), D("0.2")])


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    n = draw(st.integers(min_value=1, max_value=4))
    limits = sorted(draw(st.sets(st.integers(min_value=1, max_value=20_000), min_size=n - 1, max_size=n - 1)))
    prices = sorted(draw(st.lists(PRICES, min_size=n, max_size=n)))  # inclining, as real block tariffs are
    blocks = tuple(
        Block(None if i == n - 1 else D(limits[i]) / 10, p) for i, p in enumerate(prices)
    )  # limits in kWh with one decimal: whole base units
    return Tariff(
        blocks,
        vat_rate=draw(VATS),
        fixed_monthly=draw(st.integers(min_value=0, max_value=5_000)),
        fbe_kwh=draw(st.sampled_from([D(0), D(20), D(50), D("100.5")])),
        minor_units=draw(st.sampled_from([1, 100, 1000])),
    )


ACCOUNTS = st.builds(
    Account,
    month_units=st.integers(min_value=0, max_value=50_000),
    first_purchase_of_month=st.booleans(),
    debt=st.integers(min_value=0, max_value=10**7),
    debt_rate=st.integers(min_value=0, max_value=100).map(lambda n: D(n) / 100),
    carried=st.integers(min_value=0, max_value=10_000),
    fbe_eligible=st.booleans(),
    fbe_issued_this_month=st.booleans(),
)
AMOUNTS = st.one_of(st.integers(min_value=1, max_value=100_000), st.integers(min_value=1, max_value=10**11))


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariff=tariffs(), paid=AMOUNTS, account=ACCOUNTS, carry=st.booleans())
def test_every_cent_is_accounted_for(tariff: Tariff, paid: int, account: Account, carry: bool) -> None:
    try:
        r = price(tariff, paid, account, carry_leftover=carry)
    except VendError as exc:
        assert exc.code == "amount_too_small"
        return
    m = tariff.minor_units
    # conservation, exactly
    assert r.paid == paid
    assert r.carried_in == (account.carried if carry else 0)
    assert r.paid + r.carried_in == (
        r.debt_recovered + r.fixed_charge + r.fixed_vat + r.energy_charge + r.energy_vat + r.leftover
    )
    assert r.leftover >= 0
    # units: positive, the sum of the blocks, and a value the token's amount field carries
    assert r.units > 0
    assert r.units == sum(b.units for b in r.blocks)
    assert representable(r.units)
    assert r.units <= MAX_UNITS
    # debt: floor(paid x rate), at most the debt
    assert r.debt_recovered == min(account.debt, int(paid * account.debt_rate))
    # fixed charge on the month's first purchase only, VAT half up
    assert r.fixed_charge == (tariff.fixed_monthly if account.first_purchase_of_month else 0)
    assert r.fixed_vat == half_up(D(r.fixed_charge) * tariff.vat_rate)
    # each block: charge rounded up from the exact price, VAT half up per block, cheapest block first and
    # every block but the last one bought full
    used = account.month_units
    tiers = [b for b in tariff.blocks if b.up_to is None or int(b.up_to * UNITS_PER_KWH) > used]
    assert [b.price for b in r.blocks] == [b.price for b in tiers[: len(r.blocks)]]
    for i, (line, block) in enumerate(zip(r.blocks, tiers, strict=False)):
        assert line.units > 0
        exact = D(line.units) * block.price / UNITS_PER_KWH * m
        assert line.charge == int(exact.to_integral_value(rounding=ROUND_CEILING))
        used += line.units
        if block.up_to is not None:
            assert used <= int(block.up_to * UNITS_PER_KWH)
            if i < len(r.blocks) - 1:
                assert used == int(block.up_to * UNITS_PER_KWH)
    assert r.energy_vat == sum(half_up(D(b.charge) * tariff.vat_rate) for b in r.blocks)
    # FBE: eligible customers, once a month, as the tariff says
    fbe_due = account.fbe_eligible and not account.fbe_issued_this_month
    assert r.fbe_units == (int(tariff.fbe_kwh * UNITS_PER_KWH) if fbe_due else 0)


@settings(max_examples=300, deadline=None)
@given(units=st.integers(min_value=1, max_value=MAX_UNITS + 10**6))
def test_units_bought_are_always_representable(units: int) -> None:
    tariff = Tariff((Block(None, D("1.00")),), minor_units=10)  # exactly one minor unit per base unit
    r = price(tariff, units, MID_MONTH)
    assert representable(r.units)
    assert r.units <= min(units, MAX_UNITS)
    assert r.leftover == units - r.units
    assert isinstance(r.blocks[0], BlockLine)


def test_a_tiny_price_is_bounded_by_what_a_token_carries() -> None:
    """A price of a billionth per kWh must not make pricing walk unit by unit (it holds the meter's lock)."""
    import time

    tariff = Tariff(blocks=(Block(None, Decimal("0.000000001")),), vat_rate=Decimal("0.15"))
    start = time.perf_counter()
    r = price(tariff, 100_000, Account(first_purchase_of_month=False))
    assert time.perf_counter() - start < 5
    assert r.units == MAX_UNITS
    r.check()


def _fill_by_bisection(tariff: Tariff, month_units: int, budget: int) -> tuple[list[BlockLine], int]:
    """The blocks' rule at its plainest: in each block, the most units (of all it has room for) whose cost fits
    what is left, found by bisecting the whole range; no estimate, no window."""
    lines: list[BlockLine] = []
    used, spent, m, vat = month_units, 0, tariff.minor_units, tariff.vat_rate
    for block in tariff.blocks:
        room = None if block.up_to is None else int(block.up_to * UNITS_PER_KWH) - used
        if room is not None and room <= 0:
            continue
        unit_price = block.price / UNITS_PER_KWH
        lo, hi = 0, MAX_UNITS - (used - month_units) if room is None else min(room, MAX_UNITS - (used - month_units))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if spent + _block_cost(mid, unit_price, vat, m)[1] <= budget else (lo, mid - 1)
        if lo <= 0:
            break
        charge, cost = _block_cost(lo, unit_price, vat, m)
        lines.append(BlockLine(lo, block.price, charge))
        spent, used = spent + cost, used + lo
        if room is None or lo < room:
            break
    return lines, spent


@settings(max_examples=1500, deadline=None)
@given(
    tariff=tariffs(),
    month_units=st.integers(min_value=0, max_value=50_000),
    budget=st.one_of(st.integers(min_value=0, max_value=100_000), st.integers(min_value=0, max_value=10**11)),
)
def test_the_blocks_bought_are_the_most_the_budget_affords(tariff: Tariff, month_units: int, budget: int) -> None:
    """``_fill_blocks`` looks for each block's units next to an estimate; the answer is the one a bisection of
    every possible number of units finds."""
    assert _fill_blocks(tariff, month_units, budget, tariff.vat_rate) == _fill_by_bisection(tariff, month_units, budget)
