"""The virtual STS meter's firmware rules (mita.meter.model), one rule at a time.

Every token here is made with the token engine (:mod:`mita.sts`), exactly as a vending system would make it; the
meter sees nothing but the 20 digits. The rules table in ``mita.meter.model``'s docstring and SPEC.md §7, §9 and
§10 are what the tests hold the model to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
import signal
from collections.abc import Iterator

import pytest

from mita import sts
from mita.meter import PROFILES, Meter, MeterState, Result
from mita.meter import profiles as profiles_module
from mita.meter.errors import MeterError
from mita.meter.model import ACCEPTED, TAMPER_KINDS, TEST_FUNCTIONS, UTILITY_REGISTERS
from mita.meter.profiles import RESULTS
from mita.meter.state import PER_BASE_UNIT
from mita.sts.crc import crc_field
from mita.sts.ea import encrypt
from mita.sts.values import replace

STA, MISTY1 = sts.EA.STA, sts.EA.MISTY1
KEY = 0x0123456789ABCDEF
NEW_KEY = 0xFEDCBA9876543210
OTHER_KEY = 0x1111222233334444
KEY128 = 0x00112233445566778899AABBCCDDEEFF
NEW128 = 0xF0E1D2C3B4A5968778695A4B3C2D1E0F
DRN = "47500150231"  # manufacturer code 47
MFR = 47
SGC = "123456"
T0 = dt.datetime(2024, 3, 1, 12, 0)
TID0 = sts.tid_from_datetime(T0)  # a 1993-base TID (16,390,800), KEN 250
GAP = dt.timedelta(hours=1)  # longer than any lockout, so tests that are not about it never meet it
ALL_PROFILES = sorted(PROFILES)
ELECTRIC = sts.CreditKind.ELECTRICITY


def unit_kind(profile: str) -> sts.CreditKind:
    """The credit subclass of a profile's utility (electricity or water)."""
    return sts.CreditKind(UTILITY_REGISTERS[PROFILES[profile].utility][0])


def make_meter(profile: str = "legacy-ea07", *, ea: int = 7, key: int = KEY, kt: int = 2, ken: int = 255) -> Meter:
    return Meter.create(drn=DRN, ea=ea, decoder_key=key, sgc=SGC, ti=1, krn=1, kt=kt, ken=ken, profile=profile)


def tok(token: sts.Token, key: int = KEY, ea: sts.EA = STA) -> str:
    return sts.encode(token, ea, key)


def credit(tid: int, amount: int = 100, kind: sts.CreditKind = ELECTRIC, key: int = KEY, ea: sts.EA = STA) -> str:
    return sts.encode(sts.TransferCredit(tid, amount, 5, kind), ea, key)


def kct(new_key: int, *, key: int = KEY, ea: sts.EA = STA, key_bits: int = 64, **cfg: object) -> dict[int, str]:
    """A key change set as {subclass: 20 digits}, encrypted under the meter's current ``key``."""
    params: dict[str, object] = {"ken": 255, "krn": 2, "kt": 2, "ti": 7, **cfg}
    sections = sts.key_change_set(new_key, key_bits=key_bits, **params)  # type: ignore[arg-type]
    return {s.subclass: sts.encode(s, ea, key) for s in sections}


def next_time(meter: Meter) -> dt.datetime:
    return T0 if meter.state.clock is None else meter.state.clock + GAP


def enter(meter: Meter, token: str, now: dt.datetime | None = None) -> Result:
    return meter.enter(token, now or next_time(meter)).result


def enter_all(meter: Meter, tokens: list[str], now: dt.datetime | None = None) -> list[Result]:
    """Enter tokens one second apart (a key change set within its window)."""
    start = now or next_time(meter)
    return [meter.enter(t, start + dt.timedelta(seconds=i)).result for i, t in enumerate(tokens)]


def raw_token(token_class: int, sub: int, data: int, key: int = KEY, ea: sts.EA = STA) -> str:
    """A token of any (class, subclass) with a correct CRC, even one the engine has no type for."""
    info = token_class << 48 | sub << 44 | data
    block = sub << 60 | data << 16 | crc_field(info, token_class == 0 and 4 <= sub <= 7)
    if token_class != 1:
        block = encrypt(ea, block, key)
    return f"{sts.insert_class(block, token_class):020d}"


def largest_amount(limit: int) -> int:
    """The largest TransferAmount (base units) that encodes exactly and does not exceed ``limit``."""
    units = limit
    while sts.decode_amount(sts.encode_amount(units)) != units:
        units -= 1
    return units


def exact_currency(units: int) -> int:
    """What a currency credit token of ``units`` (10^-5 currency) carries after rounding up."""
    return sts.decode_currency(*sts.encode_currency(units))[0]


CURRENCY_100K = exact_currency(100_000)  # 100,004: 100,000 is not representable


def frozen_view(meter: Meter) -> dict[str, object]:
    """The state without what a rejected entry may change (reject counter, lock, display, clock, the last entry)."""
    view = meter.state.to_dict(include_key=True)
    for name in ("failures", "locked_until", "lock_delay_s", "display", "clock", "last_entry"):
        view.pop(name)
    return view


def base_units(meter: Meter, register: int = 0) -> float:
    return meter.state.registers.get(register, 0) / PER_BASE_UNIT


# ---------------------------------------------------------------- profiles


def test_every_profile_shows_every_result() -> None:
    for profile in PROFILES.values():
        assert set(profile.display) == set(RESULTS), profile.name
    assert {r.value for r in Result} == set(RESULTS)


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_profiles_accept_the_same_vended_tokens(profile: str) -> None:
    """The same key, TIDs and management tokens work on every manufacturer profile."""
    meter = make_meter(profile)
    kind = unit_kind(profile)
    assert enter(meter, credit(TID0, 250, kind)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 1, 50, kind)) == Result.ACCEPT
    assert meter.state.registers == {int(kind): 300 * PER_BASE_UNIT}
    assert enter(meter, credit(TID0, 250, kind)) == Result.USED
    assert enter(meter, tok(sts.SetMaximumPowerLimit(TID0 + 2, 5000))) == Result.ACCEPT
    assert enter(meter, tok(sts.ClearTamperCondition(TID0 + 3))) == Result.ACCEPT
    assert enter(meter, tok(sts.SetTariffRate(TID0 + 4, 150))) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 5, 10, kind, key=OTHER_KEY)) == Result.CRC_ERROR
    assert enter_all(meter, list(kct(NEW_KEY).values())) == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert enter(meter, credit(TID0 + 6, 20, kind, key=NEW_KEY)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 7, 20, kind)) == Result.CRC_ERROR
    assert meter.state.registers == {int(kind): 320 * PER_BASE_UNIT}
    assert meter.state.mpl == 5000
    assert meter.state.tariff_rate == 150


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_display_text_is_the_profiles(profile: str) -> None:
    meter = make_meter(profile)
    entry = meter.enter(credit(TID0, kind=unit_kind(profile)), T0)
    shown = PROFILES[profile].display["accept"]
    assert (entry.result, entry.display, meter.state.display) == (Result.ACCEPT, shown, shown)
    again = meter.enter(credit(TID0, kind=unit_kind(profile)), T0)
    assert again.display == meter.state.display == PROFILES[profile].display["used"]


