"""The head-end's A-XDR codec: every encode/decode pair round-trips (Hypothesis), decoding is strict, gurux's
encoder (the meter's library) agrees with this decoder, and each dlms-cosem 21.3.2 defect cosem.py works around is
still there (a canary: when an upgrade fixes one, the library's own code can take over again)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from dlms_cosem import a_xdr, cosem, dlms_data
from hypothesis import given, settings
from hypothesis import strategies as st

from mita.headend import cosem as axdr
from mita.headend.cosem import CosemError

KINDS = list(axdr.INTEGERS)
#: No per-example deadline where an example imports gurux (the first) or handles long values: time is not the point.
UNTIMED = settings(deadline=None)


def bounds(kind: axdr.IntKind) -> tuple[int, int]:
    _, size, signed = axdr.INTEGERS[kind]
    return (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)


@st.composite
def integers(draw: st.DrawFn) -> tuple[axdr.IntKind, int]:
    kind = draw(st.sampled_from(KINDS))
    low, high = bounds(kind)
    return kind, draw(st.integers(low, high))


bits = st.text(alphabet="01", max_size=80)
offsets = st.none() | st.integers(-axdr.MAX_OFFSET_MIN, axdr.MAX_OFFSET_MIN).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)


@st.composite
def times(draw: st.DrawFn, tz: st.SearchStrategy[dt.tzinfo | None] = offsets) -> dt.datetime:
    """Date-times a COSEM clock carries: to the hundredth of a second, a fixed offset in whole minutes or none."""
    when = draw(st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)))
    return when.replace(microsecond=draw(st.integers(0, 99)) * 10_000, tzinfo=draw(tz))


# A-XDR values with their Python reading, nested: what a profile buffer or a structure holds.
leaves: st.SearchStrategy[tuple[bytes, Any]] = st.one_of(
    integers().map(lambda ki: (axdr.encode_integer(ki[1], ki[0]), ki[1])),
    st.booleans().map(lambda b: (axdr.encode_bool(b), b)),
    st.binary(max_size=300).map(lambda b: (axdr.encode_octet_string(b), b)),
    bits.map(lambda b: (axdr.encode_bit_string(b), b)),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5).flatmap(
        lambda items: st.sampled_from([axdr.encode_array, axdr.encode_structure]).map(
            lambda enc: (enc(raw for raw, _ in items), [v for _, v in items])
        )
    ),
    max_leaves=12,
)


# ------------------------------------------------------------------------------------------------ round trips


@given(integers())
def test_integers_of_every_kind_round_trip(kind_value: tuple[axdr.IntKind, int]) -> None:
    kind, value = kind_value
    raw = axdr.encode_integer(value, kind)
    assert axdr.decode(raw) == value
    assert axdr.decode_integer(raw) == value
    assert raw[0] == axdr.INTEGERS[kind][0].TAG


@pytest.mark.parametrize("kind", KINDS)
def test_an_integer_outside_its_kind_is_refused(kind: axdr.IntKind) -> None:
    low, high = bounds(kind)
    for value in (low - 1, high + 1):
        with pytest.raises(ValueError, match=kind):
            axdr.encode_integer(value, kind)
    with pytest.raises(ValueError):
        axdr.encode_integer(True, kind)


@given(st.booleans())
def test_booleans_round_trip(value: bool) -> None:
    assert axdr.decode_bool(axdr.encode_bool(value)) is value


@UNTIMED
@given(st.binary(max_size=70_000))
def test_octet_strings_of_any_length_round_trip(data: bytes) -> None:
    raw = axdr.encode_octet_string(data)
    assert axdr.decode_octet_string(raw) == data
    assert type(axdr.decode(raw)) is bytes


@given(bits)
def test_bit_strings_round_trip(value: str) -> None:
    decoded = axdr.decode(axdr.encode_bit_string(value))
    assert isinstance(decoded, axdr.BitString)
    assert decoded == value


@given(st.integers(0, 255), bits)
def test_token_status_round_trips(code: int, data: str) -> None:
    raw = axdr.encode_structure([axdr.encode_integer(code, "enum"), axdr.encode_bit_string(data)])
    assert axdr.parse_token_status(raw) == (code, data)


def test_token_status_as_the_simulated_meter_answers_it() -> None:
    assert axdr.parse_token_status(bytes.fromhex("02021603040800")) == (3, "00000000")
    assert axdr.parse_token_status(bytes.fromhex("02021606040804")) == (6, "00000100")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "020216030408",  # truncated bit-string
        "0202160304080000",  # one octet too many
        "02021103040800",  # status code an unsigned, not an enum
        "020216030908" + "00" * 8,  # data an octet-string
        "0203160304080000",  # three elements
        "0102160304080000",  # an array
    ],
)
def test_anything_else_is_not_a_token_status(raw: str) -> None:
    with pytest.raises(CosemError):
        axdr.parse_token_status(bytes.fromhex(raw))


@given(times())
def test_date_times_round_trip_with_their_offset(when: dt.datetime) -> None:
    octets = axdr.datetime_octets(when)
    assert len(octets) == 12
    back = axdr.datetime_from_octets(octets)
    assert back == when
    assert back.utcoffset() == when.utcoffset()
    assert axdr.decode_datetime(axdr.encode_datetime(when)) == when


def test_a_utc_clock_is_aware_and_a_clock_without_deviation_is_naive() -> None:
    assert axdr.datetime_from_octets(bytes.fromhex("07e80301ff0c0000000000" + "00")).tzinfo == dt.UTC
    assert axdr.datetime_from_octets(bytes.fromhex("07e80301ff0c0000008000" + "00")).tzinfo is None
    # the Blue Book's deviation: minutes from local time to UTC, so UTC+05:30 is -330 (as gurux writes it)
    india = axdr.datetime_from_octets(bytes.fromhex("07e80301ff0c000000feb6" + "00"))
    assert india.utcoffset() == dt.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(
    "octets",
    [
        "ffff0301ff0c0000000000" + "00",  # year not specified
        "07e8ff01ff0c0000000000" + "00",  # month not specified
        "07e80301ffff0000000000" + "00",  # hour not specified
        "07e80230ff0c0000000000" + "00",  # 30 February... day 48
        "07e80301ff0c0000640000" + "00",  # hundredths 100
        "07e80301ff0c00000004b0" + "00",  # deviation 1200 min
        "07e80301ff0c00000000",  # 10 octets
    ],
)
def test_a_date_time_that_is_not_one_instant_is_refused(octets: str) -> None:
    with pytest.raises(CosemError):
        axdr.datetime_from_octets(bytes.fromhex(octets))


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=30))),
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=15))),
    ],
)
def test_a_time_a_cosem_clock_cannot_carry_is_refused(when: dt.datetime) -> None:
    with pytest.raises(ValueError, match="whole minutes"):
        axdr.datetime_octets(when)


@given(values)
def test_nested_values_round_trip(value: tuple[bytes, Any]) -> None:
    raw, python = value
    assert axdr.decode(raw) == python


@UNTIMED
@given(values)
def test_every_truncation_and_any_extra_octet_is_refused(value: tuple[bytes, Any]) -> None:
    raw, _ = value
    for end in range(len(raw)):
        with pytest.raises(CosemError):
            axdr.decode(raw[:end])
    with pytest.raises(CosemError, match="left after"):
        axdr.decode(raw + b"\x00")


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[axdr.CaptureObject], list[tuple[Any, ...]]]:
    """A profile generic: a clock column, then an unsigned and an octet-string, and rows of them."""
    columns = [
        axdr.CaptureObject(8, "0.0.1.0.0.255", 2, 0),
        axdr.CaptureObject(1, "0.0.96.11.0.255", 2, 0),
        axdr.CaptureObject(115, "0.0.19.40.0.255", 2, 0),
    ]
    naive = st.just(None)
    rows = draw(st.lists(st.tuples(times(naive), st.integers(0, 255), st.binary(max_size=20)), max_size=8))
    return columns, rows


def encode_rows(rows: list[tuple[Any, ...]]) -> bytes:
    def row(when: dt.datetime, code: int, data: bytes) -> bytes:
        return axdr.encode_structure(
            [axdr.encode_datetime(when), axdr.encode_integer(code, "unsigned"), axdr.encode_octet_string(data)]
        )

    return axdr.encode_array(row(*r) for r in rows)


def encode_columns(columns: list[axdr.CaptureObject]) -> bytes:
    return axdr.encode_array(
        axdr.encode_structure(
            [
                axdr.encode_integer(c.interface, "long_unsigned"),
                axdr.encode_octet_string(bytes(axdr.obis(c.obis))),
                axdr.encode_integer(c.attribute, "integer"),
                axdr.encode_integer(c.data_index, "long_unsigned"),
            ]
        )
        for c in columns
    )


@given(logs())
def test_profile_buffers_and_capture_objects_round_trip(log: tuple[list[axdr.CaptureObject], list[Any]]) -> None:
    columns, rows = log
    assert axdr.decode_capture_objects(encode_columns(columns)) == columns
    assert axdr.decode_rows(encode_rows(rows), clock_columns=[0]) == rows
    assert [r[0] for r in axdr.decode_rows(encode_rows(rows))] == [axdr.datetime_octets(r[0]) for r in rows]


@given(st.tuples(*[st.integers(0, 255)] * 6))
def test_obis_codes_round_trip(groups: tuple[int, ...]) -> None:
    text = ".".join(map(str, groups))
    assert axdr.obis(text) == groups
    assert axdr.obis_text(bytes(groups)) == text


@pytest.mark.parametrize("text", ["1.0.1.8.0", "1.0.1.8.0.256", "1-0:1.8.0.255", "1.0.1.8.0.x", ""])
def test_a_malformed_obis_code_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        axdr.obis(text)


def test_scaler_unit() -> None:
    assert axdr.decode_scaler_unit(bytes.fromhex("02020f00161e")) == (0, 30)
    assert axdr.decode_scaler_unit(bytes.fromhex("02020ffd160d")) == (-3, 13)
    with pytest.raises(CosemError):
        axdr.decode_scaler_unit(bytes.fromhex("02021100161e"))  # scaler unsigned


@pytest.mark.parametrize(
    ("raw", "decoder"),
    [
        ("0301", axdr.decode_integer),  # a boolean is not a number
        ("1100", axdr.decode_bool),
        ("0a0161", axdr.decode_octet_string),
        ("0d01", axdr.decode),  # bcd: not read
        ("2a00", axdr.decode),  # no such tag
    ],
)
def test_a_value_of_another_type_is_refused(raw: str, decoder: Any) -> None:
    with pytest.raises(CosemError):
        decoder(bytes.fromhex(raw))


# ------------------------------------------------------------------------------------------------ the other library


def gurux(kind: str, value: Any) -> bytes:
    """A value as gurux-dlms (the simulated meter's library) encodes it."""
    from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSSettings
    from gurux_dlms.enums import DataType
    from gurux_dlms.internal._GXCommon import _GXCommon

    out = GXByteBuffer()
    if isinstance(value, dt.datetime):
        value = GXDateTime(value)
    _GXCommon.setData(GXDLMSSettings(True, None), out, getattr(DataType, kind), value)
    return bytes(out.array())


GURUX_INTEGERS: dict[str, axdr.IntKind] = {
    "INT8": "integer", "INT16": "long", "INT32": "double_long", "INT64": "long64", "UINT8": "unsigned",
    "UINT16": "long_unsigned", "UINT32": "double_long_unsigned", "UINT64": "long64_unsigned",
}  # fmt: skip


@st.composite
def gurux_integers(draw: st.DrawFn) -> tuple[str, int]:
    kind = draw(st.sampled_from(sorted(GURUX_INTEGERS)))
    return kind, draw(st.integers(*bounds(GURUX_INTEGERS[kind])))


@UNTIMED
@given(gurux_integers())
def test_gurux_integers_decode_here(kind_value: tuple[str, int]) -> None:
    kind, value = kind_value
    assert axdr.decode_integer(gurux(kind, value)) == value
    assert gurux(kind, value) == axdr.encode_integer(value, GURUX_INTEGERS[kind])


@UNTIMED
@given(st.binary(max_size=400), st.text(alphabet="01", min_size=1, max_size=64))
def test_gurux_octet_strings_and_bit_strings_decode_here(data: bytes, value: str) -> None:
    assert axdr.decode_octet_string(gurux("OCTET_STRING", data)) == data
    assert axdr.decode(gurux("BITSTRING", value)) == value
    assert gurux("OCTET_STRING", data) == axdr.encode_octet_string(data)


@UNTIMED
@given(times(st.integers(-12 * 4, 14 * 4).map(lambda q: dt.timezone(dt.timedelta(minutes=15 * q)))))
def test_gurux_date_times_decode_here_to_the_same_instant(when: dt.datetime) -> None:
    when = when.replace(year=2000 + when.year % 100)  # gurux reads times through the platform's clock functions
    assert axdr.decode_datetime(gurux("OCTET_STRING", when)) == when
    assert axdr.decode_datetime(gurux("DATETIME", when)) == when


# ------------------------------------------------------------------------------------------------ canaries


def one_value(raw: bytes) -> Any:
    """dlms-cosem's own decoder, one value (not ``parse_as_dlms_data``: on short input that loops forever)."""
    decoder = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(attributes=[]))
    decoder.buffer = bytearray(raw)
    return decoder.decode_sequence_of()


