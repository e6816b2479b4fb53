"""The 44 data bits and the 64-bit data block of many tokens, from the token layout table.

:mod:`mita.sts.tokens` declares each token type's bit fields once, as ``LAYOUT``: class 0 credit
as much as the management tokens. The bulk path packs and unpacks every class field by field from
that same table, with a vectorised form of each codec ("int", "amount", "currency"), so it has no
bit positions of its own to drift from the single path's; then it adds the CRC (or CRC_C).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import FormatError, UnsupportedError
from ..tokens import CURRENCY_EXPONENT_BIT, Bits, Token, TransferCredit
from .amounts import _amount_fields, _check_amounts, _check_currency, _currency_fields, decode_amounts
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


def _check_field(arr: npt.NDArray[np.integer[Any]], name: str, width: int, codec: str) -> None:
    """What ``Token.data_bits`` refuses for this field, as a RangeError naming the first bad index."""
    if codec == "int":
        _check_range(arr, name, width)
    elif codec == "amount":
        _check_amounts(np.atleast_1d(arr), name)
    elif codec == "currency":
        _check_currency(np.atleast_1d(arr), name)
    else:
        raise UnsupportedError(f"no vectorised codec {codec!r} (field {name})")


def _field_bits(values: npt.NDArray[np.integer[Any]], shift: int, codec: str) -> U64:
    """One field's part of the 44 data bits, from checked values: the vectorised codec, then the shift."""
    if codec == "amount":
        bits = _amount_fields(values.astype(np.int64))
    elif codec == "currency":
        high, bits = _currency_fields(values.astype(np.uint64))
        high <<= np.uint64(CURRENCY_EXPONENT_BIT - shift)
        bits |= high
    else:
        bits = values.astype(np.uint64)
    if shift != 16:
        bits <<= np.uint64(shift - 16)
    return bits


def _layout_bits(layout: Bits, columns: Mapping[str, npt.NDArray[np.integer[Any]]], sl: slice) -> U64 | None:
    """The 44 data bits of tokens ``sl`` from checked per-field columns; fields without a column are zero.

    None when no field has a column. Field by field in table order, into the first field's bits.
    """
    data: U64 | None = None
    for name, shift, _, codec in layout:
        if name in columns:
            bits = _field_bits(columns[name][sl], shift, codec)
            if data is None:
                data = bits
            else:
                data |= bits
    return data


def layout_data(token_type: type[Token], n: int, **fields: int | npt.ArrayLike) -> U64:
    """The 44 data bits of ``n`` tokens of one type, field by field from its LAYOUT table.

    The vectorised ``Token.data_bits`` for every token type: "int" fields as given, "amount" and
    "currency" fields in base units, rounded up as the single path does (currency amounts below
    2**64; the sign of currency credit is its own field, ``negative``). Fields not given are zero.
    Every value is range-checked before any work is done.
    """
    layout = {name: (shift, width, codec) for name, shift, width, codec in token_type.LAYOUT}
    unknown = set(fields) - set(layout)
    if unknown:  # a misspelt field would silently be zero bits
        raise FormatError(f"{token_type.__name__} has no field {', '.join(sorted(unknown))}")
    columns: dict[str, npt.NDArray[np.integer[Any]]] = {}
    for name, value in fields.items():
        _, width, codec = layout[name]
        arr = _int_array(value, name)
        _check_field(arr, name, width, codec)
        try:
            columns[name] = np.broadcast_to(arr, (n,))
        except ValueError:
            raise FormatError(f"{name}: need one value, or one per token ({n})") from None
    data = _layout_bits(token_type.LAYOUT, columns, slice(None))
    return np.zeros(n, dtype=np.uint64) if data is None else data


def _layout_fields(layout: Bits, data44: U64) -> dict[str, I64]:
    """Per field of the table, its values in ``data44`` (int64; "amount" fields in base units)."""
    out: dict[str, I64] = {}
    for name, shift, width, codec in layout:
        if codec not in ("int", "amount"):
            raise UnsupportedError(f"no vectorised decoding of {codec!r} fields ({name})")
        value = (data44 >> np.uint64(shift - 16)).astype(np.int64) & ((1 << width) - 1)
        out[name] = decode_amounts(value) if codec == "amount" else value
    return out


def credit_fields(data44: npt.ArrayLike) -> dict[str, I64]:
    """rnd, tid and amount (base units) of class 0 subclass 0..3 data bits, e.g. ``decode(..)["data"]``."""
    return _layout_fields(TransferCredit.LAYOUT, np.asarray(data44).astype(np.uint64))