# ---------------------------------------------------------------- TID rules: used, old, key expiry


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_replay_is_used_and_changes_nothing(profile: str) -> None:
    meter = make_meter(profile)
    token = credit(TID0, 100, unit_kind(profile))
    assert enter(meter, token) == Result.ACCEPT
    before = frozen_view(meter)
    assert enter(meter, token) == Result.USED
    assert frozen_view(meter) == before


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_tid_older_than_the_store_is_old(profile: str) -> None:
    meter = make_meter(profile)
    kind = unit_kind(profile)
    size = PROFILES[profile].tid_store_size
    assert len(meter.state.tids) == size
    for i in range(size):  # fill the store: TID0+10 .. TID0+10+size-1
        assert enter(meter, credit(TID0 + 10 + i, 1, kind)) == Result.ACCEPT
    assert min(meter.state.tids) == TID0 + 10
    before = frozen_view(meter)
    assert enter(meter, credit(TID0 + 9, 1, kind)) == Result.OLD
    assert enter(meter, credit(TID0 - 100_000, 1, kind)) == Result.OLD
    assert frozen_view(meter) == before
    # A TID at or above the smallest, not yet used, is accepted and replaces the smallest.
    assert enter(meter, credit(TID0 + 10 + size + 5, 1, kind)) == Result.ACCEPT
    assert len(meter.state.tids) == size
    assert min(meter.state.tids) == TID0 + 11
    assert enter(meter, credit(TID0 + 10, 1, kind)) == Result.OLD  # forgotten, so now older than the store
    assert enter(meter, credit(TID0 + 10 + size, 1, kind)) == Result.ACCEPT  # a gap in the store is fine


def test_store_not_yet_full_remembers_no_minimum() -> None:
    meter = make_meter()
    assert enter(meter, credit(TID0)) == Result.ACCEPT
    assert enter(meter, credit(TID0 - 1000)) == Result.ACCEPT  # the store still holds zeros


@pytest.mark.parametrize("ken", [0, 1, 200, 254])
def test_key_expiry_at_the_ken_boundary(ken: int) -> None:
    meter = make_meter(ken=ken)
    last = (ken << 16) | 0xFFFF
    assert enter(meter, credit(ken << 16 | 1)) == Result.ACCEPT
    assert enter(meter, credit(last)) == Result.ACCEPT  # (TID >> 16) == KEN: still valid
    before = frozen_view(meter)
    assert enter(meter, credit((ken + 1) << 16)) == Result.KEY_EXPIRED
    assert enter(meter, tok(sts.SetMaximumPowerLimit((ken + 1) << 16 | 5, 1000))) == Result.KEY_EXPIRED
    assert frozen_view(meter) == before


def test_key_expiry_255_never_expires() -> None:
    meter = make_meter(ken=255)
    assert enter(meter, credit(sts.tid.TID_MAX)) == Result.ACCEPT


def test_kt0_meter_skips_the_expiry_check() -> None:
    meter = make_meter(kt=0, ken=3)
    assert enter(meter, credit(4 << 16)) == Result.ACCEPT
    assert enter(meter, credit(TID0)) == Result.ACCEPT


def test_key_expiry_is_checked_before_used() -> None:
    """Step 5 comes before step 6: an expired TID is key_expired even when it is also in the store."""
    meter = make_meter(kt=2, ken=255)
    assert enter(meter, credit(TID0)) == Result.ACCEPT
    results = enter_all(meter, list(kct(NEW_KEY, ken=(TID0 >> 16) - 1).values()))
    assert results == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert meter.state.ken == (TID0 >> 16) - 1
    assert enter(meter, credit(TID0, key=NEW_KEY)) == Result.KEY_EXPIRED


# ---------------------------------------------------------------- DDTK, wrong key, format, unsupported


def test_ddtk_meter_refuses_credit_but_takes_management_tokens() -> None:
    meter = make_meter(kt=1)
    before = frozen_view(meter)
    assert enter(meter, credit(TID0)) == Result.DDTK
    assert enter(meter, credit(TID0)) == Result.DDTK  # the TID was not remembered
    assert frozen_view(meter) == before
    assert enter(meter, tok(sts.SetMaximumPowerLimit(TID0 + 1, 2000))) == Result.ACCEPT
    assert enter(meter, tok(sts.SetTariffRate(TID0 + 2, 99))) == Result.ACCEPT
    assert enter(meter, tok(sts.ClearTamperCondition(TID0 + 3))) == Result.ACCEPT
    assert enter(meter, tok(sts.ClearCredit(TID0 + 4))) == Result.ACCEPT
    assert (meter.state.mpl, meter.state.tariff_rate) == (2000, 99)
    assert meter.state.registers == {}
    # The TID checks come first (steps 6-7 before step 8).
    assert enter(meter, credit(TID0 + 1)) == Result.USED


def test_ddtk_refuses_currency_credit_too() -> None:
    meter = make_meter("edition2-ea11", kt=1)
    token = tok(sts.CurrencyCredit(TID0, 100_000, kind=sts.CreditKind.ELECTRICITY_CURRENCY))
    assert enter(meter, token) == Result.DDTK


def test_key_change_away_from_ddtk_allows_credit() -> None:
    meter = make_meter(kt=1)
    assert enter_all(meter, list(kct(NEW_KEY, kt=2).values())) == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert enter(meter, credit(TID0, key=NEW_KEY)) == Result.ACCEPT


def test_key_change_to_ddtk_refuses_credit() -> None:
    meter = make_meter(kt=2)
    assert enter_all(meter, list(kct(NEW_KEY, kt=1).values())) == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert meter.state.kt == 1
    assert enter(meter, credit(TID0, key=NEW_KEY)) == Result.DDTK
    assert enter(meter, tok(sts.SetMaximumPowerLimit(TID0, 3000), key=NEW_KEY)) == Result.ACCEPT


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_wrong_key_is_crc_error(profile: str) -> None:
    meter = make_meter(profile)
    before = frozen_view(meter)
    assert enter(meter, credit(TID0, key=OTHER_KEY, kind=unit_kind(profile))) == Result.CRC_ERROR
    assert enter(meter, tok(sts.SetMaximumPowerLimit(TID0, 1000), key=OTHER_KEY)) == Result.CRC_ERROR
    assert enter(meter, kct(NEW_KEY, key=OTHER_KEY)[3]) == Result.CRC_ERROR
    assert frozen_view(meter) == before
    assert enter(meter, credit(TID0, kind=unit_kind(profile))) == Result.ACCEPT  # the TID was not used up


def test_wrong_algorithm_is_crc_error() -> None:
    meter = make_meter("water-valve", ea=9)
    assert enter(meter, credit(TID0, kind=sts.CreditKind.WATER, ea=STA)) == Result.CRC_ERROR
    assert enter(meter, credit(TID0, kind=sts.CreditKind.WATER, ea=sts.EA.DEA)) == Result.ACCEPT


def test_mistyped_digit_is_rejected() -> None:
    """Any one-digit typo is caught: a CRC error, or a format/class error the digits themselves show."""
    meter = make_meter()
    good = credit(TID0)
    for pos in range(20):
        typo = good[:pos] + str((int(good[pos]) + 3) % 10) + good[pos + 1 :]
        value = int(typo)
        if value >= 1 << 66:
            expected = Result.FORMAT_ERROR
        elif sts.extract_class(value)[0] == 3:
            expected = Result.UNSUPPORTED
        else:
            expected = Result.CRC_ERROR
        assert enter(meter, typo) == expected, (pos, typo)
    assert enter(meter, good) == Result.ACCEPT


@pytest.mark.parametrize(
    "digits",
    [
        "",
        "1234",
        "1" * 19,
        "1" * 21,
        "1234567890123456789a",
        "12345678901234567.89",
        "73786976294838206464",  # 2^66: one past the largest 66-bit value
        "99999999999999999999",
        "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠",  # Arabic-Indic digits: str.isdigit() but not ASCII
        "+1234567890123456789",
        "-1234567890123456789",
    ],
)
def test_malformed_digits_are_format_error(digits: str) -> None:
    meter = make_meter()
    before = frozen_view(meter)
    entry = meter.enter(digits, T0)
    assert entry.result == Result.FORMAT_ERROR
    assert entry.display == PROFILES["legacy-ea07"].display["format_error"]
    assert frozen_view(meter) == before


def test_spaces_and_dashes_are_ignored() -> None:
    meter = make_meter()
    token = credit(TID0)
    grouped = "-".join(token[i : i + 4] for i in range(0, 20, 4))
    assert enter(meter, grouped.replace("-", " ", 2)) == Result.ACCEPT
    assert enter(meter, token) == Result.USED


