"""A-XDR values as the head-end reads and writes them (pure: bytes in, Python values out, no I/O).

The meter side (mita.sim) encodes with gurux-dlms; this side decodes with dlms-cosem 21.3.2, so that one codec's
bug cannot hide on both ends. dlms-cosem's decoder is used where it is right, and this module's own code only
where it is not. What 21.3.2 gets wrong, found while writing this (tests/headend/test_cosem.py has a canary for
each, but the endless loop):

===================================  ================================================================  ===========
dlms-cosem 21.3.2                    what goes wrong                                                    here
===================================  ================================================================  ===========
decoder, short input                 reads past the end without an error (one octet read as a           refused
                                     double-long); ``utils.parse_as_dlms_data`` then loops forever
decoder, bit-string (tag 4)          ``NotImplementedError`` (so token_status cannot be read)           own code
decoder, visible/UTF-8 string        ``NotImplementedError``                                            own code
decoder, float32/float64             ``NotImplementedError``                                            own code
decoder, date-time (tag 25) and      deviation 0 (UTC) comes back as a *naive* time, the same as        own code
the 12-octet clock octet-string      "not specified"; a wildcard field (0xFF) is a ``TypeError``
encoder, octet-string > 127 octets   the length is written as one raw octet (A-XDR needs 0x81 n ...)    own code
encoder, boolean                     ``NotImplementedError``                                            own code
encoder, array                       ``TypeError`` (appends bytes to a bytearray)                       own code
``Obis.from_string``                 ignores the sixth group (``...254`` becomes ``...255``); no range  :func:`obis`
===================================  ================================================================  ===========

Decoding failures are :class:`CosemError` (a ``ValueError``); :mod:`mita.headend.operations` turns them into a
``LinkError`` with code ``protocol``.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

from dlms_cosem import a_xdr, dlms_data
from dlms_cosem import time as cosem_time

#: A-XDR tags used below (IEC 62056-6-2 ``Data`` CHOICE).
NULL, ARRAY, STRUCTURE, BOOLEAN, BIT_STRING, OCTET_STRING, ENUM, DATE_TIME = 0, 1, 2, 3, 4, 9, 22, 25
INTEGER_TAGS = frozenset({5, 6, 15, 16, 17, 18, 20, 21, 22})

IntKind = Literal[
    "integer", "long", "double_long", "long64", "unsigned", "long_unsigned", "double_long_unsigned",
    "long64_unsigned", "enum",
]  # fmt: skip

#: Integer kinds -> dlms-cosem's class (its encoder and decoder are right for these), octets, signed.
INTEGERS: dict[IntKind, tuple[Any, int, bool]] = {
    "integer": (dlms_data.IntegerData, 1, True),
    "long": (dlms_data.LongData, 2, True),
    "double_long": (dlms_data.DoubleLongData, 4, True),
    "long64": (dlms_data.Long64Data, 8, True),
    "unsigned": (dlms_data.UnsignedIntegerData, 1, False),
    "long_unsigned": (dlms_data.UnsignedLongData, 2, False),
    "double_long_unsigned": (dlms_data.DoubleLongUnsignedData, 4, False),
    "long64_unsigned": (dlms_data.UnsignedLong64Data, 8, False),
    "enum": (dlms_data.EnumData, 1, False),
}
KIND_OF_TAG: dict[int, IntKind] = {cls.TAG: kind for kind, (cls, _, _) in INTEGERS.items()}

DATETIME_OCTETS = 12
DEVIATION_UNSPECIFIED = -0x8000
#: The largest UTC offset a clock here carries (UTC-12:00 .. UTC+14:00 exist; the margin is the standard's ±720
#: minutes widened to every zone in use).
MAX_OFFSET_MIN = 14 * 60
#: A value larger than this is not a meter's answer (a profile buffer of a busy log is well under 1 MiB).
MAX_VALUE_OCTETS = 1 << 24


class CosemError(ValueError):
    """The octets are not the value expected (malformed, truncated, or of another type)."""


class BitString(str):
    """A decoded bit-string, most significant bit first, as '0'/'1' characters (a ``str`` that is not text)."""

    __slots__ = ()

    def __new__(cls, bits: str = "") -> BitString:
        if any(c not in "01" for c in bits):
            raise ValueError("a bit-string is made of '0' and '1'")
        return super().__new__(cls, bits)


class CaptureObject(NamedTuple):
    """One column of a profile generic buffer (IC 7 attribute 3): which attribute of which object it captures."""

    interface: int
    obis: str
    attribute: int
    data_index: int


# ------------------------------------------------------------------------------------------------ OBIS


def obis(text: str) -> tuple[int, int, int, int, int, int]:
    """``"a.b.c.d.e.f"`` as six integers 0-255 (dlms-cosem's parser drops the sixth group: see the table above)."""
    parts = text.split(".")
    if len(parts) != 6 or not all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts):
        raise ValueError(f"an OBIS code is six numbers 0-255 separated by dots, not {text!r}")
    a, b, c, d, e, f = (int(p) for p in parts)
    return a, b, c, d, e, f


