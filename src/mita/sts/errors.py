"""Typed errors of the token engine.

Every failure the engine can report is a subclass of :class:`StsError` with a
stable machine-readable ``code``. Scripts (``mita token batch``), the vending
service and the meter model branch on the code, never on the message, so codes
are part of the public contract: add new ones, never rename.

Messages never contain key material: keys are secrets, and errors end up in
logs and HTTP responses.
"""

from __future__ import annotations


def shown(value: object, most: int = 10) -> str:
    """``value`` as an error message quotes it, when it is short; otherwise only its length. A field whose valid
    forms are a few characters (an algorithm, a base date) that was given 16 or 32 hex digits was most likely given
    a key by mistake, and the message must not carry it into a log."""
    text = repr(value)
    return text if len(text) <= most else f"{len(str(value))} characters"


class StsError(Exception):
    """Base class; ``code`` is stable, ``message`` is for people."""

    code = "sts_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class FormatError(StsError):
    """The input is not shaped like what was asked (digits, hex, lengths)."""

    code = "format_error"


class RangeError(StsError):
    """A field value does not fit the bits the standard gives it."""

    code = "range_error"


class CheckDigitError(StsError):
    """A meter number whose Luhn check digit is wrong: a typo, most likely."""

    code = "check_digit_error"


class CrcError(StsError):
    """The decrypted block's CRC does not match: wrong key or mistyped token."""

    code = "crc_error"


class UnsupportedError(StsError):
    """Defined by the standard but not public (DKGA01) or reserved/proprietary."""

    code = "unsupported"


class TidOutOfRangeError(RangeError):
    """The issue time lies before the base date or beyond its 24-bit TID span."""

    code = "tid_out_of_range"