def test_largest_66_bit_value_is_not_a_format_error() -> None:
    meter = make_meter()
    assert enter(meter, f"{(1 << 66) - 1:020d}") != Result.FORMAT_ERROR


def test_class_3_is_unsupported() -> None:
    meter = make_meter()
    assert enter(meter, raw_token(3, 0, 0x123)) == Result.UNSUPPORTED


@pytest.mark.parametrize("sub", range(10, 16))
def test_reserved_management_subclass_is_unsupported(sub: int) -> None:
    meter = make_meter()
    assert enter(meter, raw_token(2, sub, TID0 << 16)) == Result.UNSUPPORTED
    assert enter(meter, raw_token(2, sub, TID0 << 16, key=OTHER_KEY)) == Result.CRC_ERROR


@pytest.mark.parametrize("sub", range(8, 16))
def test_reserved_credit_subclass_is_unsupported(sub: int) -> None:
    meter = make_meter("edition2-ea11")
    assert enter(meter, raw_token(0, sub, TID0 << 16 | 100)) == Result.UNSUPPORTED


@pytest.mark.parametrize(
    ("profile", "kind"),
    [
        ("legacy-ea07", sts.CreditKind.WATER),
        ("legacy-ea07", sts.CreditKind.TIME),
        ("legacy-ea07", sts.CreditKind.GAS),
        ("edition2-ea11", sts.CreditKind.WATER),
        ("edition2-ea11", sts.CreditKind.GAS),
        ("water-valve", sts.CreditKind.ELECTRICITY),
        ("water-valve", sts.CreditKind.TIME),
    ],
)
def test_credit_subclass_not_in_profile_is_unsupported(profile: str, kind: sts.CreditKind) -> None:
    meter = make_meter(profile)
    before = frozen_view(meter)
    assert enter(meter, credit(TID0, kind=kind)) == Result.UNSUPPORTED
    assert frozen_view(meter) == before


@pytest.mark.parametrize(
    ("profile", "kind"),
    [
        ("legacy-ea07", sts.CreditKind.ELECTRICITY_CURRENCY),
        ("edition2-ea11", sts.CreditKind.WATER_CURRENCY),
        ("water-valve", sts.CreditKind.ELECTRICITY_CURRENCY),
    ],
)
def test_currency_subclass_not_in_profile_is_unsupported(profile: str, kind: sts.CreditKind) -> None:
    meter = make_meter(profile)
    assert enter(meter, tok(sts.CurrencyCredit(TID0, 100_000, kind=kind))) == Result.UNSUPPORTED


def test_negative_currency_credit_is_unsupported() -> None:
    meter = make_meter("edition2-ea11")
    kind = sts.CreditKind.ELECTRICITY_CURRENCY
    assert enter(meter, tok(sts.CurrencyCredit(TID0, 100_000, True, kind))) == Result.UNSUPPORTED
    assert meter.state.registers == {}
    assert enter(meter, tok(sts.CurrencyCredit(TID0, 100_000, False, kind))) == Result.ACCEPT
    assert meter.state.registers == {4: CURRENCY_100K * PER_BASE_UNIT}


@pytest.mark.parametrize(
    ("profile", "test_token"),
    [
        ("legacy-ea07", sts.MeterTestWide(1, MFR)),
        ("edition2-ea11", sts.MeterTest(1, MFR)),
    ],
)
def test_class_1_format_not_in_profile_is_unsupported(profile: str, test_token: sts.Token) -> None:
    meter = make_meter(profile)
    assert enter(meter, tok(test_token)) == Result.UNSUPPORTED


@pytest.mark.parametrize(
    ("profile", "test_token"),
    [
        ("legacy-ea07", sts.MeterTestWide(1, 4321)),
        ("edition2-ea11", sts.MeterTest(1, 12)),
    ],
)
def test_class_1_manufacturer_code_is_checked_before_the_format(profile: str, test_token: sts.Token) -> None:
    """Rules table: step 3 (class 1 CRC, then manufacturer code -> crc_error) comes before step 4 (unsupported)."""
    meter = make_meter(profile)
    assert enter(meter, tok(test_token)) == Result.CRC_ERROR


def test_rejected_entries_change_nothing_but_the_reject_counter() -> None:
    meter = make_meter("legacy-ea07")
    assert enter(meter, credit(TID0)) == Result.ACCEPT
    before = frozen_view(meter)
    rejects = [
        credit(TID0),
        credit(TID0 + 1, key=OTHER_KEY),
        "1234",
        credit(TID0 + 2, kind=sts.CreditKind.WATER),
        tok(sts.ClearCredit(TID0 + 3, register=9)),
        tok(sts.SetWaterMeterFactor(TID0 + 4, 100)),
    ]
    for n, token in enumerate(rejects, 1):
        assert enter(meter, token) not in ACCEPTED
        assert frozen_view(meter) == before
        assert meter.state.failures == n
    assert enter(meter, credit(TID0 + 5)) == Result.ACCEPT
    assert meter.state.failures == 0


def test_every_entry_is_the_last_entry_with_how_it_came() -> None:
    meter = make_meter()
    assert meter.state.last_entry is None  # a new meter took no token
    token, later = credit(TID0), T0 + GAP
    assert meter.enter(token, T0, via="remote").result == Result.ACCEPT
    last = meter.state.last_entry
    assert last is not None and (last.token, last.at, last.result, last.via) == (token, T0, "accept", "remote")
    assert meter.enter(token[:10] + "-" + token[10:], later).result == Result.USED  # typed again, with a dash
    last = meter.state.last_entry
    assert last is not None and (last.token, last.at, last.result, last.via) == (token, later, "used", "keypad")
    with pytest.raises(MeterError) as exc:
        meter.enter(token, later, via="post")
    assert exc.value.code == "format_error"
    assert meter.state.last_entry == last  # an entry that did not happen is not remembered


# ---------------------------------------------------------------- key change


@pytest.mark.parametrize("order", list(itertools.permutations([3, 4])))
@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_two_token_key_change_in_any_order(profile: str, order: tuple[int, ...]) -> None:
    meter = make_meter(profile)
    kind = unit_kind(profile)
    assert enter(meter, credit(TID0, 10, kind)) == Result.ACCEPT
    sections = kct(NEW_KEY, ken=254, krn=3, kt=2, ti=42)
    start = next_time(meter)
    first = meter.enter(sections[order[0]], start)
    assert first.result == Result.KCT_PENDING
    assert meter.state.decoder_key == KEY
    assert meter.status(start)["pending_kct"] == [order[0]]
    last = meter.enter(sections[order[1]], start + dt.timedelta(seconds=5))
    assert last.result == Result.KEY_CHANGED
    s = meter.state
    assert (s.decoder_key, s.ken, s.krn, s.kt, s.ti, s.ea, s.sgc) == (NEW_KEY, 254, 3, 2, 42, 7, SGC)
    assert s.pending_kct == {}
    assert s.tids.count(TID0) == 1  # RO = 0 keeps the store
    assert enter(meter, credit(TID0 + 1, 10, kind, key=NEW_KEY)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 2, 10, kind, key=KEY)) == Result.CRC_ERROR
    assert enter(meter, credit(TID0, 10, kind, key=NEW_KEY)) == Result.USED
    assert s.registers == {int(kind): 20 * PER_BASE_UNIT}


