"""The software keystore: vending keys sealed under the master key, kept in the database.

A vending key is stored only sealed (AES-256-GCM, bound to its supply group
and KRN) with a key check value (KCV) an operator can compare without seeing
the key. For development and small utilities: an opened key lives in this
process's memory (never in a log, an error, a response or a column in clear);
where that is not acceptable, use the PKCS#11 keystore.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from mita.sealing import seal, unseal
from mita.sts import MeterNumber, bulk, control_block, derive_decoder_key
from mita.sts.ea import des_encrypt

from .store import KEY_BYTES, Derivation, StoredKey, check_key


def key_check_value(dkga: int, key: bytes) -> str:
    """KCV: DES of zeros (DKGA02, the usual banking KCV) or HMAC-SHA-256 of 8 zero bytes (DKGA04); 3 bytes."""
    if dkga == 2:
        return f"{des_encrypt(0, int.from_bytes(key, 'big')) >> 40:06x}"
    return hmac.new(key, bytes(8), hashlib.sha256).hexdigest()[:6]


def check_vending_key(dkga: int, key: bytes) -> None:
    check_key(dkga, key)


def _context(sgc: str, krn: int) -> str:
    return f"vending-key:{sgc}:{krn}"


def seal_vending_key(sgc: str, krn: int, key: bytes) -> bytes:
    return seal(key, _context(sgc, krn))


def open_vending_key(sealed: bytes, sgc: str, krn: int) -> bytes:
    """The vending key in clear, for this process only."""
    return unseal(sealed, _context(sgc, krn))


class SoftwareVendingKey:
    __slots__ = ("_key", "dkga")

    def __init__(self, dkga: int, key: bytes) -> None:
        self.dkga = dkga
        self._key = key

    def __repr__(self) -> str:
        return f"SoftwareVendingKey(dkga={self.dkga})"

    def decoder_key(self, meter: MeterNumber, d: Derivation) -> int:
        return derive_decoder_key(self.dkga, self._key, meter, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea)

    def decoder_keys(self, meters: Sequence[MeterNumber], d: Derivation) -> npt.NDArray[Any]:
        if self.dkga == 2:
            return bulk.dkga02(self._key, meters, control_block(d.kt, d.sgc, d.ti, d.krn))
        return bulk.dkga04(self._key, meters, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea)


class SoftwareKeyStore:
    """Keys sealed under the master key; the sealed blob is the database's to keep."""

    name = "software"

    def put(self, sgc: str, krn: int, dkga: int, key: bytes) -> StoredKey:
        check_key(dkga, key)
        return StoredKey("software", sgc, krn, dkga, key_check_value(dkga, key), sealed=seal_vending_key(sgc, krn, key))

    def generate(self, sgc: str, krn: int, dkga: int) -> StoredKey:
        return self.put(sgc, krn, dkga, secrets.token_bytes(KEY_BYTES.get(dkga, 0)))

    def open(self, stored: StoredKey) -> SoftwareVendingKey:
        return SoftwareVendingKey(stored.dkga, open_vending_key(stored.sealed, stored.sgc, stored.krn))

    def remove(self, stored: StoredKey) -> None:
        """Nothing to destroy here: the database drops the sealed blob."""
