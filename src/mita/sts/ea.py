"""The three encryption algorithms behind one small interface (6.5.4-6.5.6).

Class 0 and class 2 tokens are encrypted with the meter's current decoder key;
class 1 is sent in clear. EA09 (DES) is deprecated ("shall not be used in new
products") but still decodes for meters that have it; its vectors come from a
single implementation (SPEC.md §5.2).
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

from .errors import FormatError, shown
from .sta import STA

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from cryptography.hazmat.primitives.ciphers import CipherContext

    from . import misty1


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
            raise FormatError(f"encryption algorithm must be 7, 9 or 11 (got {shown(value)})") from None


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


# Decryption is what a meter (or a support desk) does many times with one key:
# keep the last few keys' schedules.
_sta_schedule = lru_cache(maxsize=256)(STA.decrypt_schedule)


@lru_cache(maxsize=256)
def _misty1_schedule(key: int) -> misty1.Schedule:
    from .misty1 import schedule

    return schedule(key)


def _sta_decrypt(block: int, key: int) -> int:
    return STA.decrypt_scheduled(block, _sta_schedule(key))


def _reference(ea: int, direction: int) -> Callable[[int, int], int]:
    """The pure-Python cipher: (encrypt, decrypt)[direction]; MISTY1 is imported only when asked for (a keypad
    command for an EA07 meter does not load it). KeyError for an EA that is not 7, 9 or 11."""
    if ea == 11:
        from . import misty1

        if direction == 0:
            return misty1.encrypt
        return lambda block, key: misty1.decrypt_scheduled(block, _misty1_schedule(key))
    return {7: (STA.encrypt, _sta_decrypt), 9: (des_encrypt, des_decrypt)}[ea][direction]


#: The accelerator's names for each cipher it has: (encrypt, decrypt).
_ACCELERATED = {7: ("sta_encrypt", "sta_decrypt"), 11: ("misty1_encrypt", "misty1_decrypt")}


class _Ciphers(dict[int, "Callable[[int, int], int]"]):
    """Each EA's encrypt (or decrypt), chosen on its first use: the compiled accelerator's when there is one
    (:mod:`.accel`), else the reference. Dispatch by table: this is the vend hot path, and enum comparisons cost
    more than the lookups. Keyed by the EA's number (an :class:`EA` hashes and compares as its int)."""

    def __init__(self, direction: int) -> None:
        super().__init__()
        self.direction = direction  # 0 encrypt, 1 decrypt

    def __missing__(self, ea: int) -> Callable[[int, int], int]:
        reference = _reference(ea, self.direction)
        names = _ACCELERATED.get(ea)
        chosen = reference
        if names is not None:
            from . import accel

            chosen = accel.function(names[self.direction]) or reference
        self[ea] = chosen
        return chosen


ENCRYPT = _Ciphers(0)
DECRYPT = _Ciphers(1)


def forget_choices() -> None:
    """Choose each cipher's implementation again on its next use (:func:`mita.sts.accel.use` calls this)."""
    ENCRYPT.clear()
    DECRYPT.clear()


def encrypt(ea: EA, block: int, key: int) -> int:
    return ENCRYPT[ea](block, key)


def decrypt(ea: EA, block: int, key: int) -> int:
    if ea is EA.STA and STA.first_decryption():  # one token per process (mita meter enter): no tables
        return STA.decrypt_direct(block, key)
    return DECRYPT[ea](block, key)