@pytest.mark.parametrize("order", list(itertools.permutations([3, 4, 8, 9])), ids=lambda o: "-".join(map(str, o)))
def test_four_token_key_change_in_any_order(order: tuple[int, ...]) -> None:
    meter = make_meter("edition2-ea11", ea=11, key=KEY128)
    assert enter(meter, credit(TID0, 10, key=KEY128, ea=MISTY1)) == Result.ACCEPT
    sections = kct(NEW128, key=KEY128, ea=MISTY1, key_bits=128, sgc="654321", krn=4, ken=250, ti=3)
    start = next_time(meter)
    for i, sub in enumerate(order):
        result = meter.enter(sections[sub], start + dt.timedelta(seconds=10 * i)).result
        if i < 3:
            assert result == Result.KCT_PENDING, (i, sub)
            assert meter.state.decoder_key == KEY128
            assert sorted(meter.state.pending_kct) == sorted(order[: i + 1])
        else:
            assert result == Result.KEY_CHANGED
    s = meter.state
    assert (s.decoder_key, s.ea, s.sgc, s.krn, s.ken, s.ti) == (NEW128, 11, "654321", 4, 250, 3)
    assert enter(meter, credit(TID0 + 1, 10, key=NEW128, ea=MISTY1)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 2, 10, key=KEY128, ea=MISTY1)) == Result.CRC_ERROR
    assert s.registers == {0: 20 * PER_BASE_UNIT}


def test_a_two_token_set_does_not_complete_a_128_bit_meter() -> None:
    meter = make_meter("edition2-ea11", ea=11, key=KEY128)
    sections = kct(NEW_KEY, key=KEY128, ea=MISTY1)
    assert enter_all(meter, [sections[3], sections[4]]) == [Result.KCT_PENDING, Result.KCT_PENDING]
    assert meter.state.decoder_key == KEY128


def test_key_change_sections_are_not_echoed() -> None:
    meter = make_meter()
    for section in kct(NEW_KEY).values():
        entry = meter.enter(section, T0)
        assert not {"nkho", "nklo"} & set(entry.token)
        assert f"{NEW_KEY >> 32:x}" not in entry.detail and f"{NEW_KEY & 0xFFFFFFFF:x}" not in entry.detail
    assert "decoder_key" not in meter.status(T0)
    assert meter.status(T0)["key_check"] != make_meter().status(T0)["key_check"]


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_key_change_window_times_out(profile: str) -> None:
    meter = make_meter(profile)
    window = dt.timedelta(seconds=PROFILES[profile].key_change_window_s)
    sections = kct(NEW_KEY)
    assert meter.enter(sections[3], T0).result == Result.KCT_PENDING
    late = T0 + window + dt.timedelta(seconds=1)
    assert meter.enter(sections[4], late).result == Result.KCT_PENDING  # not complete: the 1st section expired
    assert meter.state.decoder_key == KEY
    assert sorted(meter.state.pending_kct) == [4]
    assert meter.state.pending_since == late  # the pending set restarted
    assert meter.enter(sections[3], late + window).result == Result.KEY_CHANGED  # within the new window
    assert meter.state.decoder_key == NEW_KEY


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_key_change_window_boundary_is_inclusive(profile: str) -> None:
    meter = make_meter(profile)
    window = dt.timedelta(seconds=PROFILES[profile].key_change_window_s)
    sections = kct(NEW_KEY)
    assert meter.enter(sections[4], T0).result == Result.KCT_PENDING
    assert meter.enter(sections[3], T0 + window).result == Result.KEY_CHANGED


def test_four_token_window_times_out() -> None:
    meter = make_meter("edition2-ea11", ea=11, key=KEY128)
    sections = kct(NEW128, key=KEY128, ea=MISTY1, key_bits=128, sgc="654321")
    assert enter_all(meter, [sections[9], sections[3], sections[8]], T0) == [Result.KCT_PENDING] * 3
    late = T0 + dt.timedelta(seconds=PROFILES["edition2-ea11"].key_change_window_s + 60)
    assert meter.enter(sections[4], late).result == Result.KCT_PENDING
    assert sorted(meter.state.pending_kct) == [4]
    assert meter.state.decoder_key == KEY128
    assert enter_all(meter, [sections[3], sections[8], sections[9]], late + dt.timedelta(seconds=1)) == [
        Result.KCT_PENDING,
        Result.KCT_PENDING,
        Result.KEY_CHANGED,
    ]
    assert meter.state.decoder_key == NEW128


def test_a_section_entered_again_replaces_the_pending_one() -> None:
    meter = make_meter()
    assert meter.enter(kct(OTHER_KEY)[3], T0).result == Result.KCT_PENDING
    sections = kct(NEW_KEY)
    assert meter.enter(sections[3], T0).result == Result.KCT_PENDING
    assert meter.enter(sections[4], T0).result == Result.KEY_CHANGED
    assert meter.state.decoder_key == NEW_KEY


def _fill_before_rollover(meter: Meter, key: int = KEY) -> None:
    """Fill the TID store with 1993-base tokens from the last days before the 2024-11-24 roll-over."""
    size = meter.profile.tid_store_size
    last = sts.tid_from_datetime(dt.datetime(2024, 11, 24, 20, 15))
    assert last == sts.tid.TID_MAX
    for i in range(size):
        assert enter(meter, credit(last - 10 * (size - i), 1, key=key)) == Result.ACCEPT


@pytest.mark.parametrize("profile", ["legacy-ea07", "edition2-ea11"])
def test_roll_over_key_change_then_new_base_credit(profile: str) -> None:
    """SPEC §10: RO = 1 clears the TID store, so 2014-base TIDs work after (and only after) the key change."""
    meter = make_meter(profile)
    _fill_before_rollover(meter)
    new_base_tid = sts.tid_from_datetime(dt.datetime(2024, 11, 25, 9, 0), sts.BaseDate.Y2014)
    assert new_base_tid < min(meter.state.tids)
    # Before the key change: under the old key the small 2014-base TID is older than the store ...
    assert enter(meter, credit(new_base_tid, 30)) == Result.OLD
    # ... and under the new key the meter cannot even decrypt it.
    assert enter(meter, credit(new_base_tid, 30, key=NEW_KEY)) == Result.CRC_ERROR
    before = dict(meter.state.registers)
    results = enter_all(meter, list(kct(NEW_KEY, ro=1, krn=2).values()))
    assert results == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert meter.state.tids == [0] * meter.profile.tid_store_size
    assert meter.state.krn == 2
    assert meter.state.registers == before  # credit survives a key change
    assert enter(meter, credit(new_base_tid, 30, key=NEW_KEY)) == Result.ACCEPT
    assert enter(meter, credit(new_base_tid, 30, key=NEW_KEY)) == Result.USED
    assert enter(meter, credit(new_base_tid + 1, 30)) == Result.CRC_ERROR  # the old key is gone
    assert base_units(meter) == sum(before.values()) / PER_BASE_UNIT + 30


def test_key_change_without_roll_over_keeps_the_store() -> None:
    meter = make_meter()
    _fill_before_rollover(meter)
    stored = list(meter.state.tids)
    assert enter_all(meter, list(kct(NEW_KEY, ro=0).values())) == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert meter.state.tids == stored
    new_base_tid = sts.tid_from_datetime(dt.datetime(2024, 11, 25, 9, 0), sts.BaseDate.Y2014)
    assert enter(meter, credit(new_base_tid, 30, key=NEW_KEY)) == Result.OLD


def test_roll_over_with_a_four_token_set() -> None:
    meter = make_meter("edition2-ea11", ea=11, key=KEY128)
    for i in range(meter.profile.tid_store_size):
        assert enter(meter, credit(sts.tid.TID_MAX - 100 + i, 1, key=KEY128, ea=MISTY1)) == Result.ACCEPT
    new_tid = sts.tid_from_datetime(dt.datetime(2024, 12, 1), sts.BaseDate.Y2014)
    assert enter(meter, credit(new_tid, 5, key=KEY128, ea=MISTY1)) == Result.OLD
    sections = kct(NEW128, key=KEY128, ea=MISTY1, key_bits=128, sgc="600001", ro=1, krn=5)
    assert enter_all(meter, [sections[s] for s in (8, 3, 9, 4)])[-1] == Result.KEY_CHANGED
    assert set(meter.state.tids) == {0}
    assert enter(meter, credit(new_tid, 5, key=NEW128, ea=MISTY1)) == Result.ACCEPT


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_change_to_kt0_from_another_type_is_key_type_error(profile: str) -> None:
    meter = make_meter(profile, kt=2)
    results = enter_all(meter, list(kct(NEW_KEY, kt=0).values()))
    assert results == [Result.KCT_PENDING, Result.KEY_TYPE_ERROR]
    assert (meter.state.decoder_key, meter.state.kt) == (KEY, 2)
    assert meter.state.pending_kct == {}  # the refused set is thrown away
    assert enter(meter, credit(TID0, kind=unit_kind(profile))) == Result.ACCEPT  # the old key still works
    assert enter(meter, credit(TID0 + 1, kind=unit_kind(profile), key=NEW_KEY)) == Result.CRC_ERROR


