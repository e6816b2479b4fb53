"""Hypothesis properties: every codec round-trips, amounts round up minimally, and nothing but StsError escapes.

The conformance vectors pin the bits; these properties cover the space between them: every token type of the
registry under every EA with random keys, every amount and currency field, every TID of every base date.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import string
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_token
from mita import sts
from mita.cli import token_ops
from mita.sts import (
    EA,
    REGISTRY,
    BaseDate,
    CreditKind,
    CurrencyCredit,
    MeterNumber,
    Token,
    TransferCredit,
    bulk,
    misty1,
    recipes,
)
from mita.sts import ea as ea_mod
from mita.sts.amount import MAX_UNITS, decode_amount, decode_currency, encode_amount, encode_currency
from mita.sts.codec import extract_class, insert_class, parse_digits, to_digits
from mita.sts.crc import crc16_modbus, crc_field
from mita.sts.sta import SAMPLE_STA, STA
from mita.sts.tid import TID_MAX
from mita.sts.tokens import (
    CURRENCY_EXPONENT_BIT,
    ClearCredit,
    ClearTamperCondition,
    MeterTest,
    MeterTestWide,
    Set1stSectionDecoderKey,
    Set2ndSectionDecoderKey,
    Set3rdSectionDecoderKey,
    Set4thSectionDecoderKey,
    SetMaximumPhasePowerUnbalanceLimit,
    SetMaximumPowerLimit,
    SetTariffRate,
    SetWaterMeterFactor,
    from_block,
    to_block,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

M64 = (1 << 64) - 1
AMOUNT = "amount"  # a 16-bit exponent/mantissa field: drawn as a representable value

#: The fields of every fixed-layout token type with their widths in bits (SPEC.md §1.3), written out here
#: rather than read from the implementation's own layout table.
FIELDS: dict[type[Token], dict[str, int | str]] = {
    MeterTest: {"control": 36, "mfr_code": 8},
    MeterTestWide: {"control": 28, "mfr_code": 16},
    SetMaximumPowerLimit: {"rnd": 4, "tid": 24, "mpl": AMOUNT},
    ClearCredit: {"rnd": 4, "tid": 24, "register": 16},
    SetTariffRate: {"rnd": 4, "tid": 24, "rate": 16},
    Set1stSectionDecoderKey: {"kenho": 4, "krn": 4, "ro": 1, "res": 1, "kt": 2, "nkho": 32},
    Set2ndSectionDecoderKey: {"kenlo": 4, "ti": 8, "nklo": 32},
    ClearTamperCondition: {"rnd": 4, "tid": 24, "pad": 16},
    SetMaximumPhasePowerUnbalanceLimit: {"rnd": 4, "tid": 24, "mppul": AMOUNT},
    SetWaterMeterFactor: {"rnd": 4, "tid": 24, "wm_factor": 16},
    Set3rdSectionDecoderKey: {"sgclo": 12, "nkmo2": 32},
    Set4thSectionDecoderKey: {"sgcho": 12, "nkmo1": 32},
}

amounts = st.integers(0, 0xFFFF).map(decode_amount)  # every representable amount, and only those
tids = st.integers(0, TID_MAX)
eas = st.sampled_from(list(EA))


def keys_for(ea: EA) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << ea.key_bits) - 1)


def test_every_registry_type_is_covered() -> None:
    assert set(REGISTRY.values()) == {TransferCredit, CurrencyCredit, *FIELDS}
    assert sorted(REGISTRY) == [(0, s) for s in range(8)] + [(1, 0), (1, 1)] + [(2, s) for s in range(10)]


@st.composite
def tokens(draw: st.DrawFn, kinds: list[tuple[int, int]] | None = None) -> Token:
    """A random valid token of any registered class/subclass."""
    c, s = draw(st.sampled_from(kinds or sorted(REGISTRY)))
    kind = REGISTRY[(c, s)]
    if kind is TransferCredit:
        return TransferCredit(draw(tids), draw(amounts), draw(st.integers(0, 15)), CreditKind(s))
    if kind is CurrencyCredit:
        units, _ = decode_currency(draw(st.integers(0, 7)), draw(st.integers(0, 0xFFFF)))
        return CurrencyCredit(draw(tids), units, draw(st.booleans()), CreditKind(s))
    values = {
        name: draw(amounts if width == AMOUNT else st.integers(0, (1 << width) - 1))  # type: ignore[operator]
        for name, width in FIELDS[kind].items()
    }
    return kind(**values)


# ---------------------------------------------------------------- tokens


@SETTINGS
@given(tokens())
def test_block_round_trip(token: Token) -> None:
    block = to_block(token)
    assert 0 <= block <= M64
    assert block >> 60 == token.subclass
    assert from_block(token.token_class, block) == token
    assert make_token(token.fields()) == token  # fields() is the whole token


@SETTINGS
@given(tokens(), st.data())
def test_encode_decode_round_trip_under_every_ea(token: Token, data: st.DataObject) -> None:
    ea = data.draw(eas, label="ea")
    key = data.draw(keys_for(ea), label="key")
    digits = sts.encode(token, ea, key)
    assert len(digits) == 20 and digits.isdigit()
    assert extract_class(parse_digits(digits))[0] == token.token_class
    assert sts.decode(digits, ea, key) == token
    if token.token_class == 1:  # sent in clear: the key plays no part
        assert sts.decode(digits, ea, None) == token
        assert sts.encode(token, ea, key ^ 1) == digits


@SETTINGS
@given(tokens(), st.data())
def test_batch_encode_decode_round_trip(token: Token, data: st.DataObject) -> None:
    """The same through the JSON contract: the fields a decode answers are the fields an encode takes."""
    ea = data.draw(eas, label="ea")
    key = data.draw(keys_for(ea), label="key")
    fields = token.fields()
    req: dict[str, Any] = {"ea": int(ea), **fields}
    if token.token_class != 1:
        req["decoder_key"] = f"{key:0{ea.key_bits // 4}x}"
    answer = token_ops.handle({**req, "op": "encode"})
    assert answer == {"token": sts.encode(token, ea, key)}
    back = token_ops.handle({k: v for k, v in req.items() if k in ("ea", "decoder_key")} | answer | {"op": "decode"})
    assert back == fields
    assert json.loads(json.dumps(back)) == fields


@SETTINGS
@given(st.sampled_from(sorted(FIELDS, key=lambda k: k.__name__)), st.data())
def test_a_field_one_past_its_width_is_a_range_error(kind: type[Token], data: st.DataObject) -> None:
    name, width = data.draw(st.sampled_from(sorted(FIELDS[kind].items(), key=str)))
    token = data.draw(tokens([(kind.token_class, kind.subclass)]))
    values = {k: v for k, v in token.fields().items() if k not in ("class", "subclass")}
    values[name] = MAX_UNITS + 1 if width == AMOUNT else 1 << width  # type: ignore[operator]
    with pytest.raises(sts.RangeError):
        to_block(kind(**values))
    values[name] = -1
    with pytest.raises(sts.RangeError):
        to_block(kind(**values))


# ---------------------------------------------------------------- amounts


@SETTINGS
@given(st.integers(0, MAX_UNITS))
def test_amount_rounds_up_to_the_smallest_field(units: int) -> None:
    field = encode_amount(units)
    assert 0 <= field <= 0xFFFF
    assert decode_amount(field) >= units
    # minimal: decode is strictly increasing over all 65536 fields (next test), so the field below is too small
    assert field == 0 or decode_amount(field - 1) < units
    assert decode_amount(field) - units < 10 ** (field >> 14)  # less than one step of its band


def test_every_amount_field_round_trips_and_decode_is_increasing() -> None:
    values = [decode_amount(f) for f in range(1 << 16)]
    assert all(a < b for a, b in itertools.pairwise(values))  # across band edges too
    assert values[-1] == MAX_UNITS
    assert all(encode_amount(v) == f for f, v in enumerate(values))


@SETTINGS
@given(st.integers(MAX_UNITS + 1, 10**12))
def test_amount_above_the_maximum_is_refused(units: int) -> None:
    with pytest.raises(sts.RangeError):
        encode_amount(units)


def _currency_exponent(se: int, field: int) -> int:
    return (field >> 14 & 1) | (field >> 15 & 1) << 1 | (se & 7) << 2


def _currency_pack(e: int, m: int, negative: bool) -> tuple[int, int]:
    return (8 if negative else 0) | e >> 2, (e >> 1 & 1) << 15 | (e & 1) << 14 | m


CURRENCY_MAX = decode_currency(7, 0xFFFF)[0]


@SETTINGS
@given(st.one_of(st.integers(0, 10**9), st.integers(0, CURRENCY_MAX)), st.booleans())
def test_currency_rounds_up_to_the_smallest_field(units: int, negative: bool) -> None:
    se, field = encode_currency(units, negative)
    assert 0 <= se <= 15 and 0 <= field <= 0xFFFF
    value, neg = decode_currency(se, field)
    assert neg is negative
    assert value >= units
    e, m = _currency_exponent(se, field), field & 0x3FFF
    if (e, m) != (0, 0):  # the representable value just below (in exponent, mantissa order) is too small
        below = _currency_pack(e, m - 1, negative) if m else _currency_pack(e - 1, 0x3FFF, negative)
        assert decode_currency(*below)[0] < units


@SETTINGS
@given(st.integers(0, 15), st.integers(0, 0xFFFF))
def test_every_currency_field_round_trips(se: int, field: int) -> None:
    assert encode_currency(*decode_currency(se, field)) == (se, field)


@SETTINGS
@given(st.integers(CURRENCY_MAX + 1, CURRENCY_MAX * 10))
def test_currency_beyond_the_exponent_range_is_refused(units: int) -> None:
    with pytest.raises(sts.RangeError):
        encode_currency(units)


# ---------------------------------------------------------------- CRC, class bits, digits


def _reference_crc16_modbus(data: bytes) -> int:
    """Bit by bit, straight from the definition: reflected 0xA001, init FFFF, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@SETTINGS
