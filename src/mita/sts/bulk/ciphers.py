"""The three decoder-key algorithms behind one interface, over whole arrays of blocks, chunk by chunk."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..ea import EA
from ..errors import FormatError
from . import chunks
from .arrays import U64, Keys, _blocks, _ea, _keys64
from .des import _des
from .misty1 import _Keys128, _MistyWork
from .sta import STA, BitslicedSta, _StaWork


class _Cipher:
    """One algorithm with its normalised keys and buffers, applied chunk by chunk.

    Callers write up to ``chunk`` blocks into ``inbuf`` (or pass any array) and call it with
    the slice of the tokens those blocks belong to. The result is a view of an internal
    buffer, valid until the next call: fresh arrays of this size would cost page faults.
    """

    def __init__(self, ea: EA, keys: Keys | None, n: int, decrypt: bool, sta: BitslicedSta = STA) -> None:
        self.ea, self.decrypt = ea, decrypt
        if keys is None:
            raise FormatError("a decoder key is needed to encrypt or decrypt class 0 and class 2 tokens")
        if ea is EA.MISTY1:
            self.keys128 = _Keys128(keys, n)
            self.misty = _MistyWork(max(1, min(chunks.MISTY1_CHUNK, n)))
            self.chunk = self.misty.size
        else:
            self.keys64 = _keys64(keys, n)
            if ea is EA.STA:
                self.sta = _StaWork(sta, min(chunks.STA_CHUNK, -(-n // 64) * 64))
                self.chunk = self.sta.size
            else:
                self.chunk = chunks.DES_CHUNK
        self.inbuf = np.empty(self.chunk, dtype=np.uint64)

    def __call__(self, blocks: U64, sl: slice) -> U64:
        if self.ea is EA.STA:
            return self.sta.run(blocks, self.keys64[sl], self.decrypt)
        if self.ea is EA.MISTY1:
            m = len(blocks)
            self.keys128.fill(self.misty.words[:, :m], sl, self.misty.wide[:m])
            return self.misty.run(blocks, self.decrypt)
        return _des(blocks, self.keys64[sl], self.decrypt)


def encrypt_blocks(blocks: npt.ArrayLike, keys: Keys, ea: EA | int) -> U64:
    """Encrypt 64-bit data blocks, each with its own decoder key (vectorised ``ea.encrypt``)."""
    return _crypt(blocks, keys, _ea(ea), decrypt=False)


def decrypt_blocks(blocks: npt.ArrayLike, keys: Keys, ea: EA | int) -> U64:
    """Decrypt 64-bit blocks, each with its own decoder key (vectorised ``ea.decrypt``)."""
    return _crypt(blocks, keys, _ea(ea), decrypt=True)


def _crypt(blocks: npt.ArrayLike, keys: Keys, ea: EA, decrypt: bool) -> U64:
    b = _blocks(blocks)
    cipher = _Cipher(ea, keys, len(b), decrypt)
    out = np.empty_like(b)
    for start in range(0, len(b), cipher.chunk):
        sl = slice(start, start + cipher.chunk)
        out[sl] = cipher(b[sl], sl)
    return out
