"""The pure-Python fast paths of issue 17 against the definitions they replace.

A vend parses a meter number, derives its key and builds one token; the rewrites that made that fast must say
exactly what the plain definitions say: the table-driven Luhn digits (both of a MeterNumber's from one pass),
DKGA04 from cached HMAC states, the written-out constructors, and the bulk path's meter numbers read from
strings (accepted and refused as :meth:`MeterNumber.parse` does, naming the first bad index).
"""

from __future__ import annotations

import datetime as dt
import hmac
import inspect
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mita import sts
from mita.sts import EA, BaseDate, MeterNumber, TransferCredit, bulk
from mita.sts.dkga import dkga04_input
from mita.sts.errors import CheckDigitError, FormatError, StsError
from mita.sts.identity import IIN_DRN_LENGTH
from mita.sts.values import _MISSING


def reference_luhn(payload: str) -> int:
    """IEC 62055-41's Luhn digit, digit by digit: double every second digit from the right, sum digit sums."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def valid_drn(iin: str, body: str) -> str:
    return body + str(reference_luhn(body))


IINS = st.sampled_from(sorted(IIN_DRN_LENGTH))


@st.composite
def drns(draw: st.DrawFn, valid: bool | None = None) -> tuple[str, str]:
    """(IIN, DRN) with a right check digit (valid), a wrong one (not valid), or either (None)."""
    iin = draw(IINS)
    body = draw(st.text("0123456789", min_size=IIN_DRN_LENGTH[iin] - 1, max_size=IIN_DRN_LENGTH[iin] - 1))
    right = reference_luhn(body)
    good = draw(st.booleans()) if valid is None else valid
    digit = right if good else draw(st.sampled_from([d for d in range(10) if d != right]))
    return iin, body + str(digit)


@settings(max_examples=500, deadline=None)
@given(st.text("0123456789", min_size=1, max_size=40))
def test_luhn_digit_is_the_definition(payload: str) -> None:
    assert sts.luhn_digit(payload) == reference_luhn(payload)


@settings(max_examples=500, deadline=None)
@given(drns())
def test_a_meter_number_checks_and_extends_as_the_definition(number: tuple[str, str]) -> None:
    iin, drn = number
    if reference_luhn(drn[:-1]) != int(drn[-1]):
        with pytest.raises(CheckDigitError):
            MeterNumber(iin, drn)
        return
    meter = MeterNumber(iin, drn)
    assert meter.pan == iin + drn + str(reference_luhn(iin + drn))
    assert MeterNumber.parse(drn) == meter and MeterNumber.parse(f" {drn[:3]}-{drn[3:]} ") == meter


@pytest.mark.parametrize(
    ("iin", "drn", "error"),
    [
        ("600727", "4700000000", FormatError),  # too short
        ("600727", "4700000000٣", FormatError),  # a digit, but not ASCII
        ("600727", "47000000a09", FormatError),
        ("123456", "47000000009", FormatError),  # not an STS IIN
        ("0000", "47000000009", FormatError),  # 11 digits with the 13-digit IIN
    ],
)
def test_a_meter_number_refuses_what_it_refused(iin: str, drn: str, error: type[StsError]) -> None:
    with pytest.raises(error):
        MeterNumber(iin, drn)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (TransferCredit, [("tid", None), ("amount", None), ("rnd", 0), ("kind", sts.CreditKind.ELECTRICITY)]),
        (MeterNumber, [("iin", None), ("drn", None)]),
    ],
)
def test_written_out_constructors_take_the_fields_in_order_with_their_defaults(
    cls: type[Any], expected: list[tuple[str, object]]
) -> None:
    """The hand-written ``__init__`` of the hot types against the fields the class declares."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    got = [(p.name, None if p.default is inspect.Parameter.empty else p.default) for p in params]
    assert got == expected
    assert [name for name, _ in got] == list(cls._init)
    for name, default in got:
        declared = cls._specs[name].default
        assert (None if declared is _MISSING else declared) == default


def test_transfer_credit_by_keyword_and_by_position_is_one_value() -> None:
    assert TransferCredit(5, 6, 7, sts.CreditKind.WATER) == TransferCredit(
        rnd=7, kind=sts.CreditKind.WATER, amount=6, tid=5
    )
    assert TransferCredit(5, 6) == TransferCredit(5, 6, 0, sts.CreditKind.ELECTRICITY)
    with pytest.raises(TypeError):
        TransferCredit(5)  # type: ignore[call-arg]


VK04 = st.binary(min_size=20, max_size=20)