@given(st.binary(max_size=32))
def test_crc16_modbus_matches_the_bitwise_definition(data: bytes) -> None:
    assert crc16_modbus(data) == _reference_crc16_modbus(data)


@SETTINGS
@given(st.integers(0, (1 << 50) - 1), st.booleans())
def test_crc_field(info50: int, currency: bool) -> None:
    data = info50.to_bytes(7, "big") + (b"\x01" if currency else b"")
    crc = _reference_crc16_modbus(data)
    field = crc_field(info50, currency)
    assert field == (crc & 0xFF) << 8 | crc >> 8  # byte-swapped into the block
    assert _reference_crc16_modbus(data + field.to_bytes(2, "big")) == 0  # the field completes the message
    assert crc_field(info50 ^ 1 << (info50 % 50), currency) != field  # a one-bit change is always caught


@SETTINGS
@given(st.integers(0, M64), st.integers(0, 3))
def test_class_bit_transposition(block: int, token_class: int) -> None:
    value = insert_class(block, token_class)
    assert 0 <= value < 1 << 66
    assert value >> 27 & 3 == token_class
    assert value >> 64 == block >> 27 & 3  # the two displaced bits move to 65..64
    assert value & ~(3 << 27) & M64 == block & ~(3 << 27) & M64
    assert extract_class(value) == (token_class, block)


