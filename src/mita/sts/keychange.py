"""Key change token sets (6.2.4-6.2.8, SPEC.md §7).

A 64-bit decoder key travels in two tokens (1st and 2nd section); a 128-bit
key in four, the 3rd and 4th also carrying the supply group code, split as a
24-bit *binary* number into its high and low 12 bits. Every section is
encrypted with the meter's current (old) key. The sets carry no TID.
"""

from __future__ import annotations

from .errors import FormatError, RangeError
from .identity import check_key_params, is_digits
from .tokens import (
    Set1stSectionDecoderKey,
    Set2ndSectionDecoderKey,
    Set3rdSectionDecoderKey,
    Set4thSectionDecoderKey,
    Token,
)
from .values import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable

_M32 = 0xFFFFFFFF
KeySection = Set1stSectionDecoderKey | Set2ndSectionDecoderKey | Set3rdSectionDecoderKey | Set4thSectionDecoderKey


class NewKeyConfig(Value):
    """What a complete key change set installs in a meter."""

    key: int
    key_bits: int
    ken: int
    krn: int
    kt: int
    ti: int
    ro: int
    sgc: str | None = None  # only 4-token sets carry it


def key_change_set(
    new_key: int,
    *,
    key_bits: int,
    ken: int,
    krn: int,
    kt: int,
    ti: int,
    ro: int = 0,
    sgc: str | None = None,
    res: int = 0,
) -> list[Token]:
    """The sections, in entry order (1st, 2nd[, 3rd, 4th]), before encryption."""
    if key_bits not in (64, 128):
        raise FormatError(f"a decoder key has 64 or 128 bits (got {key_bits})")
    if not 0 <= new_key < 1 << key_bits:
        raise RangeError(f"the new key does not fit in {key_bits} bits")
    if not 0 <= ken <= 255:
        raise RangeError(f"key expiry number KEN must be 0..255 (got {ken})")
    if ro not in (0, 1):
        raise RangeError(f"roll-over bit RO must be 0 or 1 (got {ro})")
    check_key_params(kt, sgc if sgc is not None else "000000", ti, krn)
    sections: list[Token] = [
        Set1stSectionDecoderKey(ken >> 4, krn, ro, kt, new_key >> (key_bits - 32), res),
        Set2ndSectionDecoderKey(ken & 15, ti, new_key & _M32),
    ]
    if key_bits == 128:
        if sgc is None or len(sgc) != 6 or not is_digits(sgc):
            raise FormatError("a 4-token key change set needs the 6-digit SGC")
        code = int(sgc)
        sections += [
            Set3rdSectionDecoderKey(code & 0xFFF, new_key >> 64 & _M32),
            Set4thSectionDecoderKey(code >> 12, new_key >> 32 & _M32),
        ]
    for s in sections:
        s.data_bits()  # range-check every field now, not at encryption
    return sections


def assemble(sections: Iterable[KeySection]) -> NewKeyConfig:
    """Rebuild the new key configuration from a complete set, in any order."""
    by_sub = {s.subclass: s for s in sections}
    first, second = by_sub.get(3), by_sub.get(4)
    if not isinstance(first, Set1stSectionDecoderKey) or not isinstance(second, Set2ndSectionDecoderKey):
        raise FormatError("a key change set needs its 1st and 2nd sections")
    third, fourth = by_sub.get(8), by_sub.get(9)
    ken = first.kenho << 4 | second.kenlo
    if isinstance(third, Set3rdSectionDecoderKey) and isinstance(fourth, Set4thSectionDecoderKey):
        key = first.nkho << 96 | third.nkmo2 << 64 | fourth.nkmo1 << 32 | second.nklo
        sgc = f"{fourth.sgcho << 12 | third.sgclo:06d}"
        return NewKeyConfig(key, 128, ken, first.krn, first.kt, second.ti, first.ro, sgc)
    if third is not None or fourth is not None:
        raise FormatError("a 4-token key change set needs all four sections")
    return NewKeyConfig(first.nkho << 32 | second.nklo, 64, ken, first.krn, first.kt, second.ti, first.ro)
