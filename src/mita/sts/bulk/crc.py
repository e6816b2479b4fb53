"""CRC-16/MODBUS over the 7 big-endian bytes of class|subclass|data44 (SPEC.md §2), many tokens at once."""

from __future__ import annotations

from typing import Final

import numpy as np

from ..crc import crc16_modbus
from .arrays import U16, U64


def _crc_tables(suffix: bytes) -> tuple[U16, int]:
    """Per-byte-position tables of the CRC field, and the field of an all-zero message.

    The CRC is affine over GF(2): crc(a ^ b) = crc(a) ^ crc(b) ^ crc(0) for equal-length
    messages. So the field of a 7-byte message is the zero-message field XORed with one
    table entry per byte, and the 7 lookups are independent (no serial dependency between
    bytes as in the textbook loop). The byte swap into the field is linear too, so it is
    folded into the tables. ``suffix`` is the 0x01 byte CRC_C appends, or nothing.
    """

    def field(message: bytes) -> int:
        crc = crc16_modbus(message + suffix)
        return (crc & 0xFF) << 8 | crc >> 8

    zero = field(bytes(7))
    table = np.zeros((7, 256), dtype=np.uint16)
    for j in range(7):
        for b in range(256):
            table[j, b] = field(bytes(j) + bytes([b]) + bytes(6 - j)) ^ zero
    return table, zero


_CRC_PLAIN: Final = _crc_tables(b"")
_CRC_CURRENCY: Final = _crc_tables(b"\x01")


def _crc_field(info: U64, currency: bool) -> U64:
    """CRC field of each 56-bit ``class << 48 | subclass << 44 | data44`` (CRC_C if ``currency``)."""
    table, zero = _CRC_CURRENCY if currency else _CRC_PLAIN
    signed = info.view(np.int64)  # below 2**56, so the view is the same number and indexes directly
    acc = np.full(info.shape, zero, dtype=np.uint16)
    idx = np.empty(info.shape, dtype=np.int64)
    part = np.empty(info.shape, dtype=np.uint16)
    for j in range(7):
        np.right_shift(signed, 8 * (6 - j), out=idx)
        np.bitwise_and(idx, 0xFF, out=idx)
        np.take(table[j], idx, out=part, mode="clip")
        acc ^= part
    return acc.astype(np.uint64)


def _crc_fields(token_class: U64, subclass: U64, data44: U64) -> U64:
    """CRC or CRC_C field per element, CRC_C where class 0 has subclass 4..7."""
    info = token_class << np.uint64(48) | subclass << np.uint64(44) | data44
    out = _crc_field(info, currency=False)
    currency = (token_class == 0) & (subclass >= 4) & (subclass <= 7)
    if currency.any():
        out[currency] = _crc_field(info[currency], currency=True)
    return out