@SETTINGS
@given(st.integers(0, (1 << 66) - 1))
def test_class_bit_extraction_is_onto(value: int) -> None:
    token_class, block = extract_class(value)
    assert insert_class(block, token_class) == value


@SETTINGS
@given(st.integers(0, (1 << 66) - 1), st.sampled_from(["", " ", "-"]))
def test_digits_round_trip(value: int, sep: str) -> None:
    digits = to_digits(value)
    assert len(digits) == 20 and digits.isdigit()
    assert parse_digits(digits) == value
    assert parse_digits(sep.join(digits[i : i + 4] for i in range(0, 20, 4))) == value


@SETTINGS
@given(st.integers(1 << 66, 10**20 - 1))
def test_digits_beyond_66_bits_are_refused(value: int) -> None:
    with pytest.raises(sts.FormatError):
        parse_digits(str(value))


# ---------------------------------------------------------------- TID


@SETTINGS
@given(st.sampled_from(list(BaseDate)), tids, st.integers(0, 59), st.integers(0, 999_999))
def test_tid_datetime_round_trip(base: BaseDate, tid: int, seconds: int, micros: int) -> None:
    when = sts.datetime_from_tid(tid, base)
    assert when.second == 0 and base.start <= when < base.rollover
    assert sts.tid_from_datetime(when, base) == tid
    assert sts.tid_from_datetime(when + dt.timedelta(seconds=seconds, microseconds=micros), base) == tid