@pytest.mark.parametrize("current", [1, 3])
def test_change_to_kt0_from_ddtk_or_common_is_refused(current: int) -> None:
    meter = make_meter("edition2-ea11", kt=current)
    assert enter_all(meter, list(kct(NEW_KEY, kt=0).values()))[-1] == Result.KEY_TYPE_ERROR
    assert meter.state.kt == current


@pytest.mark.parametrize("new_kt", [0, 1, 2, 3])
def test_a_kt0_meter_may_change_to_any_type(new_kt: int) -> None:
    meter = make_meter("edition2-ea11", kt=0)
    assert enter_all(meter, list(kct(NEW_KEY, kt=new_kt).values()))[-1] == Result.KEY_CHANGED
    assert (meter.state.decoder_key, meter.state.kt) == (NEW_KEY, new_kt)


def test_water_valve_refuses_a_common_key() -> None:
    meter = make_meter("water-valve", kt=2)
    assert enter_all(meter, list(kct(NEW_KEY, kt=3).values())) == [Result.KCT_PENDING, Result.KEY_TYPE_ERROR]
    assert (meter.state.decoder_key, meter.state.kt) == (KEY, 2)
    assert enter_all(meter, list(kct(NEW_KEY, kt=2).values()))[-1] == Result.KEY_CHANGED


@pytest.mark.parametrize("profile", ["legacy-ea07", "edition2-ea11"])
def test_other_profiles_accept_a_common_key(profile: str) -> None:
    meter = make_meter(profile, kt=2)
    assert enter_all(meter, list(kct(NEW_KEY, kt=3).values()))[-1] == Result.KEY_CHANGED
    assert meter.state.kt == 3


def test_key_type_error_counts_as_a_reject() -> None:
    meter = make_meter("water-valve")
    enter_all(meter, list(kct(NEW_KEY, kt=3).values()))
    assert meter.state.failures == 1


def test_128_bit_sections_on_an_ea07_only_profile_are_unsupported() -> None:
    meter = make_meter("legacy-ea07")
    sections = kct(NEW128, key_bits=128, sgc="654321")
    assert enter(meter, sections[8]) == Result.UNSUPPORTED
    assert enter(meter, sections[9]) == Result.UNSUPPORTED
    assert meter.state.pending_kct == {}


def _migrating(order: tuple[int, ...]) -> bool:
    """A 3rd or 4th section is pending before the 1st and 2nd are both in (model docstring)."""
    return min(order.index(8), order.index(9)) < max(order.index(3), order.index(4))


@pytest.mark.parametrize(
    "order",
    [o for o in itertools.permutations([3, 4, 8, 9]) if _migrating(o)],
    ids=lambda o: "-".join(map(str, o)),
)
@pytest.mark.parametrize("profile", ["edition2-ea11", "water-valve"])
def test_ea07_to_ea11_migration_with_a_four_token_set(profile: str, order: tuple[int, ...]) -> None:
    meter = make_meter(profile, ea=7, key=KEY)
    kind = unit_kind(profile)
    assert enter(meter, credit(TID0, 10, kind)) == Result.ACCEPT
    sections = kct(NEW128, key=KEY, ea=STA, key_bits=128, sgc="654321", krn=2)
    results = enter_all(meter, [sections[s] for s in order])
    assert results == [Result.KCT_PENDING] * 3 + [Result.KEY_CHANGED]
    s = meter.state
    assert (s.ea, s.decoder_key, s.sgc, s.krn) == (11, NEW128, "654321", 2)
    assert enter(meter, credit(TID0 + 1, 10, kind, key=NEW128, ea=MISTY1)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 2, 10, kind, key=KEY, ea=STA)) == Result.CRC_ERROR
    assert enter(meter, credit(TID0, 10, kind, key=NEW128, ea=MISTY1)) == Result.USED  # the store survives
    assert s.registers == {int(kind): 20 * PER_BASE_UNIT}


def test_migration_with_1st_and_2nd_first_completes_a_two_token_set() -> None:
    """The docstring's rule: with no 3rd/4th section pending, the 1st and 2nd make a complete 64-bit set."""
    meter = make_meter("edition2-ea11", ea=7)
    sections = kct(NEW128, key=KEY, ea=STA, key_bits=128, sgc="654321")
    assert enter_all(meter, [sections[3], sections[4]]) == [Result.KCT_PENDING, Result.KEY_CHANGED]
    assert meter.state.ea == 7
    assert meter.state.decoder_key == (NEW128 >> 96) << 32 | (NEW128 & 0xFFFFFFFF)


# ---------------------------------------------------------------- management tokens


@pytest.mark.parametrize("profile", ALL_PROFILES)
@pytest.mark.parametrize("watts", [0, 1, 1000, 16383, 16384, 20_000, 18_201_624])
def test_max_power_limit(profile: str, watts: int) -> None:
    meter = make_meter(profile)
    entry = meter.enter(tok(sts.SetMaximumPowerLimit(TID0, watts)), T0)
    assert entry.result == Result.ACCEPT
    assert meter.state.mpl == sts.decode_amount(sts.encode_amount(watts))
    assert entry.token["mpl"] == meter.state.mpl
    assert meter.state.tids.count(TID0) == 1


def test_max_power_limit_rounds_up() -> None:
    meter = make_meter()
    assert enter(meter, tok(sts.SetMaximumPowerLimit(TID0, 16_385))) == Result.ACCEPT
    assert meter.state.mpl == 16_394


def _meter_with_credits() -> Meter:
    meter = make_meter("edition2-ea11")
    assert enter(meter, credit(TID0, 100)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 1, 50, sts.CreditKind.TIME)) == Result.ACCEPT
    kind = sts.CreditKind.ELECTRICITY_CURRENCY
    assert enter(meter, tok(sts.CurrencyCredit(TID0 + 2, 100_000, kind=kind))) == Result.ACCEPT
    assert meter.state.registers == {0: 100 * PER_BASE_UNIT, 3: 50 * PER_BASE_UNIT, 4: CURRENCY_100K * PER_BASE_UNIT}
    return meter


@pytest.mark.parametrize("register", [0, 3, 4, 1, 7])
def test_clear_credit_of_one_register(register: int) -> None:
    meter = _meter_with_credits()
    expected = {k: v for k, v in meter.state.registers.items() if k != register}
    assert enter(meter, tok(sts.ClearCredit(TID0 + 10, register))) == Result.ACCEPT
    assert {k: v for k, v in meter.state.registers.items() if v} == expected


def test_clear_credit_of_all_registers() -> None:
    meter = _meter_with_credits()
    assert enter(meter, tok(sts.ClearCredit(TID0 + 10, sts.ALL_REGISTERS))) == Result.ACCEPT
    assert not any(meter.state.registers.values())
    assert "no credit" in meter.status()["open_reasons"]


@pytest.mark.parametrize("register", [8, 15, 0x100, 0xFFFE])
def test_clear_credit_of_an_unknown_register_is_unsupported(register: int) -> None:
    meter = _meter_with_credits()
    before = frozen_view(meter)
    assert enter(meter, tok(sts.ClearCredit(TID0 + 10, register))) == Result.UNSUPPORTED
    assert frozen_view(meter) == before
    assert TID0 + 10 not in meter.state.tids


