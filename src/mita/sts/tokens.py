"""Token value types and their 64-bit data-block layouts (6.2, SPEC.md §1.3).

Every token is a small frozen value (:class:`mita.sts.values.Value`: a frozen
dataclass's behaviour, defined in a fraction of its time). Its layout, the bit fields of the 44
class-specific bits (D bits 59..16), is declared once in ``LAYOUT`` as
``(name, lowest bit, width, codec)``; packing and unpacking read that table,
so the table below *is* the format:

=====  ========  ==========================================================
class  subclass  fields (high to low)
=====  ========  ==========================================================
0      0..3      rnd(4) tid(24) amount(16, exponent/mantissa)
0      4..7      negative(1) tid(24) amount(3+16, currency) (CRC_C)
1      0         control(36) mfr_code(8)                   (not encrypted)
1      1         control(28) mfr_code(16)                  (not encrypted)
2      0         rnd tid mpl(16, exponent/mantissa, watts)
2      1         rnd tid register(16)
2      2         rnd tid rate(16)
2      3         kenho(4) krn(4) ro(1) res(1) kt(2) nkho(32)
2      4         kenlo(4) ti(8, binary) nklo(32)
2      5         rnd tid pad(16)
2      6         rnd tid mppul(16, exponent/mantissa, watts)
2      7         rnd tid wm_factor(16)
2      8         sgclo(12) nkmo2(32)
2      9         sgcho(12) nkmo1(32)
=====  ========  ==========================================================

Class 0 subclasses 8..15, class 2 subclasses 10..15 and class 3 are reserved
or proprietary: they decode to :class:`UnsupportedError`.
"""

from __future__ import annotations

from enum import IntEnum

from .amount import decode_amount, decode_currency, encode_amount, encode_currency
from .crc import crc_field
from .errors import CrcError, RangeError, UnsupportedError
from .values import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any, ClassVar


class TokenClass(IntEnum):
    CREDIT = 0
    METER_TEST = 1
    MANAGEMENT = 2


class CreditKind(IntEnum):
    """Class 0 subclasses: what the credit is of."""

    ELECTRICITY = 0
    WATER = 1
    GAS = 2
    TIME = 3
    ELECTRICITY_CURRENCY = 4
    WATER_CURRENCY = 5
    GAS_CURRENCY = 6
    TIME_CURRENCY = 7


#: Clear-credit register values listed for Table 28 (0xFFFF clears all).
ALL_REGISTERS = 0xFFFF

# (name, lowest bit in D, width, codec); codec "amount" is the 16-bit
# exponent/mantissa form with rounding up, "int" a plain unsigned field,
# "currency" the 16-bit field of the currency subclasses (6.3.22), whose
# 5-bit exponent also takes the three bits at CURRENCY_EXPONENT_BIT.
Bits = tuple[tuple[str, int, int, str], ...]
#: Lowest bit in D of the top three exponent bits of a "currency" field (the
#: sign and exponent nibble less its sign bit, which is the field "negative").
CURRENCY_EXPONENT_BIT = 56
_RND_TID: Bits = (("rnd", 56, 4, "int"), ("tid", 32, 24, "int"))


class Token(Value):
    """Base of every token type; ``fields()`` gives the JSON view."""

    token_class: ClassVar[int]
    subclass: ClassVar[int]
    LAYOUT: ClassVar[Bits] = ()

    def data_bits(self) -> int:
        """The 44 class-specific bits."""
        data = 0
        for name, shift, width, codec in self.LAYOUT:
            value = getattr(self, name)
            if codec == "amount":
                value = encode_amount(value)
            elif codec == "currency":
                high, value = encode_currency(value)  # the sign is a field of its own
                data |= high << (CURRENCY_EXPONENT_BIT - 16)
            elif not 0 <= value < 1 << width:
                raise RangeError(f"{name} must fit in {width} bits (0..{(1 << width) - 1}), got {value}")
            data |= value << (shift - 16)
        return data

    @classmethod
    def from_data_bits(cls, subclass: int, data: int) -> Token:
        values: dict[str, Any] = {}
        for name, shift, width, codec in cls.LAYOUT:
            value = data >> (shift - 16) & ((1 << width) - 1)
            if codec == "amount":
                value = decode_amount(value)
            elif codec == "currency":
                value = decode_currency(data >> (CURRENCY_EXPONENT_BIT - 16) & 7, value)[0]
            values[name] = value
        return cls(**values)

    def fields(self) -> dict[str, Any]:
        return {"class": self.token_class, "subclass": self.subclass, **{n: getattr(self, n) for n in self._init}}


# ---------------------------------------------------------------- class 0


