"""Meter numbers, as the strings a campaign or a partner's batch holds, to MeterPANs and PAN blocks, in bulk.

Why: deriving each meter's key in bulk started by building a :class:`~mita.sts.MeterNumber` per meter, a few
microseconds of interpreter time each: more than the rest of a DKGA04 + EA11 token (issue 17). Here the digits
of every number are one NumPy array: the characters checked, both Luhn digits (the DRN's own and the MeterPAN's)
computed column by column, with exactly the single path's rules (:mod:`mita.sts.identity`; a property test
holds them equal). A list that does not fit the fast form (numbers of mixed lengths, spaces or dashes, anything
that is not a string) goes through :meth:`MeterNumber.parse` number by number, so what is accepted and what
is refused is the same either way; a refusal names the first bad index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..errors import StsError
from ..identity import _DOUBLED, _IIN_FOR_LENGTH, _IIN_WEIGHT, IIN_DRN_LENGTH, MeterNumber
from .arrays import U8, U64, Tokens

#: Digit (0..9) to the digit sum of its double, Luhn's doubling step, as the single path's table has it.
_DOUBLE: Final = np.frombuffer(bytes(range(48, 58)).translate(_DOUBLED), dtype=np.uint8).copy()
PAN_DIGITS: Final = 18  # IIN || DRN || Luhn digit, for both IINs (6 + 11 + 1, 4 + 13 + 1)


def _refuse(index: int, error: StsError) -> StsError:
    """The single path's error, its type (and code) kept, its message naming the meter's index."""
    return type(error)(f"meters[{index}]: {error.message}")


def _one_by_one(numbers: Sequence[Any], iin: str | None) -> Tokens:
    """The reference path: :meth:`MeterNumber.parse` for each number."""
    out = np.empty(len(numbers), dtype=f"S{PAN_DIGITS}")
    for i, number in enumerate(numbers):
        text = number.decode("ascii", "replace") if isinstance(number, bytes) else str(number)
        try:
            out[i] = MeterNumber.parse(text, iin).pan.encode("ascii")
        except StsError as error:
            raise _refuse(i, error) from None
    return out


def _fixed_width(numbers: Sequence[Any]) -> tuple[U8, int] | None:
    """(n, L) ASCII codes of ``numbers`` when every one is a str of the first one's length L, else None.

    One ``"\\n".join`` and one encode, rather than a NumPy conversion per string: were any number of another
    length, or holding a newline, some row would have a newline among its digits or a digit where the newline
    belongs, so checking the digits and the newline column proves every length. Called with ``n >= 1``.
    """
    first = numbers[0]
    if not isinstance(first, str):
        return None
    width = len(first)
    try:
        raw = ("\n".join(numbers) + "\n").encode("ascii")
    except (TypeError, UnicodeEncodeError):  # not all strings, or not all ASCII
        return None
    if len(raw) != len(numbers) * (width + 1):
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(len(numbers), width + 1)
    if not (rows[:, width] == ord("\n")).all():
        return None
    return rows[:, :width], width


def meter_pans(numbers: Sequence[str] | npt.NDArray[Any], iin: str | None = None) -> Tokens:
    """The 18-digit MeterPANs ('S18') of many meter numbers (DRNs with their check digit).

    The vectorised :meth:`MeterNumber.parse` then ``.pan``: without ``iin`` the IIN follows from the number's
    length (11 digits: 600727, 13: 0000). A wrong check digit is a CheckDigitError, anything else that is not a
    meter number a FormatError, each naming the first bad index; nothing is returned for a list with an error.
    """
    if isinstance(numbers, np.ndarray):
        items: Sequence[Any] = (numbers.astype(str) if numbers.dtype.kind == "S" else numbers).reshape(-1).tolist()
    else:
        items = numbers
    if isinstance(items, str | bytes):
        items = [items]
    if len(items) == 0:
        return np.empty(0, dtype=f"S{PAN_DIGITS}")
    fixed = _fixed_width(items)
    the_iin = iin if iin is not None else _IIN_FOR_LENGTH.get(fixed[1]) if fixed is not None else None
    if fixed is None or the_iin is None or IIN_DRN_LENGTH.get(the_iin) != fixed[1]:
        return _one_by_one(items, iin)
    codes, width = fixed
    digits = codes - np.uint8(48)  # wraps below '0': every non-digit is then above 9
    bad = (digits > 9).any(axis=1)
    even, odd = digits[:, width - 1 :: -2], digits[:, width - 2 :: -2]  # places from the right: 0, 2, ... and 1, 3, ...
    plain_even = even.sum(axis=1, dtype=np.int32)
    plain_odd = odd.sum(axis=1, dtype=np.int32)
    bad |= (_DOUBLE[np.minimum(odd, 9)].sum(axis=1, dtype=np.int32) + plain_even) % 10 != 0
    if bad.any():  # spaces, dashes, a wrong digit...: the single path decides, and names the first bad index
        return _one_by_one(items, iin)
    pan_digit = -(_DOUBLE[even].sum(axis=1, dtype=np.int32) + plain_odd + _IIN_WEIGHT[the_iin]) % 10
    out = np.empty((len(items), PAN_DIGITS), dtype=np.uint8)
    out[:, : len(the_iin)] = np.frombuffer(the_iin.encode("ascii"), dtype=np.uint8)
    out[:, len(the_iin) : PAN_DIGITS - 1] = codes
    out[:, PAN_DIGITS - 1] = pan_digit.astype(np.uint8) + np.uint8(48)
    pans: Tokens = out.view(f"S{PAN_DIGITS}").reshape(-1)
    return pans


def pan_blocks(pans: Tokens, common: bool = False) -> U64:
    """PANBlocks of 'S18' MeterPANs: the rightmost 16 digits of IIN || DRN read as 16 hex nibbles.

    IIN || DRN is the MeterPAN less its Luhn digit (17 digits for both IINs), so its rightmost 16 are the
    PAN's digits 1..16. ``common`` (KT 3): the DRN's digits read as zeros, as :meth:`MeterNumber.pan_block`.
    """
    codes = np.ascontiguousarray(pans).view(np.uint8).reshape(len(pans), PAN_DIGITS)
    nibbles = codes[:, 1 : PAN_DIGITS - 1] - np.uint8(48)
    if common:
        nibbles = nibbles.copy()
        for iin, length in IIN_DRN_LENGTH.items():  # zero each row's DRN digits, whatever its IIN
            is_iin = (codes[:, : len(iin)] == np.frombuffer(iin.encode("ascii"), dtype=np.uint8)).all(axis=1)
            nibbles[is_iin, len(iin) - 1 : len(iin) - 1 + length] = 0
    packed = np.ascontiguousarray(nibbles[:, 0::2] << np.uint8(4) | nibbles[:, 1::2])
    out: U64 = packed.view(">u8").reshape(-1).astype(np.uint64)
    return out
