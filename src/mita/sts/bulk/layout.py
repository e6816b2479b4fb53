"""The 44 data bits and the 64-bit data block of many tokens, from the token layout table.

:mod:`mita.sts.tokens` declares each token type's bit fields once, as ``LAYOUT``; the bulk path
packs and unpacks them field by field from that same table, and adds the CRC (or CRC_C).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..errors import FormatError, UnsupportedError
from ..tokens import Token
from .amounts import decode_amounts
from .arrays import I64, U64, _broadcast, _check_range, _int_array
from .crc import _crc_fields


def data_blocks(token_class: int | npt.ArrayLike, subclasses: int | npt.ArrayLike, data44: npt.ArrayLike) -> U64:
    """64-bit data blocks ``subclass << 60 | data44 << 16 | CRC`` (vectorised :func:`mita.sts.to_block`).

    ``token_class`` and ``subclasses`` may be one value or one per block; data44 holds the 44
    class-specific bits (D bits 59..16) of each token.
    """
    cls_a = _int_array(token_class, "token_class")
    sub_a = _int_array(subclasses, "subclasses")
    data_a = _int_array(data44, "data44")
    _check_range(cls_a, "token_class", 2)
    _check_range(sub_a, "subclasses", 4)
    _check_range(data_a, "data44", 44)
    cls_b, sub_b, data_b = (a.astype(np.uint64) for a in _broadcast(cls_a, sub_a, data_a))
    out: U64 = sub_b << np.uint64(60) | data_b << np.uint64(16) | _crc_fields(cls_b, sub_b, data_b)
    return out


def layout_data(token_type: type[Token], n: int, **fields: int | npt.ArrayLike) -> U64:
    """The 44 data bits of ``n`` tokens of one type, field by field from its LAYOUT table.

    The vectorised ``Token.data_bits`` for "int" fields; fields not given are zero. Every value
    is range-checked against its width before any work is done.
    """
    layout = {name: (shift, width, codec) for name, shift, width, codec in token_type.LAYOUT}
    unknown = set(fields) - set(layout)
    if unknown:  # a misspelt field would silently be zero bits
        raise FormatError(f"{token_type.__name__} has no field {', '.join(sorted(unknown))}")
    data = np.zeros(n, dtype=np.uint64)
    for name, value in fields.items():
        shift, width, codec = layout[name]
        if codec != "int":
            raise UnsupportedError(f"layout_data takes plain integer fields ({name} is {codec})")
        arr = _int_array(value, name)
        _check_range(arr, name, width)
        try:
            wide = np.broadcast_to(arr.astype(np.uint64), (n,))
        except ValueError:
            raise FormatError(f"{name}: need one value, or one per token ({n})") from None
        data |= wide << np.uint64(shift - 16)
    return data


def credit_fields(data44: npt.ArrayLike) -> dict[str, I64]:
    """rnd, tid and amount (base units) of class 0 subclass 0..3 data bits, e.g. ``decode(..)["data"]``."""
    d = np.asarray(data44).astype(np.uint64)
    return {
        "rnd": (d >> np.uint64(40)).astype(np.int64) & 0xF,
        "tid": (d >> np.uint64(16)).astype(np.int64) & 0xFFFFFF,
        "amount": decode_amounts(d & np.uint64(0xFFFF)),
    }