def obis_text(octets: bytes) -> str:
    if len(octets) != 6:
        raise CosemError(f"a logical name is 6 octets, not {len(octets)}")
    return ".".join(str(o) for o in octets)


# ------------------------------------------------------------------------------------------------ lengths


def length_octets(n: int) -> bytes:
    """A-XDR length: one octet below 128, else 0x80 | count followed by the big-endian count."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


# ------------------------------------------------------------------------------------------------ encoding


def encode_integer(value: int, kind: IntKind = "integer") -> bytes:
    """An integer of a given A-XDR kind (dlms-cosem's encoder); ``ValueError`` outside the kind's range."""
    cls, size, signed = INTEGERS[kind]
    low, high = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)
    if isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{value!r} is not a {kind} ({low}..{high})")
    return bytes(cls(value).to_bytes())


def encode_bool(value: bool) -> bytes:
    return bytes([BOOLEAN, 1 if value else 0])


def encode_octet_string(data: bytes) -> bytes:
    return bytes([OCTET_STRING]) + length_octets(len(data)) + bytes(data)


def encode_bit_string(bits: str) -> bytes:
    """'0'/'1' characters, most significant first, padded with zero bits to whole octets."""
    bits = BitString(bits)
    padded = bits + "0" * (-len(bits) % 8)
    body = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    return bytes([BIT_STRING]) + length_octets(len(bits)) + body


def encode_structure(items: Iterable[bytes]) -> bytes:
    """A structure of already encoded values."""
    items = list(items)
    return bytes([STRUCTURE]) + length_octets(len(items)) + b"".join(items)


def encode_array(items: Iterable[bytes]) -> bytes:
    """An array of already encoded values (of one type, which is the caller's business)."""
    items = list(items)
    return bytes([ARRAY]) + length_octets(len(items)) + b"".join(items)


def datetime_octets(when: dt.datetime) -> bytes:
    """The 12 octets of a COSEM date-time (dlms-cosem's encoder, after checking what it would get wrong).

    A naive time is sent with the deviation "not specified"; an aware one with the Blue Book's deviation (minutes
    from local time to UTC: UTC+02:00 is -120). Time is kept to the hundredth of a second; the weekday is sent as
    "not specified" (0xFF), which the standard allows.
    """
    offset = when.utcoffset()
    if offset is not None:
        minutes, rest = divmod(offset, dt.timedelta(minutes=1))
        if rest or abs(minutes) > MAX_OFFSET_MIN:
            raise ValueError(f"a COSEM clock carries a UTC offset in whole minutes, at most ±14 h, not {offset}")
    if when.year > 0xFFFE:
        raise ValueError("the year does not fit a COSEM date")
    return bytes(cosem_time.datetime_to_bytes(when))


def encode_datetime(when: dt.datetime) -> bytes:
    """A clock value as the Clock object (IC 8 attribute 2) takes it: an octet-string of 12 octets."""
    return encode_octet_string(datetime_octets(when))


# ------------------------------------------------------------------------------------------------ decoding


def datetime_from_octets(octets: bytes) -> dt.datetime:
    """The 12 octets of a COSEM date-time as a point in time (own code: see the module's table).

    Deviation 0x8000 ("not specified") gives a naive time; any other deviation an aware one, 0 being UTC.
    A wildcard (0xFF/0xFFFF) in a date or time field is refused: a clock reading names one instant. Hundredths
    0xFF mean "not specified" and read as 0.
    """
    if len(octets) != DATETIME_OCTETS:
        raise CosemError(f"a date-time is {DATETIME_OCTETS} octets, not {len(octets)}")
    year, month, day, _weekday, hour, minute, second, hundredths, deviation, _status = struct.unpack(
        ">HBBBBBBBhB", octets
    )
    if 0xFF in (month, day, hour, minute, second) or year == 0xFFFF:
        raise CosemError("a date-time with an unspecified field is not a point in time")
    hundredths = 0 if hundredths == 0xFF else hundredths
    if hundredths > 99:
        raise CosemError(f"hundredths of a second {hundredths} is out of range")
    tz: dt.tzinfo | None = None
    if deviation != DEVIATION_UNSPECIFIED:
        if abs(deviation) > MAX_OFFSET_MIN:
            raise CosemError(f"clock deviation {deviation} min is out of range")
        tz = dt.timezone(dt.timedelta(minutes=-deviation))
    try:
        return dt.datetime(year, month, day, hour, minute, second, hundredths * 10_000, tzinfo=tz)
    except ValueError as exc:
        raise CosemError(f"not a date-time: {exc}") from None


def _bit_string(octets: bytes, bits: int) -> BitString:
    return BitString("".join(f"{b:08b}" for b in octets)[:bits])


#: Tags dlms-cosem cannot decode, or decodes wrongly: tag -> (octet count from the A-XDR length, converter).
#: ``bits`` means the length counts bits, not octets.
_OWN: dict[int, tuple[Literal["octets", "bits", "fixed"], int, Callable[[bytes, int], Any]]] = {
    BIT_STRING: ("bits", 0, lambda raw, n: _bit_string(raw, n)),
    10: ("octets", 0, lambda raw, n: raw.decode("ascii")),  # visible-string
    12: ("octets", 0, lambda raw, n: raw.decode("utf-8")),  # utf8-string
    23: ("fixed", 4, lambda raw, n: struct.unpack(">f", raw)[0]),  # float32
    24: ("fixed", 8, lambda raw, n: struct.unpack(">d", raw)[0]),  # float64
    DATE_TIME: ("fixed", 12, lambda raw, n: datetime_from_octets(raw)),
    255: ("fixed", 0, lambda raw, n: None),  # dont-care
}
_REFUSED = {13: "bcd", 19: "compact-array"}


class _Decoder(a_xdr.AXdrDecoder):  # type: ignore[misc]
    """dlms-cosem's A-XDR decoder, made strict (no reading past the end) and taught the tags of ``_OWN``."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(encoding_conf=a_xdr.EncodingConf(attributes=[]))
        self.buffer = bytearray(raw)

    def get_bytes(self, length: int) -> bytearray:
        if length > len(self.buffer) - self.pointer:
            raise CosemError(f"truncated: {length} octets wanted at {self.pointer} of {len(self.buffer)}")
        return super().get_bytes(length)  # type: ignore[no-any-return]

    def decode_data(self, data_class: Any) -> Any:
        tag = data_class.TAG
        if tag in _REFUSED:
            raise CosemError(f"A-XDR type {_REFUSED[tag]} is not read by the head-end")
        if tag not in _OWN:
            value = super().decode_data(data_class)
            return bytes(value) if isinstance(value, bytearray) else value
        how, size, convert = _OWN[tag]
        if how == "fixed":
            return convert(bytes(self.get_bytes(size)), size)
        count = self.get_axdr_length()
        octets = (count + 7) // 8 if how == "bits" else count
        return convert(bytes(self.get_bytes(octets)), count)


def decode(raw: bytes) -> Any:
    """Exactly one A-XDR ``Data`` value as Python: ints, bool, bytes, str, :class:`BitString`, float, datetime,
    None, and lists for arrays and structures. Anything left over, missing or unknown is a :class:`CosemError`."""
    if not raw:
        raise CosemError("no value")
    if len(raw) > MAX_VALUE_OCTETS:
        raise CosemError("value too large")
    decoder = _Decoder(bytes(raw))
    try:
        value = decoder.decode_sequence_of()
    except CosemError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, NotImplementedError, OverflowError, RecursionError) as exc:
        raise CosemError(f"not an A-XDR value ({type(exc).__name__}) at octet {decoder.pointer}") from None
    if not decoder.buffer_empty:
        raise CosemError(f"{len(raw) - decoder.pointer} octets left after the value")
    return value


def _tag(raw: bytes, allowed: Iterable[int], what: str) -> int:
    if not raw or raw[0] not in allowed:
        raise CosemError(f"not {what}: tag {raw[:1].hex() or 'none'}")
    return raw[0]


def decode_integer(raw: bytes) -> int:
    """Any A-XDR integer or enum (not a boolean: a meter that answers ``true`` for a number is wrong)."""
    _tag(raw, INTEGER_TAGS, "an integer")
    value = decode(raw)
    assert isinstance(value, int)
    return value


def decode_bool(raw: bytes) -> bool:
    _tag(raw, (BOOLEAN,), "a boolean")
    return bool(decode(raw))


def decode_octet_string(raw: bytes) -> bytes:
    _tag(raw, (OCTET_STRING,), "an octet-string")
    return bytes(decode(raw))


def decode_datetime(raw: bytes) -> dt.datetime:
    """A clock value: the 12-octet octet-string a Clock object answers, or an A-XDR date-time (tag 25)."""
    tag = _tag(raw, (OCTET_STRING, DATE_TIME), "a date-time")
    value = decode(raw)
    return datetime_from_octets(value) if tag == OCTET_STRING else value


def parse_token_status(raw: bytes) -> tuple[int, str]:
    """Token gateway attribute 6: ``structure {enum status_code, bit-string data_value}`` -> (code, '0'/'1' bits).

    (Moved from tests/sim/dlms_client.py: the head-end owns the parser now.)"""
    if raw[:3] != bytes([STRUCTURE, 2, ENUM]):
        raise CosemError(f"not a token_status structure: {raw[:8].hex()}")
    code, bits = decode(raw)
    if not isinstance(bits, BitString):
        raise CosemError("token_status data_value is not a bit-string")
    return code, str(bits)


def decode_scaler_unit(raw: bytes) -> tuple[int, int]:
    """Register attribute 3: ``structure {integer scaler, enum unit}``."""
    if raw[:3] != bytes([STRUCTURE, 2, 15]) or raw[3:4] == b"" or raw[4:5] != bytes([ENUM]):
        raise CosemError(f"not a scaler_unit structure: {raw[:8].hex()}")
    scaler, unit = decode(raw)
    return scaler, unit


def decode_capture_objects(raw: bytes) -> list[CaptureObject]:
    """Profile generic attribute 3: array of ``structure {long-unsigned class_id, octet-string logical_name,
    integer attribute_index, long-unsigned data_index}``."""
    _tag(raw, (ARRAY,), "an array of capture objects")
    columns = []
    for item in decode(raw):
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[1], bytes)):
            raise CosemError("a capture object is a structure of 4")
        interface, name, attribute, data_index = item
        if not all(isinstance(v, int) for v in (interface, attribute, data_index)):
            raise CosemError("a capture object's class, attribute and data index are integers")
        columns.append(CaptureObject(interface, obis_text(name), attribute, data_index))
    return columns


def decode_rows(raw: bytes, clock_columns: Sequence[int] = ()) -> list[tuple[Any, ...]]:
    """Profile generic attribute 2 (the buffer): an array of structures, one tuple per row.

    ``clock_columns`` are the positions whose values are clock readings: a 12-octet octet-string there is read
    as a date-time (a profile captures the Clock object's attribute 2, which is an octet-string on the wire)."""
    _tag(raw, (ARRAY,), "a profile buffer")
    rows = []
    for item in decode(raw):
        if not isinstance(item, list):
            raise CosemError("a profile row is a structure")
        row = list(item)
        for i in clock_columns:
            if i < len(row) and isinstance(row[i], bytes):
                row[i] = datetime_from_octets(row[i])
        rows.append(tuple(row))
    return rows
