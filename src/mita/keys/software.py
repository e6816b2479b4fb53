"""The software keystore: vending keys sealed under the master key, in the database.

A vending key is stored only sealed (AES-256-GCM, bound to its supply group
and KRN) with a key check value (KCV) an operator can compare without seeing
the key. Opened keys are kept in this process's memory for speed; they never
go to a log, an error, a response or a column in clear.
"""

from __future__ import annotations

import hashlib
import hmac

from mita.sts import FormatError
from mita.sts.ea import des_encrypt

from .master import seal, unseal


def key_check_value(dkga: int, key: bytes) -> str:
    """KCV: DES of zeros (DKGA02, the usual banking KCV) or HMAC of zeros (DKGA04), first 3 bytes."""
    if dkga == 2:
        return f"{des_encrypt(0, int.from_bytes(key, 'big')) >> 40:06x}"
    return hmac.new(key, bytes(8), hashlib.sha256).hexdigest()[:6]


def check_vending_key(dkga: int, key: bytes) -> None:
    want = 8 if dkga == 2 else 20
    if len(key) != want:
        raise FormatError(f"a DKGA0{dkga} vending key has {want * 8} bits ({want * 2} hex digits)")


def _context(sgc: str, krn: int) -> str:
    return f"vending-key:{sgc}:{krn}"


def seal_vending_key(sgc: str, krn: int, key: bytes) -> bytes:
    return seal(key, _context(sgc, krn))


def open_vending_key(sealed: bytes, sgc: str, krn: int) -> bytes:
    """The vending key in clear, for this process only (the vending service keeps what it opened)."""
    return unseal(sealed, _context(sgc, krn))
