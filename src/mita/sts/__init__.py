"""mita.sts: a pure, bit-exact IEC 62055-41 (Edition 2 / 2018) token engine.

No I/O, no clock, no randomness inside: the issue time, the random RND nibble
and every key are arguments. Errors are :class:`StsError` subclasses with a
stable ``code``.

Names are loaded on first use (PEP 562): ``from mita.sts import encode`` imports the codec and what it needs,
not key derivation or key change sets, so a command that issues one token starts without them. ``from mita import
sts; sts.X`` and ``from mita.sts import X`` work as before; type checkers read the imports below.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
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

#: Where each public name lives: module -> names (a test checks this table against ``__all__`` and the imports).
MODULES: dict[str, tuple[str, ...]] = {
    "amount": ("decode_amount", "decode_currency", "encode_amount", "encode_currency"),
    "codec": ("decode", "encode", "extract_class", "insert_class", "parse_digits"),
    "crc": ("crc_field",),
    "dkga": ("derive_decoder_key", "dkga02", "dkga04"),
    "ea": ("EA",),
    "errors": (
        "CheckDigitError",
        "CrcError",
        "FormatError",
        "RangeError",
        "StsError",
        "TidOutOfRangeError",
        "UnsupportedError",
    ),
    "identity": ("MeterNumber", "control_block", "luhn_digit"),
    "keychange": ("NewKeyConfig", "assemble", "key_change_set"),
    "tid": ("BaseDate", "datetime_from_tid", "tid_from_datetime"),
    "tokens": (
        "ALL_REGISTERS",
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
        "TransferCredit",
        "from_block",
        "to_block",
    ),
}
_HOME = {name: module for module, names in MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    """Import the module of a public name on first use, and keep the name here (later uses are plain lookups)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
