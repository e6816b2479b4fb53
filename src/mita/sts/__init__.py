"""mita.sts: a pure, bit-exact IEC 62055-41 (Edition 2 / 2018) token engine.

No I/O, no clock, no randomness inside: the issue time, the random RND nibble
and every key are arguments. Errors are :class:`StsError` subclasses with a
stable ``code``.
"""

from .amount import decode_amount, decode_currency, encode_amount, encode_currency
from .codec import decode, encode, extract_class, insert_class, parse_digits
from .crc import crc_field
from .dkga import derive_decoder_key, dkga02, dkga04
from .ea import EA
from .errors import (
    CheckDigitError,
    CrcError,
    FormatError,
    RangeError,
    StsError,
    TidOutOfRangeError,
    UnsupportedError,
)
from .identity import MeterNumber, control_block, luhn_digit
from .keychange import NewKeyConfig, assemble, key_change_set
from .tid import BaseDate, datetime_from_tid, tid_from_datetime
from .tokens import (
    ALL_REGISTERS,
    REGISTRY,
    ClearCredit,
    ClearTamperCondition,
    CreditKind,
    CurrencyCredit,
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
    Token,
    TransferCredit,
    from_block,
    to_block,
)

__all__ = [
    "ALL_REGISTERS",
    "EA",
    "REGISTRY",
    "BaseDate",
    "CheckDigitError",
    "ClearCredit",
    "ClearTamperCondition",
    "CrcError",
    "CreditKind",
    "CurrencyCredit",
    "FormatError",
    "MeterNumber",
    "MeterTest",
    "MeterTestWide",
    "NewKeyConfig",
    "RangeError",
    "Set1stSectionDecoderKey",
    "Set2ndSectionDecoderKey",
    "Set3rdSectionDecoderKey",
    "Set4thSectionDecoderKey",
    "SetMaximumPhasePowerUnbalanceLimit",
    "SetMaximumPowerLimit",
    "SetTariffRate",
    "SetWaterMeterFactor",
    "StsError",
    "TidOutOfRangeError",
    "Token",
    "TransferCredit",
    "UnsupportedError",
    "assemble",
    "control_block",
    "crc_field",
    "datetime_from_tid",
    "decode",
    "decode_amount",
    "decode_currency",
    "derive_decoder_key",
    "dkga02",
    "dkga04",
    "encode",
    "encode_amount",
    "encode_currency",
    "extract_class",
    "from_block",
    "insert_class",
    "key_change_set",
    "luhn_digit",
    "parse_digits",
    "tid_from_datetime",
    "to_block",
]
