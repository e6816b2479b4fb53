"""The three encryption algorithms behind one small interface (6.5.4-6.5.6).

Class 0 and class 2 tokens are encrypted with the meter's current decoder key;
class 1 is sent in clear. EA09 (DES) is deprecated ("shall not be used in new
products") but still decodes for meters that have it; its vectors come from a
single implementation (SPEC.md §5.2).
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

from .errors import FormatError
from .sta import STA

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from . import misty1

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import threading

    from cryptography.hazmat.primitives.ciphers import CipherContext


class EA(IntEnum):
    """Encryption algorithm codes as the standard numbers them."""

    STA = 7
    DEA = 9
    MISTY1 = 11

    @property
    def key_bits(self) -> int:
        return 128 if self is EA.MISTY1 else 64

    @classmethod
    def parse(cls, value: object) -> EA:
        try:
            return cls(int(str(value)))
        except (ValueError, TypeError):
            raise FormatError(f"encryption algorithm must be 7, 9 or 11 (got {value!r})") from None


_local: threading.local | None = None  # made by the first DES call: only DES meters and DKGA02 need it


def _des(key: int, decrypt: bool = False) -> CipherContext:
    """A cached single-DES ECB context (DES3 with K||K||K) for this thread.

    ECB contexts carry no state between 8-byte blocks, so one context per key
    serves every call; building one costs ten times the encryption itself.
    """
    global _local
    if _local is None:
        import threading

        _local = threading.local()  # two threads racing here make two: the loser's cache is lost, nothing else
    cache: dict[tuple[int, bool], CipherContext] | None = getattr(_local, "des", None)
    if cache is None:
        cache = _local.des = {}
    ctx = cache.get((key, decrypt))
    if ctx is None:
        # imported here: only DES meters and DKGA02 need the library, and it costs a command's start-up time
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        from cryptography.hazmat.primitives.ciphers import Cipher, modes

        if len(cache) > 64:
            cache.clear()
        cipher = Cipher(TripleDES(key.to_bytes(8, "big") * 3), modes.ECB())
        ctx = cache[(key, decrypt)] = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx


def des_encrypt(block: int, key: int) -> int:
    return int.from_bytes(_des(key).update(block.to_bytes(8, "big")), "big")


def des_decrypt(block: int, key: int) -> int:
    return int.from_bytes(_des(key, True).update(block.to_bytes(8, "big")), "big")


def check_key(ea: EA, key: int) -> None:
    if not 0 <= key < 1 << ea.key_bits:
        raise FormatError(f"EA{ea.value:02d} needs a {ea.key_bits}-bit decoder key")


def _misty1_encrypt(block: int, key: int) -> int:
    """MISTY1 imported on first use (a keypad command for an EA07 meter does not load it), then this name is the
    cipher's own function."""
    global _misty1_encrypt
    from .misty1 import encrypt as _misty1_encrypt

    return _misty1_encrypt(block, key)


def _misty1_decrypt_scheduled(block: int, schedule: misty1.Schedule) -> int:
    global _misty1_decrypt_scheduled
    from .misty1 import decrypt_scheduled as _misty1_decrypt_scheduled

    return _misty1_decrypt_scheduled(block, schedule)


def encrypt(ea: EA, block: int, key: int) -> int:
    if ea is EA.STA:
        return STA.encrypt(block, key)
    if ea is EA.MISTY1:
        return _misty1_encrypt(block, key)
    return des_encrypt(block, key)


# Decryption is what a meter (or a support desk) does many times with one key:
# keep the last few keys' schedules.
_sta_schedule = lru_cache(maxsize=256)(STA.decrypt_schedule)


@lru_cache(maxsize=256)
def _misty1_schedule(key: int) -> misty1.Schedule:
    from .misty1 import schedule

    return schedule(key)


def decrypt(ea: EA, block: int, key: int) -> int:
    if ea is EA.STA:
        if STA.first_decryption():  # one token per process (mita meter enter): no tables
            return STA.decrypt_direct(block, key)
        return STA.decrypt_scheduled(block, _sta_schedule(key))
    if ea is EA.MISTY1:
        return _misty1_decrypt_scheduled(block, _misty1_schedule(key))
    return des_decrypt(block, key)
