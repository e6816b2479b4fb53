"""Whole arrays of tokens: encode (blocks -> cipher -> class bits -> digits) and decode (the reverse, with flags).

The glue on either side of the cipher runs in :data:`chunks.GLUE`-sized steps, the cipher on its
own, larger, preallocated chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..ea import EA
from ..errors import RangeError, UnsupportedError
from ..tokens import REGISTRY, TransferCredit
from . import chunks
from .arrays import U64, Keys, Tokens, _blocks, _broadcast, _ea, _int_array
from .ciphers import _Cipher
from .crc import _crc_field, _crc_fields
from .digits import _KEEP, _class_insert, _digits_into, _parse_groups, _token_groups
from .layout import _check_field, _layout_bits

_M44: Final = (1 << 44) - 1


def _glue_steps(start: int, stop: int) -> list[tuple[slice, slice]]:
    """(token slice, slice within the chunk) for each GLUE-sized step of tokens start..stop."""
    glue = chunks.GLUE
    return [
        (slice(a, min(a + glue, stop)), slice(a - start, min(a + glue, stop) - start)) for a in range(start, stop, glue)
    ]


def _pipeline(n: int, make_blocks: Callable[[slice], U64], token_class: int, cipher: _Cipher | None) -> Tokens:
    """Cipher chunk by cipher chunk: blocks -> encrypt -> class bits -> digits, into the output array.

    The glue on either side of the cipher runs in GLUE-sized steps (small temporaries);
    the cipher runs on its own, larger, preallocated chunk.
    """
    out = np.empty(n, dtype="S20")
    groups = out.view("<u4").reshape(n, 5)
    step = chunks.GLUE if cipher is None else cipher.chunk
    for start in range(0, n, step):
        stop = min(start + step, n)
        if cipher is None:
            blocks = make_blocks(slice(start, stop))
        else:
            blocks = cipher.inbuf[: stop - start]
            for tokens, local in _glue_steps(start, stop):
                blocks[local] = make_blocks(tokens)
            blocks = cipher(blocks, slice(start, stop))
        for tokens, local in _glue_steps(start, stop):
            hi, lo = _class_insert(blocks[local], token_class)
            _digits_into(hi, lo, groups[tokens])
    return out


def encode_blocks(token_class: int, blocks: npt.ArrayLike, keys: Keys | None, ea: EA | int) -> Tokens:
    """20-digit tokens ('S20') of data blocks (from :func:`data_blocks`) of one class.

    Class 0 and 2 blocks are encrypted with each token's key; class 1 goes in clear and
    ``keys`` may be None. Vectorised ``encode(from_block(..), ea, key)`` without the object.
    """
    if token_class not in (0, 1, 2, 3):
        raise RangeError(f"token class must be 0..3 (got {token_class})")
    if token_class == 3:
        raise UnsupportedError("class 3 is reserved")
    b = _blocks(blocks)
    cipher = None if token_class == 1 else _Cipher(_ea(ea), keys, len(b), decrypt=False)
    return _pipeline(len(b), lambda sl: b[sl], token_class, cipher)


#: (width, codec) of each TransferCredit field, for the range checks of :func:`encode_credit`.
_CREDIT: Final = {name: (width, codec) for name, _, width, codec in TransferCredit.LAYOUT}


def encode_credit(
    tids: npt.ArrayLike,
    amounts: npt.ArrayLike,
    rnds: npt.ArrayLike,
    keys: Keys,
    ea: EA | int,
    subclass: int = 0,
) -> Tokens:
    """TransferCredit tokens (class 0, subclass 0..3) as an 'S20' array of 20 ASCII digits.

    Amounts are in base units (0.1 kWh etc.) and rounded up exactly as
    :func:`mita.sts.encode_amount` does; any TID, amount or RND out of range raises a
    RangeError naming the first bad index before any work is done. A scalar argument is
    used for every token. Same digits as ``encode(TransferCredit(tid, amount, rnd, kind), ea, key)``.
    Currency credit (subclasses 4..7) is not here: build its blocks with :func:`layout_data` and
    :func:`data_blocks`. The fields go where TransferCredit's LAYOUT table puts them.
    """
    if not 0 <= subclass <= 3:
        raise UnsupportedError(f"encode_credit makes subclass 0..3 tokens (got {subclass}); use data_blocks")
    t_a = _int_array(tids, "tids")
    a_a = _int_array(amounts, "amounts")
    r_a = _int_array(rnds, "rnds")
    _check_field(t_a, "tids", *_CREDIT["tid"])
    _check_field(a_a, "amounts", *_CREDIT["amount"])
    _check_field(r_a, "rnds", *_CREDIT["rnd"])
    t_b, a_b, r_b = _broadcast(t_a, a_a, r_a)
    columns = {"tid": t_b, "amount": a_b, "rnd": r_b}
    ea_ = _ea(ea)
    n = len(t_b)
    cipher = _Cipher(ea_, keys, n, decrypt=False)
    sub = np.uint64(subclass)

    def make(sl: slice) -> U64:
        data = _layout_bits(TransferCredit.LAYOUT, columns, sl)
        assert data is not None  # every field has a column
        crc = _crc_field(data | sub << np.uint64(44), currency=False)
        data <<= np.uint64(16)
        data |= crc
        data |= sub << np.uint64(60)
        return data

    return _pipeline(n, make, 0, cipher)


_SUPPORTED: Final = np.zeros((4, 16), dtype=np.bool_)
for _c, _s in REGISTRY:
    _SUPPORTED[_c, _s] = True


def decode(tokens: npt.ArrayLike, keys: Keys | None, ea: EA | int) -> dict[str, npt.NDArray[Any]]:
    """Parse, decrypt and CRC-check many tokens; never raises on a bad token.

    Returns arrays, one element per token:

    - ``class``, ``subclass`` (uint8) and ``data`` (uint64, the 44 bits D 59..16);
    - ``block``: the decrypted data block D (class 1: as sent; class 3: not decrypted);
    - ``format_ok``: 20 digits below 2**66 (else every other field is 0 / False);
    - ``crc_ok``: the CRC (CRC_C for class 0 subclass 4..7) matches: a wrong key or a
      mistyped digit fails here;
    - ``supported``: (class, subclass) is a defined token type (class 3 and reserved
      subclasses are not);
    - ``ok``: all three, i.e. exactly the tokens :func:`mita.sts.decode` would accept.

    ``keys`` as for the encoders; it may be None only when no token needs decrypting, and
    then class 0 and 2 tokens come back with ``crc_ok`` False.
    """
    groups, readable = _token_groups(tokens)
    n = len(groups)
    ea_ = _ea(ea)
    cipher = _Cipher(ea_, keys, n, decrypt=True) if keys is not None else None
    cls = np.zeros(n, dtype=np.uint8)
    sub = np.zeros(n, dtype=np.uint8)
    data = np.zeros(n, dtype=np.uint64)
    block = np.zeros(n, dtype=np.uint64)
    format_ok = np.zeros(n, dtype=np.bool_)
    crc_ok = np.zeros(n, dtype=np.bool_)
    supported = np.zeros(n, dtype=np.bool_)
    step = chunks.GLUE if cipher is None else cipher.chunk
    for start in range(0, n, step):
        stop = min(start + step, n)
        steps = _glue_steps(start, stop)
        for part, _ in steps:  # digits -> the block as sent, written into ``block``
            hi, lo, ok = _parse_groups(groups[part])
            ok &= readable[part]
            format_ok[part] = ok
            np.copyto(cls[part], (lo >> np.uint64(27)) & np.uint64(3), casting="unsafe")
            np.bitwise_or(lo & _KEEP, hi << np.uint64(27), out=block[part])
        if cipher is not None:
            plain = cipher(block[start:stop], slice(start, stop))
            for part, local in steps:  # classes 0 and 2 are encrypted; 1 is clear, 3 reserved
                c = cls[part]
                np.copyto(block[part], plain[local], where=(c == 0) | (c == 2))
        for part, _ in steps:
            blk, c, ok = block[part], cls[part], format_ok[part]
            np.copyto(blk, 0, where=~ok)
            s = blk >> np.uint64(60)
            d = (blk >> np.uint64(16)) & np.uint64(_M44)
            good = _crc_fields(c.astype(np.uint64), s, d) == (blk & np.uint64(0xFFFF))
            good &= ok
            if cipher is None:
                good &= c == 1
            sub[part] = s
            data[part] = d
            crc_ok[part] = good
            supported[part] = _SUPPORTED[c, s] & ok
    return {
        "class": cls,
        "subclass": sub,
        "data": data,
        "block": block,
        "format_ok": format_ok,
        "crc_ok": crc_ok,
        "supported": supported,
        "ok": format_ok & crc_ok & supported,
    }