def test_canary_dlms_cosem_reads_past_the_end() -> None:
    assert one_value(b"\x05\x01") == 1  # a double-long of one octet
    with pytest.raises(CosemError):
        axdr.decode(b"\x05\x01")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x04\x08\x00", "00000000"),  # bit-string
        (b"\x0a\x02ab", "ab"),  # visible-string
        (b"\x0c\x02ab", "ab"),  # utf8-string
        (b"\x17\x3f\x80\x00\x00", 1.0),  # float32
        (b"\x18\x3f\xf0" + bytes(6), 1.0),  # float64
    ],
)
def test_canary_dlms_cosem_cannot_decode(raw: bytes, expected: Any) -> None:
    with pytest.raises(NotImplementedError):
        one_value(raw)
    assert axdr.decode(raw) == expected


def test_canary_dlms_cosem_reads_a_utc_clock_as_naive_and_fails_on_wildcards() -> None:
    utc = bytes.fromhex("07e80301ff0c000000000000")
    when, _status = one_value(b"\x19" + utc)
    assert when.tzinfo is None
    assert axdr.decode(b"\x19" + utc) == dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    with pytest.raises(TypeError):
        one_value(b"\x19" + bytes.fromhex("07e8ff01ff0c000000000000"))


def test_canary_dlms_cosem_encoders() -> None:
    assert dlms_data.OctetStringData(b"x" * 200).to_bytes()[:2] == b"\x09\xc8"  # A-XDR wants 09 81 c8
    assert axdr.encode_octet_string(b"x" * 200)[:3] == b"\x09\x81\xc8"
    with pytest.raises(NotImplementedError):
        dlms_data.BooleanData(True).to_bytes()
    with pytest.raises(TypeError):
        dlms_data.DataArray([dlms_data.IntegerData(1)]).to_bytes()


def test_canary_dlms_cosem_drops_the_sixth_obis_group() -> None:
    assert cosem.Obis.from_string("1.0.1.8.0.254").f == 255
    assert axdr.obis("1.0.1.8.0.254")[5] == 254
