"""Bad input gets a typed error with a stable code, and no error message carries key material.

Codes are a public contract (README: ``format_error``, ``range_error``, ``check_digit_error``, ``crc_error``,
``unsupported``, ``tid_out_of_range``); scripts and services branch on them, never on messages.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest

from mita import sts
from mita.cli import token_ops
from mita.sts import EA, BaseDate, MeterNumber
from mita.sts import ea as ea_mod
from mita.sts.amount import MAX_UNITS, decode_currency, encode_amount, encode_currency
from mita.sts.codec import insert_class, parse_digits, to_digits
from mita.sts.crc import crc_field
from mita.sts.tid import parse_issue_time

VK02 = bytes.fromhex("abababababababab")
VK04 = bytes.fromhex("abababababababab949494949494949401234567")
KEY07 = 0xE653341F9D5BF36F  # DKGA02 of meter 600727 00000000000 in the 0-02 compliance suites
KEY11 = 0xF94B6ED353C3BFDB113E2D3A7EA3C41D  # DKGA04 of the same meter in the 0-04 suites
METER = MeterNumber("600727", "00000000000")
TOKEN07 = "23716100501183194197"  # 0.1 kWh, 2004-03-01 13:55, RND 5, under KEY07
CREDIT = sts.TransferCredit(tid=5871715, amount=1, rnd=5)

CODES = {
    sts.StsError: "sts_error",
    sts.FormatError: "format_error",
    sts.RangeError: "range_error",
    sts.CheckDigitError: "check_digit_error",
    sts.CrcError: "crc_error",
    sts.UnsupportedError: "unsupported",
    sts.TidOutOfRangeError: "tid_out_of_range",
}


@pytest.mark.parametrize("kind", list(CODES), ids=lambda k: k.__name__)
def test_error_codes_are_stable(kind: type[sts.StsError]) -> None:
    assert kind.code == CODES[kind]
    exc = kind("something is wrong")
    assert isinstance(exc, sts.StsError)
    assert exc.as_dict() == {"code": CODES[kind], "message": "something is wrong"}


def test_tid_out_of_range_is_a_range_error() -> None:
    assert issubclass(sts.TidOutOfRangeError, sts.RangeError)


def reserved_token(token_class: int, subclass: int, ea: EA, key: int) -> str:
    """A token of a reserved (class, subclass) with a valid CRC, encrypted like a real one (class 1: in clear)."""
    data = 0x5ABCDE0123  # any 44 data bits
    info = token_class << 48 | subclass << 44 | data
    block = subclass << 60 | data << 16 | crc_field(info)
    if token_class != 1:
        block = ea_mod.encrypt(ea, block, key)
    return to_digits(insert_class(block, token_class))


def key_for(ea: EA) -> int:
    return KEY11 if ea is EA.MISTY1 else KEY07


def derive02(**changes: Any) -> Callable[[], object]:
    args: dict[str, Any] = {"kt": 2, "sgc": "123456", "ti": 1, "krn": 1} | changes
    return lambda: sts.dkga02(VK02, METER, **args)


def derive04(**changes: Any) -> Callable[[], object]:
    args: dict[str, Any] = {"kt": 2, "sgc": "123457", "ti": 1, "krn": 1, "base": BaseDate.Y1993, "ea": EA.MISTY1}
    return lambda: sts.dkga04(VK04, METER, **(args | changes))


def key_change(**changes: Any) -> Callable[[], object]:
    args: dict[str, Any] = {"key_bits": 64, "ken": 255, "krn": 2, "kt": 2, "ti": 1, "ro": 0} | changes
    new_key = args.pop("new_key", 0x0123456789ABCDEF)
    return lambda: sts.key_change_set(new_key, **args)


CASES: list[tuple[str, Callable[[], object], type[sts.StsError]]] = [
    # meter numbers: IIN/DRN pairing, length, check digit
    ("iin-600727-with-13-digits", lambda: MeterNumber("600727", "0100000000008"), sts.FormatError),
    ("iin-0000-with-11-digits", lambda: MeterNumber("0000", "00000000000"), sts.FormatError),
    ("unknown-iin", lambda: MeterNumber("123456", "00000000000"), sts.FormatError),
    ("drn-12-digits", lambda: MeterNumber.parse("000000000000"), sts.FormatError),
    ("drn-letters", lambda: MeterNumber.parse("0000000000a"), sts.FormatError),
    ("drn-empty", lambda: MeterNumber.parse(""), sts.FormatError),
    ("drn-wrong-check-digit", lambda: MeterNumber.parse("47500150232"), sts.CheckDigitError),
    ("drn13-wrong-check-digit", lambda: MeterNumber.parse("0100000000009"), sts.CheckDigitError),
    ("iin-given-wrong-pairing", lambda: MeterNumber.parse("47500150231", iin="0000"), sts.FormatError),
    ("luhn-of-letters", lambda: sts.luhn_digit("12a4"), sts.FormatError),
    ("luhn-of-nothing", lambda: sts.luhn_digit(""), sts.FormatError),
    # digits must be ASCII digits, as in tokens: str.isdigit() also takes "²" and "١"
    ("luhn-of-superscripts", lambda: sts.luhn_digit("\u00b2\u00b3"), sts.FormatError),
    ("drn-superscript-digits", lambda: MeterNumber.parse("\u00b2" * 11), sts.FormatError),
    (
        "drn-arabic-indic-digits",
        lambda: MeterNumber.parse("\u0661\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0667"),
        sts.FormatError,
    ),
    # key parameters: KRN 1..9, KT 0..3, TI 0..99, SGC 6 digits
    ("krn-0-control-block", lambda: sts.control_block(2, "123456", 1, 0), sts.RangeError),
    ("krn-10-control-block", lambda: sts.control_block(2, "123456", 1, 10), sts.RangeError),
    ("krn-0-dkga02", derive02(krn=0), sts.RangeError),
    ("krn-10-dkga04", derive04(krn=10), sts.RangeError),
    ("kt-4-control-block", lambda: sts.control_block(4, "123456", 1, 1), sts.RangeError),
    ("kt-4-dkga02", derive02(kt=4), sts.RangeError),
    ("kt-4-dkga04", derive04(kt=4), sts.RangeError),
    ("ti-100-control-block", lambda: sts.control_block(2, "123456", 100, 1), sts.RangeError),
    ("ti-100-dkga04", derive04(ti=100), sts.RangeError),
    ("ti-negative", derive02(ti=-1), sts.RangeError),
    ("sgc-5-digits", derive02(sgc="12345"), sts.FormatError),
    ("sgc-7-digits", derive02(sgc="1234567"), sts.FormatError),
    ("sgc-letter", derive04(sgc="12345a"), sts.FormatError),
    ("sgc-empty", lambda: sts.control_block(2, "", 1, 1), sts.FormatError),
    ("sgc-superscript-dkga02", derive02(sgc="\u00b223456"), sts.FormatError),
    ("sgc-arabic-indic-dkga02", derive02(sgc="\u0661\u0662\u0663\u0664\u0665\u0666"), sts.FormatError),
    ("sgc-arabic-indic-dkga04", derive04(sgc="\u0661\u0662\u0663\u0664\u0665\u0667"), sts.FormatError),
    # key change sets: the same parameters, the key and its size
    ("kcs-krn-0", key_change(krn=0), sts.RangeError),
    ("kcs-krn-10", key_change(krn=10), sts.RangeError),
    ("kcs-kt-4", key_change(kt=4), sts.RangeError),
    ("kcs-ti-100", key_change(ti=100), sts.RangeError),
    ("kcs-ken-256", key_change(ken=256), sts.RangeError),
    ("kcs-ro-2", key_change(ro=2), sts.RangeError),
    ("kcs-key-bits-96", key_change(key_bits=96), sts.FormatError),
    ("kcs-key-too-big", key_change(new_key=1 << 64), sts.RangeError),
    ("kcs-key-negative", key_change(new_key=-1), sts.RangeError),
    ("kcs-128-without-sgc", key_change(key_bits=128), sts.FormatError),
    ("kcs-128-sgc-5-digits", key_change(key_bits=128, sgc="12345"), sts.FormatError),
    ("assemble-only-1st", lambda: sts.assemble(key_change()()[:1]), sts.FormatError),  # type: ignore[index]
    ("assemble-3-of-4", lambda: sts.assemble(key_change(key_bits=128, sgc="123456")()[:3]), sts.FormatError),  # type: ignore[index]
    # amounts
    ("amount-above-max", lambda: encode_amount(MAX_UNITS + 1), sts.RangeError),
    ("amount-negative", lambda: encode_amount(-1), sts.RangeError),
    ("credit-above-max", lambda: sts.encode(sts.TransferCredit(1, MAX_UNITS + 1), EA.STA, KEY07), sts.RangeError),
    ("credit-negative", lambda: sts.encode(sts.TransferCredit(1, -10), EA.STA, KEY07), sts.RangeError),
    ("mpl-above-max", lambda: sts.encode(sts.SetMaximumPowerLimit(1, MAX_UNITS + 1), EA.STA, KEY07), sts.RangeError),
    ("currency-negative-units", lambda: encode_currency(-1), sts.RangeError),
    ("currency-beyond-range", lambda: encode_currency(decode_currency(7, 0xFFFF)[0] + 1), sts.RangeError),
    # TID
    ("tid-before-1993", lambda: sts.tid_from_datetime(dt.datetime(1992, 12, 31, 23, 59)), sts.TidOutOfRangeError),
    (
        "tid-before-2014",
        lambda: sts.tid_from_datetime(dt.datetime(2013, 12, 31, 23, 59, 59), 2014),
        sts.TidOutOfRangeError,
    ),
    ("tid-1993-rollover", lambda: sts.tid_from_datetime(dt.datetime(2024, 11, 24, 20, 16)), sts.TidOutOfRangeError),
    (
        "tid-2035-rollover",
        lambda: sts.tid_from_datetime(dt.datetime(2066, 11, 24, 20, 16), 2035),
        sts.TidOutOfRangeError,
    ),
    ("tid-2^24", lambda: sts.datetime_from_tid(1 << 24), sts.TidOutOfRangeError),
    ("tid-negative", lambda: sts.datetime_from_tid(-1), sts.TidOutOfRangeError),
    ("tid-25-bits-in-token", lambda: sts.encode(sts.TransferCredit(1 << 24, 1), EA.STA, KEY07), sts.RangeError),
    ("base-date-2000", lambda: sts.tid_from_datetime(dt.datetime(2000, 1, 1), 2000), sts.FormatError),
    ("base-date-text", lambda: BaseDate.parse("nineteen"), sts.FormatError),
    ("issue-time-text", lambda: parse_issue_time("yesterday"), sts.FormatError),
    # fields beyond their bits
    ("rnd-16", lambda: sts.encode(sts.TransferCredit(1, 1, rnd=16), EA.STA, KEY07), sts.RangeError),
    ("control-37-bits", lambda: sts.encode(sts.MeterTest(1 << 36), EA.STA, 0), sts.RangeError),
    ("mfr-code-9-bits", lambda: sts.encode(sts.MeterTest(1, mfr_code=256), EA.STA, 0), sts.RangeError),
    ("register-17-bits", lambda: sts.encode(sts.ClearCredit(1, 1 << 16), EA.STA, KEY07), sts.RangeError),
    ("currency-tid-25-bits", lambda: sts.encode(sts.CurrencyCredit(1 << 24, 1), EA.STA, KEY07), sts.RangeError),
    # keys of the wrong size
    ("ea07-key-65-bits", lambda: sts.encode(CREDIT, EA.STA, 1 << 64), sts.FormatError),
    ("ea09-key-65-bits", lambda: sts.encode(CREDIT, EA.DEA, 1 << 64), sts.FormatError),
    ("ea11-key-129-bits", lambda: sts.encode(CREDIT, EA.MISTY1, 1 << 128), sts.FormatError),
    ("key-negative", lambda: sts.encode(CREDIT, EA.STA, -1), sts.FormatError),
    ("decode-ea07-key-65-bits", lambda: sts.decode(TOKEN07, EA.STA, KEY11), sts.FormatError),
    ("decode-without-key", lambda: sts.decode(TOKEN07, EA.STA, None), sts.FormatError),
    ("dkga02-vk-7-bytes", lambda: sts.dkga02(VK02[:7], METER, 2, "123456", 1, 1), sts.FormatError),
    ("dkga02-vk-20-bytes", lambda: sts.dkga02(VK04, METER, 2, "123456", 1, 1), sts.FormatError),
    ("dkga04-vk-8-bytes", lambda: sts.dkga04(VK02, METER, 2, "123457", 1, 1, BaseDate.Y1993, EA.STA), sts.FormatError),
    ("ea-8", lambda: EA.parse(8), sts.FormatError),
    ("ea-text", lambda: EA.parse("misty"), sts.FormatError),
    # algorithms that are not public or not defined
    ("dkga01", lambda: sts.derive_decoder_key(1, VK02, METER, 1, "123456", 1, 1), sts.UnsupportedError),
    ("dkga03", lambda: sts.derive_decoder_key(3, VK02 * 2, METER, 2, "123456", 1, 1), sts.UnsupportedError),
    ("dkga05", lambda: sts.derive_decoder_key(5, VK02, METER, 2, "123456", 1, 1), sts.FormatError),
    ("dkga04-for-ea09", derive04(ea=EA.DEA), sts.UnsupportedError),
    # tokens that are not tokens
    ("token-letter", lambda: sts.decode(TOKEN07[:-1] + "a", EA.STA, KEY07), sts.FormatError),
    ("token-19-digits", lambda: sts.decode(TOKEN07[:-1], EA.STA, KEY07), sts.FormatError),
    ("token-21-digits", lambda: sts.decode(TOKEN07 + "0", EA.STA, KEY07), sts.FormatError),
    ("token-empty", lambda: sts.decode("", EA.STA, KEY07), sts.FormatError),
    ("token-fullwidth-digits", lambda: sts.decode("１" * 20, EA.STA, KEY07), sts.FormatError),
    ("token-arabic-digits", lambda: sts.decode("\u0661" * 20, EA.STA, KEY07), sts.FormatError),
    ("token-signed", lambda: sts.decode("+" + TOKEN07[1:], EA.STA, KEY07), sts.FormatError),
    ("token-2^66", lambda: sts.decode(str(1 << 66), EA.STA, KEY07), sts.FormatError),
    ("token-all-nines", lambda: sts.decode("9" * 20, EA.STA, KEY07), sts.FormatError),
    ("parse-2^66", lambda: parse_digits("73786976294838206464"), sts.FormatError),
    # tokens that do not authenticate
    ("wrong-key", lambda: sts.decode(TOKEN07, EA.STA, KEY07 ^ 1), sts.CrcError),
    ("wrong-ea", lambda: sts.decode(TOKEN07, EA.DEA, KEY07), sts.CrcError),
    ("mistyped-last-digit", lambda: sts.decode(TOKEN07[:-1] + "8", EA.STA, KEY07), sts.CrcError),
    ("swapped-digits", lambda: sts.decode(TOKEN07[1] + TOKEN07[0] + TOKEN07[2:], EA.STA, KEY07), sts.CrcError),
    # class 3 is reserved
    (
        "class-3",
        lambda: sts.decode(to_digits(insert_class(0x0123456789ABCDEF, 3)), EA.STA, KEY07),
        sts.UnsupportedError,
    ),
    ("class-3-no-key", lambda: sts.decode(to_digits(insert_class(0, 3)), EA.STA, None), sts.UnsupportedError),
]


@pytest.mark.parametrize(("action", "error"), [pytest.param(a, e, id=name) for name, a, e in CASES])
def test_bad_input_gets_a_typed_error(action: Callable[[], object], error: type[sts.StsError]) -> None:
    with pytest.raises(error) as caught:
        action()
    assert caught.value.code == CODES[error]
    assert caught.value.message and str(caught.value) == caught.value.message


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("237161x0501183194197", "a token is 20 digits; character 7 is 'x'"),
        ("2371 6100 5011 8319 419O", "a token is 20 digits; character 24 is 'O'"),  # counted as typed
        ("２３７１６１００５０１１８３１９４１９７", "a token is 20 digits; character 1 is '２'"),  # not ASCII digits
        ("2371610050118319419", "a token is 20 digits (got 19)"),
        ("2371-6100-5011-8319-41977", "a token is 20 digits (got 21)"),
    ],
)
def test_a_token_that_is_not_20_digits_says_why(token: str, says: str) -> None:
    with pytest.raises(sts.FormatError) as exc:
        parse_digits(token)
    assert exc.value.message == says
    with pytest.raises(sts.FormatError, match=re.escape(says)):
        sts.decode(token, EA.STA, KEY07)


def test_max_66_bit_value_is_a_well_formed_token() -> None:
    """2^66 - 1 still fits (it is not a format error); it just does not authenticate under this key."""
    assert parse_digits("73786976294838206463") == (1 << 66) - 1
    with pytest.raises((sts.CrcError, sts.UnsupportedError)):
        sts.decode("73786976294838206463", EA.STA, KEY07)


RESERVED = (
    [(0, s, ea) for s in range(8, 16) for ea in EA]
    + [(2, s, ea) for s in range(10, 16) for ea in EA]
    + [(1, s, EA.STA) for s in range(2, 16)]
)


@pytest.mark.parametrize(("token_class", "subclass", "ea"), RESERVED, ids=lambda x: str(getattr(x, "name", x)))
def test_reserved_subclasses_decode_to_unsupported(token_class: int, subclass: int, ea: EA) -> None:
    """A reserved subclass with a valid CRC authenticates, then is refused as unsupported (not a CRC error)."""
    token = reserved_token(token_class, subclass, ea, key_for(ea))
    with pytest.raises(sts.UnsupportedError) as caught:
        sts.decode(token, ea, key_for(ea))
    assert caught.value.code == "unsupported"
    # and through the batch contract
    answer = token_ops.handle(
        {"op": "decode", "ea": int(ea), "decoder_key": f"{key_for(ea):0{ea.key_bits // 4}x}", "token": token}
    )
    assert answer["error"]["code"] == "unsupported"


@pytest.mark.parametrize("ea", list(EA), ids=lambda e: e.name)
def test_class_3_is_unsupported_under_every_ea(ea: EA) -> None:
    for block in (0, 0x0123456789ABCDEF, (1 << 64) - 1):
        with pytest.raises(sts.UnsupportedError):
            sts.decode(to_digits(insert_class(block, 3)), ea, key_for(ea))


def _spellings(secret: int | bytes) -> list[str]:
    """The ways a key could show up in a message: hex (any width, any case) and decimal."""
    if isinstance(secret, bytes):
        return [secret.hex(), str(int.from_bytes(secret, "big"))]
    return [f"{secret:x}", f"{secret:016x}", f"{secret:032x}", str(secret)]


LEAKS: list[tuple[str, Callable[[], object], list[int | bytes]]] = [
    ("wrong-key", lambda: sts.decode(TOKEN07, EA.STA, KEY07 ^ 0xFF), [KEY07 ^ 0xFF, KEY07]),
    ("wrong-key-ea11", lambda: sts.decode(TOKEN07, EA.MISTY1, KEY11 ^ 0xFF), [KEY11 ^ 0xFF, KEY11]),
    ("ea07-key-too-big", lambda: sts.encode(CREDIT, EA.STA, KEY11), [KEY11]),
    ("ea11-key-too-big", lambda: sts.encode(CREDIT, EA.MISTY1, KEY11 << 8), [KEY11 << 8]),
    ("decode-key-too-big", lambda: sts.decode(TOKEN07, EA.STA, KEY11), [KEY11]),
    ("dkga02-vk-size", lambda: sts.dkga02(VK04, METER, 2, "123456", 1, 1), [VK04]),
    ("dkga04-vk-size", lambda: sts.dkga04(VK02, METER, 2, "123457", 1, 1, BaseDate.Y1993, EA.MISTY1), [VK02]),
    ("dkga04-bad-sgc", lambda: sts.dkga04(VK04, METER, 2, "12345", 1, 1, BaseDate.Y1993, EA.MISTY1), [VK04]),
    ("new-key-too-big", lambda: sts.key_change_set(KEY11, key_bits=64, ken=1, krn=1, kt=2, ti=1), [KEY11]),
    ("new-key-bad-ken", lambda: sts.key_change_set(KEY07, key_bits=64, ken=999, krn=1, kt=2, ti=1), [KEY07]),
]


@pytest.mark.parametrize(("action", "secrets"), [pytest.param(a, k, id=n) for n, a, k in LEAKS])
def test_no_error_message_contains_the_key(action: Callable[[], object], secrets: list[int | bytes]) -> None:
    with pytest.raises(sts.StsError) as caught:
        action()
    message = caught.value.message.lower()
    for secret in secrets:
        for spelling in _spellings(secret):
            assert spelling not in message, f"key material {spelling} in {message!r}"


KEY07_HEX = f"{KEY07:016x}"
DECODE = {"op": "decode", "ea": 7, "decoder_key": KEY07_HEX, "token": TOKEN07}
DERIVE = {"op": "derive_key", "dkga": 4, "vending_key": VK04.hex(), "drn": "00000000000", "kt": 2, "sgc": "123456"}
DERIVE |= {"ti": 1, "krn": 1}
KEY_CHANGE = {"op": "key_change", "ea": 7, "decoder_key": KEY07_HEX, "new_key": f"{KEY11:032x}", "ken": 1, "krn": 1}
KEY_CHANGE |= {"kt": 2, "ti": 1}
BATCH_LEAKS = {
    "crc-error": {**DECODE, "decoder_key": f"{KEY07 ^ 0xFF:016x}"},
    "key-15-hex": {**DECODE, "decoder_key": KEY07_HEX[:-1]},
    "key-17-hex": {**DECODE, "decoder_key": KEY07_HEX + "0"},
    "key-64-bits-for-ea11": {**DECODE, "ea": 11},
    "key-not-hex": {**DECODE, "decoder_key": "g" + KEY07_HEX[1:]},
    "dkga02-with-160-bit-vk": {**DERIVE, "dkga": 2},
    "dkga04-check-digit": {**DERIVE, "drn": "00000000001"},
    "dkga04-kt-9": {**DERIVE, "kt": 9},
    "key-change-ken-256": {**KEY_CHANGE, "ken": 256},
    "key-change-new-key-18-hex": {**KEY_CHANGE, "new_key": KEY07_HEX + "00"},
    "encode-key-14-hex": {**DECODE, "op": "encode", "decoder_key": KEY07_HEX[:-2], "class": 0, "subclass": 0, "tid": 1,
                          "amount": 1, "rnd": 0},
}  # fmt: skip


@pytest.mark.parametrize("req", list(BATCH_LEAKS.values()), ids=list(BATCH_LEAKS))
def test_no_batch_error_message_contains_the_key(req: dict[str, Any]) -> None:
    answer = token_ops.handle(req)
    assert set(answer) == {"error"}, answer
    message = answer["error"]["message"].lower()
    for name in ("decoder_key", "vending_key", "new_key"):
        if name in req:
            text = req[name].lower()
            assert text not in message and text[:12] not in message, (name, message)
    for secret in (KEY07, KEY11, VK04):
        for spelling in _spellings(secret):
            assert spelling not in message, message


def test_batch_refuses_a_meter_number_in_non_ascii_digits() -> None:
    """'١٢١٢٣٤٥٦٧٨٧' is 12123456787 in Arabic-Indic digits. It must be refused like any non-digit, not turned
    into a MeterPAN whose UTF-8 bytes (with the 18-byte length prefix) feed DKGA04: that derives a key no meter
    has, silently."""
    req = {"op": "derive_key", "dkga": 4, "vending_key": VK04.hex(), "kt": 2, "sgc": "123457", "ti": 1, "krn": 1}
    req |= {"ea": 11}
    answer = token_ops.handle({**req, "drn": "\u0661\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0667"})
    assert answer.get("error", {}).get("code") == "format_error", answer


def test_an_issue_time_with_a_time_zone_is_refused() -> None:
    from mita.sts.tid import parse_issue_time

    with pytest.raises(sts.FormatError):
        parse_issue_time("2026-11-25T21:00+05:00")


@pytest.mark.parametrize("parse", [EA.parse, BaseDate.parse])
def test_a_short_field_quotes_what_it_was_given_but_never_a_key_typed_into_it(parse: Any) -> None:
    with pytest.raises(sts.FormatError, match=r"\(got .x.\)"):
        parse("x")
    key = "0123456789abcdef0123456789abcdef"
    with pytest.raises(sts.FormatError) as refused:
        parse(key)
    assert key not in refused.value.message and "(got 32 characters)" in refused.value.message