@pytest.mark.parametrize("rate", [0, 1, 250, 0xFFFF])
def test_tariff_rate(rate: int) -> None:
    meter = make_meter("edition2-ea11")
    assert enter(meter, tok(sts.SetTariffRate(TID0, rate))) == Result.ACCEPT
    assert meter.state.tariff_rate == rate


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_mppul(profile: str) -> None:
    meter = make_meter(profile)
    assert enter(meter, tok(sts.SetMaximumPhasePowerUnbalanceLimit(TID0, 3000))) == Result.ACCEPT
    assert meter.state.mppul == 3000
    assert meter.state.mpl is None


def test_water_meter_factor_on_the_water_valve() -> None:
    meter = make_meter("water-valve")
    assert enter(meter, tok(sts.SetWaterMeterFactor(TID0, 1234))) == Result.ACCEPT
    assert meter.state.wm_factor == 1234
    assert enter(meter, tok(sts.SetWaterMeterFactor(TID0, 999))) == Result.USED


@pytest.mark.parametrize("profile", ["legacy-ea07", "edition2-ea11"])
def test_water_meter_factor_unsupported_on_electricity_meters(profile: str) -> None:
    meter = make_meter(profile)
    assert enter(meter, tok(sts.SetWaterMeterFactor(TID0, 1234))) == Result.UNSUPPORTED
    assert meter.state.wm_factor is None
    assert TID0 not in meter.state.tids


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_clear_tamper_token(profile: str) -> None:
    meter = make_meter(profile)
    assert enter(meter, credit(TID0, 100, unit_kind(profile))) == Result.ACCEPT
    meter.tamper("magnetic", next_time(meter))
    meter.tamper("cover", next_time(meter))
    assert meter.state.tamper == ["magnetic", "cover"]
    assert enter(meter, tok(sts.ClearTamperCondition(TID0 + 1))) == Result.ACCEPT
    assert meter.state.tamper == []
    assert meter.switch_closed(next_time(meter))


def test_management_tokens_use_up_their_tid() -> None:
    meter = make_meter()
    assert enter(meter, tok(sts.SetTariffRate(TID0, 5))) == Result.ACCEPT
    assert enter(meter, credit(TID0)) == Result.USED  # TIDs are shared by every token that carries one


# ---------------------------------------------------------------- overflow


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_overflow_leaves_credit_unchanged(profile: str) -> None:
    meter = make_meter(profile)
    kind = unit_kind(profile)
    limit = PROFILES[profile].register_max
    top = largest_amount(limit)
    assert enter(meter, credit(TID0, top, kind)) == Result.ACCEPT
    before = frozen_view(meter)
    assert enter(meter, credit(TID0 + 1, limit - top + 1, kind)) == Result.OVERFLOW
    assert frozen_view(meter) == before
    assert TID0 + 1 not in meter.state.tids
    if limit > top:
        assert enter(meter, credit(TID0 + 2, limit - top, kind)) == Result.ACCEPT
        assert meter.state.registers[int(kind)] == limit * PER_BASE_UNIT


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_a_single_token_above_the_register_maximum_overflows(profile: str) -> None:
    meter = make_meter(profile)
    assert enter(meter, credit(TID0, sts.amount.MAX_UNITS, unit_kind(profile))) == Result.OVERFLOW
    assert meter.state.registers == {}


def test_currency_register_holds_a_100_unit_credit() -> None:
    """SPEC §4.3's own currency example carries 10,000,624 x 10^-5 = 100.00624 currency units.

    register_max (9,999,999 base units) is applied to the currency registers too, whose base unit is 10^-5:
    an edition2-ea11 meter cannot hold 100 units of currency, so the example token would be refused.
    """
    meter = make_meter("edition2-ea11")
    kind = sts.CreditKind.ELECTRICITY_CURRENCY
    entry = meter.enter(tok(sts.CurrencyCredit(TID0, 10_000_000, kind=kind)), T0)
    assert entry.result == Result.ACCEPT, entry.detail
    assert meter.state.registers == {4: 10_000_624 * PER_BASE_UNIT}


def test_registers_overflow_independently() -> None:
    meter = make_meter("edition2-ea11")
    top = largest_amount(PROFILES["edition2-ea11"].register_max)
    assert enter(meter, credit(TID0, top)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 1, top, sts.CreditKind.TIME)) == Result.ACCEPT
    assert enter(meter, credit(TID0 + 2, top)) == Result.OVERFLOW


# ---------------------------------------------------------------- keypad lockout


def _reject(meter: Meter, now: dt.datetime) -> Result:
    return meter.enter(credit(TID0, key=OTHER_KEY), now).result


def test_lockout_after_three_rejects_and_doubling() -> None:
    meter = make_meter("edition2-ea11")
    assert [_reject(meter, T0) for _ in range(3)] == [Result.CRC_ERROR] * 3
    assert meter.state.locked_until == T0 + dt.timedelta(seconds=10)
    now = T0
    for expected in [20, 40, 80, 160, 320, 640, 1280, 1280, 1280]:
        now = meter.state.locked_until
        assert _reject(meter, now) == Result.CRC_ERROR
        assert meter.state.lock_delay_s == expected
        assert meter.state.locked_until == now + dt.timedelta(seconds=expected)


def test_locked_out_entries_do_not_count() -> None:
    meter = make_meter("edition2-ea11")
    for _ in range(3):
        _reject(meter, T0)
    state = (meter.state.failures, meter.state.locked_until, meter.state.lock_delay_s)
    for seconds in range(10):
        now = T0 + dt.timedelta(seconds=seconds)
        entry = meter.enter(credit(TID0, key=OTHER_KEY), now)
        assert entry.result == Result.LOCKED_OUT
        assert entry.display == PROFILES["edition2-ea11"].display["locked_out"]
        assert (meter.state.failures, meter.state.locked_until, meter.state.lock_delay_s) == state


def test_valid_token_while_locked_is_locked_out_and_not_used_up() -> None:
    meter = make_meter("edition2-ea11")
    for _ in range(3):
        _reject(meter, T0)
    good = credit(TID0 + 1, 100)
    assert meter.enter(good, T0 + dt.timedelta(seconds=9)).result == Result.LOCKED_OUT
    assert meter.state.registers == {}
    assert meter.enter(good, T0 + dt.timedelta(seconds=10)).result == Result.ACCEPT
    assert meter.state.registers == {0: 100 * PER_BASE_UNIT}


def test_accepted_token_resets_the_lockout() -> None:
    meter = make_meter("edition2-ea11")
    for _ in range(3):
        _reject(meter, T0)
    now = T0 + dt.timedelta(seconds=10)
    assert _reject(meter, now) == Result.CRC_ERROR  # locked again, 20 s
    now += dt.timedelta(seconds=20)
    assert meter.enter(credit(TID0 + 1), now).result == Result.ACCEPT
    assert (meter.state.failures, meter.state.lock_delay_s) == (0, 0)
    assert [_reject(meter, now) for _ in range(2)] == [Result.CRC_ERROR] * 2
    assert meter.enter(credit(TID0 + 2), now).result == Result.ACCEPT  # two rejects do not lock
    for _ in range(3):
        _reject(meter, now)
    assert meter.state.locked_until == now + dt.timedelta(seconds=10)  # back to the first delay


def test_key_change_section_and_test_token_reset_the_reject_counter() -> None:
    meter = make_meter("edition2-ea11")
    for _ in range(2):
        _reject(meter, T0)
    assert meter.enter(kct(NEW_KEY)[3], T0).result == Result.KCT_PENDING
    assert meter.state.failures == 0
    for _ in range(2):
        _reject(meter, T0)
    assert meter.enter(tok(sts.MeterTestWide(1, 0)), T0).result == Result.ACCEPT
    assert meter.state.failures == 0


def test_water_valve_lockout() -> None:
    meter = make_meter("water-valve")
    assert [_reject(meter, T0) for _ in range(5)] == [Result.CRC_ERROR] * 5
    assert meter.enter(credit(TID0, kind=sts.CreditKind.WATER), T0).result == Result.LOCKED_OUT
    assert meter.state.locked_until == T0 + dt.timedelta(seconds=60)
    now = T0 + dt.timedelta(seconds=60)
    assert _reject(meter, now) == Result.CRC_ERROR
    assert meter.state.locked_until == now + dt.timedelta(seconds=60)  # max 60 s: no doubling