@SETTINGS
@given(st.sampled_from(list(BaseDate)), st.data())
def test_datetime_tid_round_trip(base: BaseDate, data: st.DataObject) -> None:
    when = data.draw(st.datetimes(min_value=base.start, max_value=base.rollover - dt.timedelta(microseconds=1)))
    tid = sts.tid_from_datetime(when, base)
    assert 0 <= tid <= TID_MAX
    assert sts.datetime_from_tid(tid, base) == when.replace(second=0, microsecond=0)


@SETTINGS
@given(st.sampled_from(list(BaseDate)), st.data())
def test_times_outside_the_base_date_span_are_refused(base: BaseDate, data: st.DataObject) -> None:
    before = st.datetimes(max_value=base.start - dt.timedelta(microseconds=1))
    after = st.datetimes(min_value=base.rollover)
    when = data.draw(st.one_of(before, after))
    with pytest.raises(sts.TidOutOfRangeError):
        sts.tid_from_datetime(when, base)


# ---------------------------------------------------------------- Luhn and meter numbers

digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=30)


def _luhn_valid(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@SETTINGS
@given(digit_strings, st.data())
def test_luhn(payload: str, data: st.DataObject) -> None:
    check = sts.luhn_digit(payload)
    assert 0 <= check <= 9
    assert _luhn_valid(payload + str(check))
    i = data.draw(st.integers(0, len(payload) - 1))
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != payload[i]]))
    assert sts.luhn_digit(payload[:i] + other + payload[i + 1 :]) != check  # every single-digit typo is caught


@SETTINGS
@given(st.sampled_from([("600727", 2), ("0000", 4)]), st.data())
def test_meter_numbers(iin_and_mfr: tuple[str, int], data: st.DataObject) -> None:
    iin, mfr_digits = iin_and_mfr
    body = data.draw(st.text(alphabet="0123456789", min_size=mfr_digits + 8, max_size=mfr_digits + 8))
    drn = body + str(sts.luhn_digit(body))
    meter = MeterNumber.parse(drn)
    assert (meter.iin, meter.drn, meter.mfr_code) == (iin, drn, body[:mfr_digits])
    assert len(meter.pan) == 18 and meter.pan.startswith(iin + drn) and _luhn_valid(meter.pan)
    assert meter.pan_block() == int((iin + drn)[-16:], 16)
    wrong = drn[:-1] + str((int(drn[-1]) + data.draw(st.integers(1, 9))) % 10)
    with pytest.raises(sts.CheckDigitError):
        MeterNumber.parse(wrong)


# ---------------------------------------------------------------- key change sets


