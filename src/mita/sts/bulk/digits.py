"""66-bit TokenData <-> 20 ASCII digits (SPEC.md §3), and the class bits moved in and out of the block."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from ..errors import FormatError
from .arrays import U32, U64, Bools

#: "0000".."9999" as four ASCII bytes each, read as little-endian uint32 (so stores keep byte order).
_DIGITS4: Final = np.frombuffer("".join(f"{v:04d}" for v in range(10000)).encode("ascii"), dtype="<u4").copy()
_TEN10: Final = 10**10
_2_64_MOD_TEN10: Final = (1 << 64) % _TEN10  # 3709551616
_2_64_DIV_TEN10: Final = (1 << 64) // _TEN10  # 1844674407
#: The data block less bits 28..27, where TokenData carries the class instead.
_KEEP: Final = np.uint64(~(3 << 27) & ((1 << 64) - 1))


def _digits_into(hi: U64, lo: U64, out: U32) -> None:
    """Write the 20 digits of ``hi * 2**64 + lo`` (hi < 4) as five 4-digit groups into (n, 5) '<u4' ``out``.

    The 66-bit value is split into two 10-digit halves q, r with 64-bit arithmetic:
    2**64 = 1844674407 * 10**10 + 3709551616, so q = lo // 10**10 + hi * 1844674407 + carry and
    r = lo % 10**10 + hi * 3709551616 - carry * 10**10, where the carry (0..2) keeps r below
    10**10. Each half then yields 4-digit groups whose ASCII comes from one 10,000-entry table.
    Divisions are by constants, which NumPy turns into multiplications.
    """
    u = np.uint64
    lq = lo // u(_TEN10)
    r = lo - lq * u(_TEN10)
    r += hi * u(_2_64_MOD_TEN10)
    carry = (r >= u(_TEN10)).astype(np.uint64)
    carry += r >= u(2 * _TEN10)
    r -= carry * u(_TEN10)
    q = lq + hi * u(_2_64_DIV_TEN10) + carry
    g0 = q // u(10**6)
    rest = q - g0 * u(10**6)
    g1 = rest // u(100)
    g2 = (rest - g1 * u(100)) * u(100)
    g2h = r // u(10**8)
    g2 += g2h
    rest = r - g2h * u(10**8)
    g3 = rest // u(10**4)
    g4 = rest - g3 * u(10**4)
    for col, g in enumerate((g0, g1, g2, g3, g4)):
        out[:, col] = _DIGITS4[g.view(np.int64)]


def _class_insert(blocks: U64, token_class: int | U64) -> tuple[U64, U64]:
    """(hi, lo) of the 66-bit TokenData: class bits at 28..27, the displaced bits moved to 65..64."""
    hi = (blocks >> np.uint64(27)) & np.uint64(3)
    lo = (blocks & _KEEP) | (np.asarray(token_class, dtype=np.uint64) << np.uint64(27))
    return hi, lo


def _parse_groups(groups: U32) -> tuple[U64, U64, Bools]:
    """(hi, lo, ok) from five little-endian 4-ASCII-digit groups per token.

    SWAR: after XOR with '0000' each byte must be 0..9, i.e. have no high-nibble bits and
    not reach 16 when 6 is added. A group's value is then formed two digits at a time with two
    multiply-adds. The halves q, r recombine as q * 10**10 + r = (q * 5**10) << 10 + r, whose
    high part is (q * 5**10) >> 54 (q * 5**10 < 2**57 fits uint64), plus the carry of the add.
    Column by column, so that every operation after the first runs on contiguous arrays.
    """
    u, w = np.uint64, np.uint32
    bad = np.zeros(len(groups), dtype=np.uint32)
    v = []
    for col in range(5):
        x = groups[:, col] ^ w(0x30303030)
        bad |= x & w(0xF0F0F0F0)
        bad |= (x + w(0x06060606)) & w(0x10101010)
        t = (x * w(10) + (x >> w(8))) & w(0x00FF00FF)
        v.append(((t * w(100) + (t >> w(16))) & w(0xFFFF)).astype(np.uint64))
    ok: Bools = bad == 0
    mid = v[2] // u(100)
    q = v[0] * u(10**6) + v[1] * u(100) + mid
    r = (v[2] - mid * u(100)) * u(10**8) + v[3] * u(10**4) + v[4]
    qq = q * u(5**10)
    hi = qq >> u(54)
    lo = (qq << u(10)) + r
    hi += lo < r
    ok &= hi <= u(3)
    np.copyto(hi, 0, where=~ok)
    np.copyto(lo, 0, where=~ok)
    return hi, lo, ok


def _token_groups(tokens: npt.ArrayLike) -> tuple[U32, Bools]:
    """Tokens as (n, 5) '<u4' groups of 4 ASCII bytes, and which ones could be read at all.

    The fast path is an 'S20' array (what the encoders return): a zero-copy view. Anything
    else (str lists, 'U' arrays, tokens with the spaces or dashes the single path allows) goes
    through a per-token normalisation first; unreadable tokens are flagged, never raised.
    """
    arr = np.asarray(tokens)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise FormatError(f"tokens must be one-dimensional (got shape {arr.shape})")
    if arr.dtype == np.dtype("S20"):
        raw = np.ascontiguousarray(arr)
        return raw.view("<u4").reshape(len(raw), 5), np.ones(len(raw), dtype=np.bool_)
    readable = np.ones(len(arr), dtype=np.bool_)
    clean = np.empty(len(arr), dtype="S20")
    for i, item in enumerate(arr.tolist()):
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
        text = text.replace(" ", "").replace("-", "")
        if len(text) == 20 and text.isascii():
            clean[i] = text.encode("ascii")
        else:
            clean[i] = b"x" * 20
            readable[i] = False
    return clean.view("<u4").reshape(len(clean), 5), readable