def test_legacy_meter_never_locks() -> None:
    meter = make_meter("legacy-ea07")
    assert {_reject(meter, T0) for _ in range(100)} == {Result.CRC_ERROR}
    assert meter.state.locked_until is None
    assert meter.enter(credit(TID0), T0).result == Result.ACCEPT


# ---------------------------------------------------------------- load switch, tamper, power limit


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_switch_opens_at_zero_credit_and_closes_when_credit_returns(profile: str) -> None:
    meter = make_meter(profile)
    kind = unit_kind(profile)
    assert not meter.switch_closed(T0)
    assert meter.status(T0)["open_reasons"] == ["no credit"]
    assert meter.status(T0)["switch"] == "open"
    assert meter.enter(credit(TID0, 10, kind), T0).result == Result.ACCEPT
    assert meter.switch_closed(T0)
    run = meter.run(7200, 1000, T0)
    assert run.consumed == 10 * PER_BASE_UNIT
    assert run.events == ("13:00:00 supply off: no credit",)
    end = T0 + dt.timedelta(seconds=7200)
    assert not meter.switch_closed(end)
    assert meter.registers() == {kind.name.lower(): 0.0}
    again = meter.run(60, 1000, end)
    assert again.consumed == 0
    assert again.events == ("14:00:00 supply off: no credit",)
    assert meter.enter(credit(TID0 + 1, 1, kind), end).result == Result.ACCEPT
    assert meter.switch_closed(end)


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_consumption_arithmetic(profile: str) -> None:
    """1000 W for 3600 s is 1 kWh: 10 base units of 0.1 kWh, 3,600,000 internal units."""
    meter = make_meter(profile)
    kind = int(unit_kind(profile))
    assert meter.enter(credit(TID0, 25, unit_kind(profile)), T0).result == Result.ACCEPT
    run = meter.run(3600, 1000, T0)
    assert (run.seconds, run.consumed, run.events) == (3600, 3_600_000, ())
    assert meter.state.registers[kind] == 25 * PER_BASE_UNIT - 3_600_000
    assert base_units(meter, kind) == 15
    assert meter.state.consumed == 3_600_000
    assert meter.state.clock == T0 + dt.timedelta(seconds=3600)
    run = meter.run(1, 1, meter.state.clock)
    assert run.consumed == 1
    assert meter.state.registers[kind] == 15 * PER_BASE_UNIT - 1


def test_zero_load_uses_nothing() -> None:
    meter = make_meter()
    meter.enter(credit(TID0, 10), T0)
    assert meter.run(3600, 0, T0).consumed == 0
    assert meter.state.registers == {0: 10 * PER_BASE_UNIT}


def test_partial_last_second_uses_exactly_the_credit_left() -> None:
    meter = make_meter()
    meter.enter(credit(TID0, 1), T0)  # 360,000 internal units
    run = meter.run(100, 7000, T0)  # 51.4 s of supply
    assert run.consumed == PER_BASE_UNIT
    assert meter.state.registers[0] == 0


def test_currency_credit_is_drawn_at_the_tariff_rate() -> None:
    """Rate 100 = 1.00 currency per kWh: 1 kWh costs 100,000 base units of 10^-5 currency."""
    meter = make_meter("edition2-ea11")
    kind = sts.CreditKind.ELECTRICITY_CURRENCY
    assert meter.enter(tok(sts.CurrencyCredit(TID0, 150_000, kind=kind)), T0).result == Result.ACCEPT
    assert not meter.switch_closed(T0)  # no tariff: currency credit cannot be drawn
    assert meter.enter(tok(sts.SetTariffRate(TID0 + 1, 100)), T0).result == Result.ACCEPT
    assert meter.switch_closed(T0)
    run = meter.run(3600, 1000, T0)
    assert run.consumed == 3_600_000
    assert meter.state.registers[4] == (exact_currency(150_000) - 100_000) * PER_BASE_UNIT


def test_unit_credit_is_drawn_before_currency_credit() -> None:
    meter = make_meter("edition2-ea11")
    meter.enter(tok(sts.CurrencyCredit(TID0, 100_000, kind=sts.CreditKind.ELECTRICITY_CURRENCY)), T0)
    meter.enter(tok(sts.SetTariffRate(TID0 + 1, 200)), T0)
    meter.enter(credit(TID0 + 2, 5), T0)
    run = meter.run(3600, 1000, T0)  # 0.5 kWh from the unit register, 0.5 kWh at 2.00 per kWh
    assert run.consumed == 3_600_000
    assert meter.state.registers == {0: 0, 4: (CURRENCY_100K - 100_000) * PER_BASE_UNIT}


def test_time_credit_supplies_any_load() -> None:
    meter = make_meter("edition2-ea11")
    assert meter.enter(credit(TID0, 10, sts.CreditKind.TIME), T0).result == Result.ACCEPT  # 1 minute
    run = meter.run(600, 5000, T0)
    assert run.consumed == 5000 * 60
    assert meter.state.registers[3] == 0
    assert run.events == ("12:01:00 supply off: no credit",)


def test_run_needs_a_time_and_non_negative_inputs() -> None:
    meter = make_meter()
    with pytest.raises(MeterError) as exc:
        meter.run(10, 100)
    assert exc.value.code == "no_time"
    with pytest.raises(sts.RangeError):
        meter.run(-1, 100, T0)
    with pytest.raises(sts.RangeError):
        meter.run(1, -100, T0)


@pytest.mark.parametrize("kind", TAMPER_KINDS)
@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_tamper_opens_the_switch_until_a_clear_tamper_token(profile: str, kind: str) -> None:
    assert PROFILES[profile].tamper_opens_switch
    meter = make_meter(profile)
    unit = unit_kind(profile)
    assert meter.enter(credit(TID0, 100, unit), T0).result == Result.ACCEPT
    assert meter.tamper(kind, T0) == "Tamper"
    assert meter.state.display == "Tamper"
    assert not meter.switch_closed(T0)
    assert meter.status(T0)["open_reasons"] == ["tamper"]
    run = meter.run(600, 500, T0)
    assert (run.consumed, run.events) == (0, ("12:00:00 supply off: tamper",))
    # Neither credit, time passing, nor other management tokens close it.
    later = T0 + dt.timedelta(days=2)
    assert meter.enter(credit(TID0 + 1, 100, unit), later).result == Result.ACCEPT
    assert meter.enter(tok(sts.SetMaximumPowerLimit(TID0 + 2, 9000)), later).result == Result.ACCEPT
    assert not meter.switch_closed(later)
    assert meter.enter(tok(sts.ClearTamperCondition(TID0 + 3)), later).result == Result.ACCEPT
    assert meter.switch_closed(later)
    assert meter.run(3600, 1000, later).consumed == 3_600_000


def test_repeated_tamper_is_recorded_once() -> None:
    meter = make_meter()
    for kind in ("bypass", "bypass", "cover"):
        meter.tamper(kind, T0)
    assert meter.state.tamper == ["bypass", "cover"]


def test_unknown_tamper_kind() -> None:
    with pytest.raises(MeterError) as exc:
        make_meter().tamper("drill", T0)
    assert exc.value.code == "format_error"