@SETTINGS
@given(st.sampled_from([64, 128]), st.data())
def test_key_change_set_round_trip(key_bits: int, data: st.DataObject) -> None:
    new_key = data.draw(st.integers(0, (1 << key_bits) - 1), label="new_key")
    ken, krn, kt = data.draw(st.integers(0, 255)), data.draw(st.integers(1, 9)), data.draw(st.integers(0, 3))
    ti, ro = data.draw(st.integers(0, 99)), data.draw(st.integers(0, 1))
    sgc = data.draw(st.from_regex(r"[0-9]{6}", fullmatch=True)) if key_bits == 128 else None
    ea = data.draw(eas, label="ea")
    old = data.draw(keys_for(ea), label="old key")
    sections = sts.key_change_set(new_key, key_bits=key_bits, ken=ken, krn=krn, kt=kt, ti=ti, ro=ro, sgc=sgc)
    assert [s.subclass for s in sections] == ([3, 4] if key_bits == 64 else [3, 4, 8, 9])
    digits = [sts.encode(s, ea, old) for s in sections]
    decoded = [sts.decode(t, ea, old) for t in digits]
    entered = data.draw(st.permutations(decoded), label="entry order")  # a meter takes them in any order
    expected = sts.NewKeyConfig(new_key, key_bits, ken, krn, kt, ti, ro, sgc)
    assert sts.assemble(entered) == expected  # type: ignore[arg-type]
    req = {"op": "key_change", "ea": int(ea), "decoder_key": f"{old:0{ea.key_bits // 4}x}"}
    req |= {"new_key": f"{new_key:0{key_bits // 4}x}", "ken": ken, "krn": krn, "kt": kt, "ti": ti, "ro": ro}
    if sgc is not None:
        req["sgc"] = sgc
    # mita token batch answers in entry order: a 64-bit meter takes a 4-token set's 3rd and 4th sections first
    assert token_ops.handle(req) == {"tokens": [digits[i] for i in recipes.entry_order(ea, key_bits)]}


# ---------------------------------------------------------------- the layout table and the bulk path


def test_the_layout_table_covers_every_registered_type() -> None:
    """Every token type, class 0 credit included, declares all 44 data bits once, one entry per value field."""
    for kind in set(REGISTRY.values()):
        used = 0
        for _name, shift, width, codec in kind.LAYOUT:
            bits = ((1 << width) - 1) << shift
            if codec == "currency":  # the exponent's top three bits sit apart from the 16-bit field
                bits |= 7 << CURRENCY_EXPONENT_BIT
            assert not used & bits, f"{kind.__name__}: overlapping fields"
            used |= bits
        assert used == ((1 << 44) - 1) << 16, kind.__name__
        assert {name for name, *_ in kind.LAYOUT} == set(kind.__match_args__) - {"kind"}


@SETTINGS
@given(tokens())
def test_the_table_walk_is_data_bits(token: Token) -> None:
    """The hand-written ``data_bits`` of class 0 (the vend hot path) and the generic walk of LAYOUT agree."""
    assert Token.data_bits(token) == token.data_bits()