class TransferCredit(Token):
    """Credit in units of 0.1 kWh / 0.1 m3 / 0.1 m3 / 0.1 minute (subclass 0..3).

    ``amount`` is rounded up to the next representable value on encoding.
    """

    tid: int
    amount: int
    rnd: int = 0
    kind: CreditKind = CreditKind.ELECTRICITY
    token_class: ClassVar[int] = 0
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("amount", 16, 16, "amount"))

    def __init__(self, tid: int, amount: int, rnd: int = 0, kind: CreditKind = CreditKind.ELECTRICITY) -> None:
        # The vend hot path: Value's generic constructor, written out (a test holds this signature to the fields).
        setter = object.__setattr__
        setter(self, "tid", tid)
        setter(self, "amount", amount)
        setter(self, "rnd", rnd)
        setter(self, "kind", kind)

    @property
    def subclass(self) -> int:  # type: ignore[override]
        return int(self.kind)

    def data_bits(self) -> int:
        # The vend hot path: the generic table walk, written out.
        tid, rnd, amount = self.tid, self.rnd, self.amount
        if not (0 <= tid <= 0xFFFFFF and 0 <= rnd <= 15):
            return Token.data_bits(self)  # raises the precise RangeError
        # exponent 0 carries amounts below 2**14 as they are (encode_amount's first case, without its call)
        return rnd << 40 | tid << 16 | (amount if 0 <= amount < 0x4000 else encode_amount(amount))

    @classmethod
    def from_data_bits(cls, subclass: int, data: int) -> Token:
        return cls(data >> 16 & 0xFFFFFF, decode_amount(data & 0xFFFF), data >> 40, CreditKind(subclass))

    def fields(self) -> dict[str, Any]:
        return {"class": 0, "subclass": self.subclass, "rnd": self.rnd, "tid": self.tid, "amount": self.amount}


class CurrencyCredit(Token):
    """Edition 3 currency credit (subclass 4..7) in 10^-5 currency units, CRC_C."""

    tid: int
    amount: int
    negative: bool = False
    kind: CreditKind = CreditKind.ELECTRICITY_CURRENCY
    token_class: ClassVar[int] = 0
    LAYOUT: ClassVar[Bits] = (("negative", 59, 1, "int"), ("tid", 32, 24, "int"), ("amount", 16, 16, "currency"))

    @property
    def subclass(self) -> int:  # type: ignore[override]
        return int(self.kind)

    def data_bits(self) -> int:
        # The table walk, written out (with the sign and exponent nibble as one value).
        if not 0 <= self.tid < 1 << 24:
            raise RangeError(f"tid must fit in 24 bits, got {self.tid}")
        se, amount = encode_currency(self.amount, self.negative)
        return se << 40 | self.tid << 16 | amount

    @classmethod
    def from_data_bits(cls, subclass: int, data: int) -> Token:
        units, negative = decode_currency(data >> 40, data & 0xFFFF)
        return cls(data >> 16 & 0xFFFFFF, units, negative, CreditKind(subclass))

    def fields(self) -> dict[str, Any]:
        return {
            "class": 0,
            "subclass": self.subclass,
            "tid": self.tid,
            "amount": self.amount,
            "negative": self.negative,
        }


# ---------------------------------------------------------------- class 1


class MeterTest(Token):
    """InitiateMeterTest/Display: 36-bit control with an 8-bit (2-digit) manufacturer code."""

    control: int
    mfr_code: int = 0
    token_class: ClassVar[int] = 1
    subclass: ClassVar[int] = 0
    LAYOUT: ClassVar[Bits] = (("control", 24, 36, "int"), ("mfr_code", 16, 8, "int"))


class MeterTestWide(Token):
    """InitiateMeterTest/Display: 28-bit control with a 16-bit (4-digit) manufacturer code."""

    control: int
    mfr_code: int = 0
    token_class: ClassVar[int] = 1
    subclass: ClassVar[int] = 1
    LAYOUT: ClassVar[Bits] = (("control", 32, 28, "int"), ("mfr_code", 16, 16, "int"))


# ---------------------------------------------------------------- class 2


class SetMaximumPowerLimit(Token):
    tid: int
    mpl: int  # watts, amount-encoded (rounded up)
    rnd: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 0
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("mpl", 16, 16, "amount"))


class ClearCredit(Token):
    tid: int
    register: int = ALL_REGISTERS
    rnd: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 1
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("register", 16, 16, "int"))


class SetTariffRate(Token):
    tid: int
    rate: int
    rnd: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 2
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("rate", 16, 16, "int"))


class Set1stSectionDecoderKey(Token):
    kenho: int
    krn: int
    ro: int
    kt: int
    nkho: int
    res: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 3
    LAYOUT: ClassVar[Bits] = (
        ("kenho", 56, 4, "int"),
        ("krn", 52, 4, "int"),
        ("ro", 51, 1, "int"),
        ("res", 50, 1, "int"),
        ("kt", 48, 2, "int"),
        ("nkho", 16, 32, "int"),
    )


