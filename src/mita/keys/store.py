"""One interface for every place a vending key can live: the software keystore and PKCS#11 HSMs.

The vending service never handles a vending key itself. It keeps a
:class:`StoredKey` (what the database holds about a key: which keystore,
the keystore's handle, the sealed blob for the software keystore, the key
check value) and asks the keystore for a :class:`VendingKey`, which can only
derive decoder keys. What is inside a ``VendingKey`` is the keystore's
business: the key bytes for the software keystore, a session object handle
for an HSM, where the vending key never enters this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mita.sealing import KeyStoreError
from mita.sts import EA, BaseDate, FormatError, MeterNumber

#: The key lengths each DKGA takes, in bytes (DKGA02: single DES; DKGA04: 160 bits, as every vector).
KEY_BYTES = {2: 8, 4: 20}


@dataclass(frozen=True)
class StoredKey:
    """What the database keeps about one vending key: never the key in clear."""

    keystore: str  # "software" or "pkcs11"
    sgc: str
    krn: int
    dkga: int
    kcv: str  # key check value: an operator verifies a key without seeing it
    handle: str = ""  # the keystore's own name for the key (a PKCS#11 object label)
    sealed: bytes = field(default=b"", repr=False)  # the software keystore's AES-GCM blob


@dataclass(frozen=True)
class Derivation:
    """Everything but the meter that goes into a decoder key (one supply group's key configuration)."""

    kt: int
    sgc: str
    ti: int
    krn: int
    base_date: BaseDate
    ea: EA


class VendingKey(Protocol):
    """An opened vending key: it derives decoder keys and nothing else."""

    dkga: int

    def decoder_key(self, meter: MeterNumber, d: Derivation) -> int: ...

    def decoder_keys(self, meters: Sequence[MeterNumber], d: Derivation) -> npt.NDArray[Any]:
        """Many meters at once, laid out as :mod:`mita.sts.bulk` takes keys (uint64, or (N, 16) uint8 for EA11)."""
        ...


class KeyStore(Protocol):
    name: str

    def put(self, sgc: str, krn: int, dkga: int, key: bytes) -> StoredKey:
        """Import a key given in clear (the key's only passage through this process)."""
        ...

    def generate(self, sgc: str, krn: int, dkga: int) -> StoredKey:
        """A new random vending key, made by the keystore."""
        ...

    def open(self, stored: StoredKey) -> VendingKey:
        """The key ready to derive; keystores may keep opened keys for the process's life."""
        ...

    def remove(self, stored: StoredKey) -> None:
        """Destroy the key (a retired key stays in the database's history, without its material)."""
        ...


def check_key(dkga: int, key: bytes) -> None:
    want = KEY_BYTES.get(dkga)
    if want is None:
        raise KeyStoreError("invalid_dkga", "DKGA must be 2 or 4 (DKGA01 and DKGA03 are not supported)")
    if len(key) != want:
        raise FormatError(f"a DKGA0{dkga} vending key has {want * 8} bits ({want * 2} hex digits)")


def as_key_array(keys: Sequence[int] | npt.NDArray[Any], ea: EA) -> npt.NDArray[Any]:
    """Decoder keys as :mod:`mita.sts.bulk` takes them."""
    if isinstance(keys, np.ndarray):
        return keys
    if ea is EA.MISTY1:
        raw = b"".join(k.to_bytes(16, "big") for k in keys)
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 16).copy()
    return np.array(keys, dtype=np.uint64)
