"""TransferAmount: the 16-bit exponent/mantissa field (6.3.6), and its currency form.

Base units: 0.1 kWh, 0.1 m3, 0.1 minute for subclasses 0..3; 1 W for the
power limits (MPL, MPPUL); 10^-5 of the currency unit for subclasses 4..7.

Encoding rounds up, "in favour of the customer" (6.3.6.2): a value that falls
between two representable values, or in the gap between exponent bands,
becomes the next representable one. A value above the maximum is an error,
never a silent truncation.
"""

from __future__ import annotations

from .errors import RangeError

MANTISSA_BITS = 14
_M = 1 << MANTISSA_BITS
_POW10: tuple[int, ...] = tuple(10**e for e in range(32))

#: The offset added for exponent e: sum over n=1..e of 2^14 * 10^(n-1).
OFFSETS: tuple[int, ...] = (0, _M, 11 * _M, 111 * _M)
MAX_UNITS = 16383 * 1000 + OFFSETS[3]  # 0xFFFF decodes to 18,201,624


def decode_amount(field: int) -> int:
    """Base units carried by a 16-bit amount field."""
    e = field >> 14
    return (field & 0x3FFF) * _POW10[e] + OFFSETS[e]


def encode_amount(units: int) -> int:
    """Smallest field whose value is at least ``units`` (rounded up)."""
    if 0 <= units < _M:  # exponent 0 holds every amount up to 1,638.3 kWh exactly: most vends
        return units
    if units < 0:
        raise RangeError(f"amount must not be negative (got {units})")
    for e in range(4):
        if units < OFFSETS[e]:
            return e << 14  # in the gap below this band: its first value
        m = -(-(units - OFFSETS[e]) // _POW10[e])
        if m < _M:
            return e << 14 | m
    raise RangeError(f"amount {units} exceeds the maximum of {MAX_UNITS} base units")


# --- currency subclasses 4..7: a 5-bit exponent, 3 bits of it in the S&E nibble

CURRENCY_MAX_EXPONENT = 31


def currency_offset(e: int) -> int:
    return _M * ((_POW10[e] - 1) // 9)


def decode_currency(se_nibble: int, field: int) -> tuple[int, bool]:
    """(base units, negative) from the S&E nibble and the amount field."""
    e = (field >> 14 & 1) | (field >> 15 & 1) << 1 | (se_nibble & 7) << 2
    units = (field & 0x3FFF) * _POW10[e] + currency_offset(e)
    return units, bool(se_nibble & 8)


def encode_currency(units: int, negative: bool = False) -> tuple[int, int]:
    """(S&E nibble, amount field) for ``units`` of 10^-5 currency, rounded up."""
    if units < 0:
        raise RangeError(f"currency amount must not be negative (got {units}); use negative=True")
    for e in range(CURRENCY_MAX_EXPONENT + 1):
        offset = currency_offset(e)
        if units < offset:
            m = 0  # in the gap below this band: round up to its first value
        else:
            m = -(-(units - offset) // _POW10[e])
            if m >= _M:
                continue
        field = (e >> 1 & 1) << 15 | (e & 1) << 14 | m
        return (8 if negative else 0) | e >> 2, field
    raise RangeError(f"currency amount {units} is beyond the 5-bit exponent range")