class Set2ndSectionDecoderKey(Token):
    kenlo: int
    ti: int  # 8-bit binary here, unlike the BCD of the CONTROLBlock
    nklo: int
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 4
    LAYOUT: ClassVar[Bits] = (("kenlo", 56, 4, "int"), ("ti", 48, 8, "int"), ("nklo", 16, 32, "int"))


class ClearTamperCondition(Token):
    tid: int
    pad: int = 0
    rnd: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 5
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("pad", 16, 16, "int"))


class SetMaximumPhasePowerUnbalanceLimit(Token):
    tid: int
    mppul: int  # watts, amount-encoded (rounded up)
    rnd: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 6
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("mppul", 16, 16, "amount"))


class SetWaterMeterFactor(Token):
    tid: int
    wm_factor: int
    rnd: int = 0
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 7
    LAYOUT: ClassVar[Bits] = (*_RND_TID, ("wm_factor", 16, 16, "int"))


class Set3rdSectionDecoderKey(Token):
    sgclo: int
    nkmo2: int
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 8
    LAYOUT: ClassVar[Bits] = (("sgclo", 48, 12, "int"), ("nkmo2", 16, 32, "int"))


class Set4thSectionDecoderKey(Token):
    sgcho: int
    nkmo1: int
    token_class: ClassVar[int] = 2
    subclass: ClassVar[int] = 9
    LAYOUT: ClassVar[Bits] = (("sgcho", 48, 12, "int"), ("nkmo1", 16, 32, "int"))


KEY_CHANGE_TYPES = (
    Set1stSectionDecoderKey,
    Set2ndSectionDecoderKey,
    Set3rdSectionDecoderKey,
    Set4thSectionDecoderKey,
)

#: (class, subclass) -> token type: the one place that says what is supported.
REGISTRY: dict[tuple[int, int], type[Token]] = {
    **{(0, k): TransferCredit for k in range(4)},
    **{(0, k): CurrencyCredit for k in range(4, 8)},
    (1, 0): MeterTest,
    (1, 1): MeterTestWide,
    **{
        (2, t.subclass): t
        for t in (
            SetMaximumPowerLimit,
            ClearCredit,
            SetTariffRate,
            Set1stSectionDecoderKey,
            Set2ndSectionDecoderKey,
            ClearTamperCondition,
            SetMaximumPhasePowerUnbalanceLimit,
            SetWaterMeterFactor,
            Set3rdSectionDecoderKey,
            Set4thSectionDecoderKey,
        )
    },
}


def _bind_crc(info: int, currency: bool) -> int:
    """The CRC field: on first use binds :data:`_crc` to the compiled accelerator's (:mod:`.accel`), or to
    :func:`crc_field`, the reference, when there is none; then computes it."""
    global _crc
    from . import accel

    _crc = accel.function("crc_field") or crc_field
    return _crc(info, currency)


_crc = _bind_crc


def forget_choices() -> None:
    """Choose the CRC's implementation again on its next use (:func:`mita.sts.accel.use` calls this)."""
    global _crc
    _crc = _bind_crc


def uses_crc_c(token_class: int, subclass: int) -> bool:
    return token_class == 0 and 4 <= subclass <= 7


def to_block(token: Token) -> int:
    """The 64-bit data block D: subclass, 44 data bits, CRC (CRC_C for currency credit)."""
    token_class = token.token_class
    sub = token.subclass
    info = token_class << 48 | sub << 44 | token.data_bits()
    return sub << 60 | (info & 0xFFFFFFFFFFF) << 16 | _crc(info, token_class == 0 and 4 <= sub <= 7)


def from_block(token_class: int, block: int) -> Token:
    """Check the CRC of a (decrypted) data block, then read its fields."""
    sub = block >> 60
    data = block >> 16 & 0xFFFFFFFFFFF
    info = token_class << 48 | sub << 44 | data
    if _crc(info, uses_crc_c(token_class, sub)) != block & 0xFFFF:
        raise CrcError("token failed its CRC check: wrong decoder key, algorithm or a mistyped digit")
    kind = REGISTRY.get((token_class, sub))
    if kind is None:
        raise UnsupportedError(f"class {token_class} subclass {sub} is reserved or proprietary")
    return kind.from_data_bits(sub, data)


__all__ = [
    "ALL_REGISTERS",
    "CURRENCY_EXPONENT_BIT",
    "KEY_CHANGE_TYPES",
    "REGISTRY",
    "ClearCredit",
    "ClearTamperCondition",
    "CreditKind",
    "CurrencyCredit",
    "MeterTest",
    "MeterTestWide",
    "Set1stSectionDecoderKey",
    "Set2ndSectionDecoderKey",
    "Set3rdSectionDecoderKey",
    "Set4thSectionDecoderKey",
    "SetMaximumPhasePowerUnbalanceLimit",
    "SetMaximumPowerLimit",
    "SetTariffRate",
    "SetWaterMeterFactor",
    "Token",
    "TokenClass",
    "TransferCredit",
    "from_block",
    "to_block",
]