@SETTINGS
@given(st.sampled_from(sorted(REGISTRY)), st.sampled_from([EA.STA, EA.MISTY1]), st.data())
def test_the_bulk_path_agrees_with_the_single_path(kind: tuple[int, int], ea: EA, data: st.DataObject) -> None:
    """Every registered token type, random field values and per-token keys, EA07 and EA11.

    Fast path: layout_data (from the LAYOUT table) -> data_blocks -> encode_blocks, then decode (and for class 0
    credit encode_credit and credit_fields). Single path: data_bits, to_block, encode, decode, from_block.
    """
    token_class, sub = kind
    token_type = REGISTRY[kind]
    batch: list[Token] = data.draw(st.lists(tokens([kind]), min_size=1, max_size=6), label="tokens")
    if token_type is CurrencyCredit:  # the bulk arrays are 64-bit: any amount below 2**64, rounded up alike
        currency = [c for c in batch if isinstance(c, CurrencyCredit)]
        batch = [CurrencyCredit(c.tid, c.amount & M64, c.negative, c.kind) for c in currency]
    n = len(batch)
    keys = data.draw(st.lists(keys_for(ea), min_size=n, max_size=n), label="keys")
    if ea is EA.STA:
        bulk_keys: Any = np.array(keys, dtype=np.uint64)
    elif data.draw(st.booleans(), label="EA11 keys as bytes"):
        bulk_keys = np.frombuffer(b"".join(k.to_bytes(16, "big") for k in keys), dtype=np.uint8).reshape(n, 16)
    else:
        bulk_keys = keys
    single = [sts.encode(t, ea, k) for t, k in zip(batch, keys, strict=True)]
    decoded = [sts.decode(d, ea, k) for d, k in zip(single, keys, strict=True)]

    fields = {name: [int(getattr(t, name)) for t in batch] for name, *_ in token_type.LAYOUT}
    data44 = bulk.layout_data(token_type, n, **fields)
    assert [int(d) for d in data44] == [t.data_bits() for t in batch]
    blocks = bulk.data_blocks(token_class, sub, data44)
    assert [int(b) for b in blocks] == [to_block(t) for t in batch]
    assert [t.decode() for t in bulk.encode_blocks(token_class, blocks, bulk_keys, ea)] == single
    if token_type is TransferCredit:
        credit = bulk.encode_credit(fields["tid"], fields["amount"], fields["rnd"], bulk_keys, ea, subclass=sub)
        assert [t.decode() for t in credit] == single

    out = bulk.decode(np.array([d.encode() for d in single], dtype="S20"), bulk_keys, ea)
    assert out["ok"].all()
    assert [int(c) for c in out["class"]] == [token_class] * n
    assert [int(s) for s in out["subclass"]] == [sub] * n
    assert [int(b) for b in out["block"]] == [to_block(t) for t in batch]
    assert [int(d) for d in out["data"]] == [t.data_bits() for t in batch]
    assert [from_block(token_class, int(b)) for b in out["block"]] == decoded
    if token_type is TransferCredit:
        got = bulk.credit_fields(out["data"])
        assert {k: [int(v) for v in got[k]] for k in got} == {
            k: [getattr(t, k) for t in decoded] for k in ("rnd", "tid", "amount")
        }


# ---------------------------------------------------------------- ciphers


@SETTINGS
@given(st.integers(0, M64), st.integers(0, M64))
def test_sta_decrypts_what_it_encrypts(block: int, key: int) -> None:
    for cipher in (STA, SAMPLE_STA):
        encrypted = cipher.encrypt(block, key)
        assert 0 <= encrypted <= M64
        assert cipher.decrypt(encrypted, key) == block


@SETTINGS
@given(st.integers(0, M64), st.integers(0, (1 << 128) - 1))
def test_misty1_decrypts_what_it_encrypts(block: int, key: int) -> None:
    encrypted = misty1.encrypt(block, key)
    assert 0 <= encrypted <= M64
    assert misty1.decrypt(encrypted, key) == block


@SETTINGS
@given(st.integers(0, M64), eas, st.data())
def test_every_ea_decrypts_what_it_encrypts(block: int, ea: EA, data: st.DataObject) -> None:
    key = data.draw(keys_for(ea))
    assert ea_mod.decrypt(ea, ea_mod.encrypt(ea, block, key), key) == block


# ---------------------------------------------------------------- fuzz: only typed errors escape

token_texts = st.one_of(
    st.text(min_size=20, max_size=20),
    st.text(alphabet=string.digits, min_size=20, max_size=20),
    st.text(alphabet=string.digits + " -x\u0663\u00b2\uff11", min_size=18, max_size=24),
    st.integers(0, 10**20 - 1).map(lambda n: f"{n:020d}"),
    st.text(max_size=30),
)


