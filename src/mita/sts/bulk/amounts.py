"""TransferAmount (6.3.6.2), vectorised exactly like amount.encode_amount / decode_amount.

Also the currency form (6.3.22) for the layout table's "currency" codec, vectorised like
amount.encode_currency for amounts below 2**64 base units (the arrays are 64-bit).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..amount import MANTISSA_BITS, MAX_UNITS, OFFSETS, currency_offset
from ..errors import RangeError
from .arrays import I64, U16, U64, _int_array

_POW10: Final = np.array([1, 10, 100, 1000], dtype=np.int64)
_OFFSETS: Final = np.array(OFFSETS, dtype=np.int64)
#: The largest value each exponent band can carry; anything above band e needs e + 1.
_BAND_TOP: Final = tuple(OFFSETS[e] + 16383 * 10**e for e in range(4))


def _amount_fields(units: I64) -> U64:
    """16-bit fields for in-range units (0..MAX_UNITS), rounded up as the standard demands.

    The exponent is the number of bands whose top lies below the value; a value in the gap under
    a band (e.g. 180215..180223) gets that band's first value, which ``maximum(.., 0)`` gives.
    """
    e = (units > _BAND_TOP[0]).astype(np.int64)
    e += units > _BAND_TOP[1]
    e += units > _BAND_TOP[2]
    p = _POW10[e]
    m = np.maximum(units - _OFFSETS[e], 0)
    m += p - 1
    m //= p
    e <<= 14
    e |= m
    out: U64 = e.astype(np.uint64)
    return out


def encode_amounts(units: npt.ArrayLike) -> U16:
    """Vectorised :func:`mita.sts.encode_amount`; the first out-of-range element raises RangeError."""
    arr = np.atleast_1d(_int_array(units, "amounts"))
    _check_amounts(arr)
    return _amount_fields(arr.astype(np.int64)).astype(np.uint16)


def _check_amounts(arr: npt.NDArray[np.integer[Any]], name: str = "amounts") -> None:
    negative = arr < 0
    if negative.any():
        i = int(np.argmax(negative))
        raise RangeError(f"{name}[{i}]: amount must not be negative (got {arr[i]})")
    big = arr > MAX_UNITS
    if big.any():
        i = int(np.argmax(big))
        raise RangeError(f"{name}[{i}]: amount {arr[i]} exceeds the maximum of {MAX_UNITS} base units")


def decode_amounts(fields: npt.ArrayLike) -> I64:
    """Base units carried by 16-bit amount fields (vectorised :func:`mita.sts.decode_amount`)."""
    f = np.asarray(fields).astype(np.int64) & 0xFFFF
    e = f >> 14
    out: I64 = (f & 0x3FFF) * _POW10[e] + _OFFSETS[e]
    return out


# Currency bands (6.3.22): band e starts at currency_offset(e); only those that start below 2**64
# can hold a uint64 amount, and the last of them reaches past 2**64.
_CURRENCY_BANDS: Final = [e for e in range(32) if currency_offset(e) < 1 << 64]
_CURRENCY_OFFSETS: Final = np.array([currency_offset(e) for e in _CURRENCY_BANDS], dtype=np.uint64)
_CURRENCY_POW10: Final = np.array([10**e for e in _CURRENCY_BANDS], dtype=np.uint64)
_CURRENCY_TOP: Final = [
    np.uint64(currency_offset(e) + ((1 << MANTISSA_BITS) - 1) * 10**e) for e in _CURRENCY_BANDS[:-1]
]


def _currency_fields(units: U64) -> tuple[U64, U64]:
    """(top three exponent bits, 16-bit field) of currency amounts, rounded up like ``encode_currency``.

    The same band count as :func:`_amount_fields`; the 5-bit exponent's low two bits are the
    field's top two, its high three go to the sign and exponent nibble (less the sign).
    """
    e = np.zeros(units.shape, dtype=np.uint64)
    for top in _CURRENCY_TOP:
        e += units > top
    offset = _CURRENCY_OFFSETS[e]
    p = _CURRENCY_POW10[e]
    m = np.maximum(units, offset) - offset
    m += p - np.uint64(1)
    m //= p
    m |= (e & np.uint64(3)) << np.uint64(MANTISSA_BITS)
    high: U64 = e >> np.uint64(2)
    return high, m


def _check_currency(arr: npt.NDArray[np.integer[Any]], name: str) -> None:
    negative = arr < 0
    if negative.any():
        i = int(np.argmax(negative))
        raise RangeError(f"{name}[{i}]: currency amount must not be negative (got {arr[i]}); the sign is a field")