@settings(max_examples=200, deadline=None)
@given(VK04, drns(valid=True), st.sampled_from([EA.STA, EA.MISTY1]), st.sampled_from(list(BaseDate)))
def test_dkga04_from_cached_states_is_hmac_sha256(vk: bytes, number: tuple[str, str], ea: EA, base: BaseDate) -> None:
    meter = MeterNumber(*number)
    mac = hmac.digest(vk, dkga04_input(meter, 2, "123456", 7, 3, base, ea), "sha256")
    expected = int.from_bytes(mac[: ea.key_bits // 8], "big")
    assert sts.dkga04(vk, meter, 2, "123456", 7, 3, base, ea) == expected
    keys = bulk.dkga04(vk, [meter.drn], 2, "123456", 7, 3, base, ea)
    got = int.from_bytes(keys[0].tobytes(), "big") if ea is EA.MISTY1 else int(keys[0])
    assert got == expected


def test_dkga04_refuses_a_bad_key_every_time() -> None:
    meter = MeterNumber.parse(valid_drn("600727", "4700000000"))
    for _ in range(2):  # the checks are inside a cached function: an error must not be cached away
        with pytest.raises(FormatError):
            sts.dkga04(b"short", meter, 2, "123456", 1, 1, BaseDate.Y2014, EA.MISTY1)
        with pytest.raises(sts.UnsupportedError):
            sts.dkga04(b"k" * 20, meter, 2, "123456", 1, 1, BaseDate.Y2014, EA.DEA)


@settings(max_examples=150, deadline=None)
@given(st.lists(drns(valid=True), min_size=1, max_size=40), st.sampled_from([2, 3]))
def test_bulk_keys_from_strings_are_the_single_paths(numbers: list[tuple[str, str]], kt: int) -> None:
    texts = [drn for _, drn in numbers]
    meters = [MeterNumber.parse(t) for t in texts]
    pans = bulk.meter_pans(texts)
    assert [p.decode() for p in pans] == [m.pan for m in meters]
    assert list(bulk.pan_blocks(pans)) == [m.pan_block() for m in meters]
    assert list(bulk.pan_blocks(pans, common=True)) == [m.pan_block(common=True) for m in meters]
    vk02 = bytes.fromhex("0123456789abcdef")
    cb = sts.control_block(kt, "123456", 1, 1)
    assert list(bulk.dkga02(vk02, texts, cb)) == [sts.dkga02(vk02, m, kt, "123456", 1, 1) for m in meters]
    assert list(bulk.dkga02(vk02, np.array(texts), cb)) == list(bulk.dkga02(vk02, meters, cb))
    vk04 = bytes(range(20))
    args = (kt, "123456", 1, 1, BaseDate.Y2014, EA.MISTY1)
    assert (bulk.dkga04(vk04, texts, *args) == bulk.dkga04(vk04, meters, *args)).all()


def _single_verdict(texts: list[Any]) -> tuple[type[StsError], int] | list[str]:
    """What MeterNumber.parse says of each, in order: the PANs, or the first error's type and index."""
    pans = []
    for i, text in enumerate(texts):
        try:
            pans.append(MeterNumber.parse(str(text)).pan)
        except StsError as error:
            return type(error), i
    return pans


ODD = st.one_of(
    drns().map(lambda n: n[1]),
    drns(valid=True).map(lambda n: f"{n[1][:4]}-{n[1][4:]}"),  # dashes the single path ignores
    drns(valid=True).map(lambda n: f" {n[1]} "),
    st.text("0123456789", min_size=10, max_size=14),
    st.text(min_size=0, max_size=13),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(drns(valid=True).map(lambda n: n[1]), min_size=1, max_size=20), st.lists(ODD, max_size=3), st.data())
def test_bulk_meter_numbers_accept_and_refuse_as_parse(good: list[str], odd: list[str], data: st.DataObject) -> None:
    texts = list(good)
    for item in odd:
        texts.insert(data.draw(st.integers(0, len(texts))), item)
    verdict = _single_verdict(texts)
    if isinstance(verdict, list):
        assert [p.decode() for p in bulk.meter_pans(texts)] == verdict
        return
    error, index = verdict
    with pytest.raises(error) as caught:
        bulk.meter_pans(texts)
    assert caught.value.code == error.code
    assert caught.value.message.startswith(f"meters[{index}]: ")


def test_bulk_meter_numbers_from_arrays_and_of_no_meter() -> None:
    texts = [valid_drn("600727", f"47{i:08d}") for i in range(5)]
    expected = list(bulk.meter_pans(texts))
    assert list(bulk.meter_pans(np.array(texts))) == expected
    assert list(bulk.meter_pans(np.array(texts, dtype="S11"))) == expected
    assert len(bulk.meter_pans([])) == 0
    assert bulk.dkga04(bytes(20), [], 2, "123456", 1, 1, BaseDate.Y2014, EA.MISTY1).shape == (0, 16)


def reference_tid(issued: Any, base: int) -> int:
    """Whole minutes from the base date's first minute, on the issue time's own wall clock."""
    return int((issued.replace(tzinfo=None) - dt.datetime(base, 1, 1)).total_seconds() // 60)


@given(
    when=st.datetimes(
        min_value=dt.datetime(1993, 1, 1),
        max_value=dt.datetime(2067, 11, 24),
        timezones=st.one_of(st.none(), st.timezones()),
    ),
    base=st.sampled_from(list(BaseDate)),
    form=st.sampled_from([lambda b: b, int, str, lambda b: f"{int(b)}-01-01"]),
)
def test_a_tid_from_each_form_of_base_date_is_the_plain_count(when: Any, base: BaseDate, form: Any) -> None:
    """The base dates' first minutes are looked up, not built, for a ``BaseDate`` or a year; other forms parsed."""
    expected = reference_tid(when, int(base))
    if 0 <= expected <= sts.tid.TID_MAX:
        assert sts.tid_from_datetime(when, form(base)) == expected
    else:
        with pytest.raises(sts.TidOutOfRangeError, match=f"base date {int(base)}"):
            sts.tid_from_datetime(when, form(base))


@pytest.mark.parametrize("base", [1994, "1900", None, "x"])
def test_a_base_date_that_is_none_is_refused(base: Any) -> None:
    with pytest.raises(FormatError):
        sts.tid_from_datetime(dt.datetime(2026, 1, 1), base)