@FUZZ
@given(token_texts, eas, st.data())
def test_decode_raises_only_sts_errors(text: str, ea: EA, data: st.DataObject) -> None:
    key = data.draw(st.one_of(keys_for(ea), st.none(), st.integers(-(1 << 70), 1 << 140)), label="key")
    try:
        token = sts.decode(text, ea, key)
    except sts.StsError as exc:
        assert isinstance(exc.code, str) and exc.code and isinstance(exc.message, str)
    else:
        assert isinstance(token, Token)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELD_NAMES = [
    "op", "ea", "decoder_key", "token", "class", "subclass", "tid", "amount", "rnd", "negative", "control",
    "mfr_code", "mpl", "register", "rate", "pad", "mppul", "wm_factor", "kenho", "krn", "ro", "res", "kt", "nkho",
    "kenlo", "ti", "nklo", "sgclo", "nkmo2", "sgcho", "nkmo1", "dkga", "vending_key", "drn", "iin", "sgc",
    "base_date", "new_key", "ken", "issued",
]  # fmt: skip
plausible_values = st.one_of(
    st.integers(-2, 20),
    st.integers(0, 1 << 40),
    st.sampled_from([16, 32, 40]).flatmap(lambda n: st.text(alphabet="0123456789abcdef", min_size=n, max_size=n)),
    st.text(alphabet=string.digits, max_size=20),
    st.sampled_from(["7", "11", "1993", "2014-01-01", "600727", "0000", "00000000000", "123456", "1996-03-25T13:55"]),
    st.sampled_from(["23716100501183194197", "0abc12def3456789", "-bc12def3456789", "0x0c12def3456789", "²23456"]),
    json_values,
)
KEY07 = "e653341f9d5bf36f"
TEMPLATES: list[dict[str, Any]] = [
    {"op": "derive_key", "dkga": 2, "vending_key": "ab" * 8, "drn": "00000000000", "kt": 2, "sgc": "123456", "ti": 1,
     "krn": 1},
    {"op": "derive_key", "dkga": 4, "vending_key": "ab" * 20, "drn": "0100000000008", "kt": 2, "sgc": "123457",
     "ti": 1, "krn": 1, "base_date": 2014, "ea": 11},
    {"op": "encode", "ea": 7, "decoder_key": KEY07, "class": 0, "subclass": 0, "tid": 5871715, "amount": 1, "rnd": 5},
    {"op": "encode", "ea": 11, "decoder_key": KEY07 * 2, "class": 2, "subclass": 3, "kenho": 15, "krn": 1, "ro": 0,
     "kt": 2, "nkho": 1},
    {"op": "encode", "ea": 9, "class": 1, "subclass": 0, "control": 1},
    {"op": "decode", "ea": 7, "decoder_key": KEY07, "token": "23716100501183194197"},
    {"op": "key_change", "ea": 7, "decoder_key": KEY07, "new_key": "0123456789abcdef", "ken": 255, "krn": 2, "kt": 2,
     "ti": 1, "ro": 0},
    {"op": "key_change", "ea": 11, "decoder_key": KEY07 * 2, "new_key": KEY07 * 2, "ken": 255, "krn": 2, "kt": 2,
     "ti": 1, "sgc": "123456"},
    {"op": "tid", "issued": "1996-03-25T13:55", "base_date": 1993},
]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> Any:
    """Mostly a valid request with a few fields changed or dropped; sometimes any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    req = dict(draw(st.sampled_from(TEMPLATES)))
    for name in draw(st.lists(st.sampled_from(sorted(req)), max_size=2)):
        req.pop(name, None)
    names = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
    req |= draw(st.dictionaries(names, plausible_values, max_size=3))
    return req


def _check_answer(answer: Any) -> None:
    assert isinstance(answer, dict)
    json.dumps(answer)  # the batch writes it as one JSON line
    if "error" in answer:
        assert set(answer) == {"error"}
        assert set(answer["error"]) == {"code", "message"}
        assert isinstance(answer["error"]["code"], str) and answer["error"]["code"]
        assert isinstance(answer["error"]["message"], str)


@FUZZ
@given(requests())
def test_batch_handle_never_raises(req: Any) -> None:
    _check_answer(token_ops.handle(req))


@pytest.mark.parametrize("req", TEMPLATES, ids=lambda r: f"{r['op']}-ea{r.get('ea', 7)}")
def test_batch_templates_are_valid_requests(req: dict[str, Any]) -> None:
    """The fuzz starts from requests that work, so its mutations reach deep into each operation."""
    answer = token_ops.handle(req)
    assert "error" not in answer, answer