def test_tamper_does_not_open_the_switch_where_the_profile_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    custom = replace(PROFILES["legacy-ea07"], name="no-tamper-switch", tamper_opens_switch=False)
    monkeypatch.setitem(profiles_module.PROFILES, custom.name, custom)
    meter = make_meter(custom.name)
    meter.enter(credit(TID0, 100), T0)
    meter.tamper("magnetic", T0)
    assert meter.switch_closed(T0)
    assert meter.state.tamper == ["magnetic"]
    assert meter.run(3600, 1000, T0).consumed == 3_600_000


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_power_limit_trip_and_reconnect(profile: str) -> None:
    meter = make_meter(profile)
    reconnect = max(PROFILES[profile].trip_reconnect_s, 1)
    unit = unit_kind(profile)
    assert meter.enter(credit(TID0, 100, unit), T0).result == Result.ACCEPT
    assert meter.enter(tok(sts.SetMaximumPowerLimit(TID0 + 1, 1000)), T0).result == Result.ACCEPT
    seconds = 120
    run = meter.run(seconds, 1500, T0)
    assert run.consumed == 0
    assert len(run.events) == math.ceil(seconds / reconnect)
    assert all("trip: 1500 W over the 1000 W limit" in e for e in run.events)
    assert run.events[0].startswith("12:00:00 trip")
    assert meter.state.registers == {int(unit): 100 * PER_BASE_UNIT}
    end = T0 + dt.timedelta(seconds=seconds)
    reconnect_at = meter.state.tripped_until
    assert reconnect_at is not None and end <= reconnect_at <= end + dt.timedelta(seconds=reconnect)
    if reconnect_at > end:
        assert not meter.switch_closed(end)
        assert "power limit trip" in meter.status(end)["open_reasons"]
    assert meter.switch_closed(reconnect_at)
    # Below the limit again: supply resumes once the trip time is over.
    run = meter.run(600, 1000, end)
    waited = int((reconnect_at - end).total_seconds())
    assert run.consumed == 1000 * (600 - waited)
    assert run.events == ()


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (rather than hang the suite) when the block does not finish in time."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_run_ends_when_it_starts_off_the_whole_second_of_a_trip() -> None:
    """Time is an input of the pure model and may carry fractions of a second (the CLI drops them; the API not).

    A trip at 12:00:00 reconnects at 12:01:00; a run from 12:00:10.5 skips to 12:01:00 and then steps whole
    seconds, leaving half a second before its end: ``left`` is then 0, every step is 0 s, and the loop never ends.
    """
    meter = make_meter()
    meter.enter(credit(TID0, 100), T0)
    meter.enter(tok(sts.SetMaximumPowerLimit(TID0 + 1, 1000)), T0)
    assert meter.run(10, 2000, T0).consumed == 0  # trips until 12:01:00
    start = T0 + dt.timedelta(seconds=10, milliseconds=500)
    with time_limit(2):
        run = meter.run(120, 500, start)
    assert 500 * 70 <= run.consumed <= 500 * 71


def test_load_at_the_limit_does_not_trip() -> None:
    meter = make_meter()
    meter.enter(credit(TID0, 100), T0)
    meter.enter(tok(sts.SetMaximumPowerLimit(TID0 + 1, 2000)), T0)
    run = meter.run(3600, 2000, T0)
    assert (run.consumed, run.events) == (7_200_000, ())


# ---------------------------------------------------------------- class 1 test / display tokens


@pytest.mark.parametrize(
    ("profile", "make"),
    [
        ("legacy-ea07", sts.MeterTest),
        ("edition2-ea11", sts.MeterTestWide),
        ("water-valve", sts.MeterTest),
        ("water-valve", sts.MeterTestWide),
    ],
)
def test_class_1_manufacturer_code(profile: str, make: type[sts.MeterTest] | type[sts.MeterTestWide]) -> None:
    meter = make_meter(profile, key=OTHER_KEY)  # class 1 is sent in clear: the key does not matter
    assert enter(meter, tok(make(1, 0))) == Result.ACCEPT
    assert enter(meter, tok(make(1, MFR))) == Result.ACCEPT
    assert enter(meter, tok(make(1, MFR))) == Result.ACCEPT  # no TID: entering it again is fine
    before = frozen_view(meter)
    assert enter(meter, tok(make(1, MFR + 1))) == Result.CRC_ERROR
    assert enter(meter, tok(make(1, 99))) == Result.CRC_ERROR
    assert frozen_view(meter) == before
    assert meter.state.tids == [0] * PROFILES[profile].tid_store_size


def test_class_1_display_lines() -> None:
    meter = make_meter()
    meter.enter(credit(TID0, 100), T0)
    meter.enter(tok(sts.SetMaximumPowerLimit(TID0 + 1, 4000)), T0)
    meter.run(3600, 1000, T0)
    now = T0 + dt.timedelta(hours=1)
    meter.tamper("cover", now)
    entry = meter.enter(tok(sts.MeterTest((1 << len(TEST_FUNCTIONS)) - 1, MFR)), now)
    assert entry.result == Result.ACCEPT
    assert entry.display == PROFILES["legacy-ea07"].display["accept"]
    assert entry.lines == (
        "test all test OK",
        "relay test OK",
        "display test OK",
        "used 1.0",
        "KRN 1",
        "TI 01",
        "MPL 4000 W",
        "tamper cover",
        "power test OK",
        "legacy-ea07 EA07",
    )
    assert entry.token == {"class": 1, "subclass": 0, "control": (1 << 10) - 1, "mfr_code": MFR}


@pytest.mark.parametrize("bit", range(len(TEST_FUNCTIONS)))
def test_class_1_each_function_gives_one_line(bit: int) -> None:
    meter = make_meter("edition2-ea11")
    entry = meter.enter(tok(sts.MeterTestWide(1 << bit, 0)), T0)
    assert entry.result == Result.ACCEPT
    assert len(entry.lines) == 1
    name = TEST_FUNCTIONS[bit]
    if name == "MPL":
        assert entry.lines == ("MPL - W",)
    elif name == "tamper":
        assert entry.lines == ("tamper none",)
    elif name == "version":
        assert entry.lines == ("edition2-ea11 EA07",)


def test_class_1_with_no_known_function_is_unsupported() -> None:
    meter = make_meter("edition2-ea11")
    assert enter(meter, tok(sts.MeterTestWide(1 << 20, 0))) == Result.UNSUPPORTED
    assert enter(meter, tok(sts.MeterTestWide(0, 0))) == Result.UNSUPPORTED


def test_class_1_is_accepted_on_a_ddtk_meter() -> None:
    meter = make_meter(kt=1)
    assert enter(meter, tok(sts.MeterTest(1 << 4, MFR))) == Result.ACCEPT


def test_status_is_a_snapshot() -> None:
    """status() is a view for a technician: changing what it returned must not change the meter."""
    meter = make_meter()
    meter.enter(credit(TID0), T0)
    meter.tamper("cover", T0)
    view = meter.status(T0)
    view["tids"].append(1)
    view["tids"][0] = 99
    view["tamper"].clear()
    assert meter.state.tids.count(TID0) == 1 and len(meter.state.tids) == 20
    assert meter.state.tamper == ["cover"]


def test_to_dict_from_dict_gives_an_independent_copy() -> None:
    meter = make_meter()
    copy = MeterState.from_dict(meter.state.to_dict(), meter.state.decoder_key)
    assert copy == meter.state
    meter.enter(credit(TID0), T0)
    meter.tamper("bypass", T0)
    assert copy.tids == [0] * 20
    assert copy.tamper == []


# ---------------------------------------------------------------- meter creation


def test_create_checks_the_profile() -> None:
    with pytest.raises(MeterError) as exc:
        make_meter("legacy-ea07", ea=11, key=KEY128)
    assert exc.value.code == "unsupported"
    with pytest.raises(MeterError) as exc:
        make_meter("no-such-profile")
    assert exc.value.code == "unknown_profile"
    with pytest.raises(sts.StsError):
        make_meter("legacy-ea07", key=KEY128)  # a 128-bit key for EA07
    with pytest.raises(sts.RangeError):
        Meter.create(drn="0100000000008", ea=7, decoder_key=KEY, sgc=SGC, ti=1, krn=1, kt=2, profile="legacy-ea07")


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_new_meter_state(profile: str) -> None:
    meter = make_meter(profile)
    s = meter.state
    assert s.tids == [0] * PROFILES[profile].tid_store_size
    assert (s.registers, s.tamper, s.pending_kct, s.failures, s.mfr_code) == ({}, [], {}, 0, MFR)
