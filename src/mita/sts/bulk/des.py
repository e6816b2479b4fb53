"""EA09 (DES): deprecated, kept for meters that still have it."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .arrays import U64


def _des(blocks: U64, keys: U64, decrypt: bool) -> U64:
    """Single DES ECB; one cipher context per distinct key, every block of that key in one call."""
    out = np.empty_like(blocks)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        idx = order[s:e]
        cipher = Cipher(TripleDES(int(sorted_keys[s]).to_bytes(8, "big") * 3), modes.ECB())
        ctx = cipher.decryptor() if decrypt else cipher.encryptor()
        data = ctx.update(blocks[idx].astype(">u8").tobytes()) + ctx.finalize()
        out[idx] = np.frombuffer(data, dtype=">u8")
    return out
