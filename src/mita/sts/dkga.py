"""Decoder key generation: DKGA02 (DES) and DKGA04 (KDF-HMAC-SHA-256), 6.5.3.

The decoder key of a meter is derived from the vending key of its supply
group and the meter's identity, so a vending system never stores per-meter
keys. DKGA01's cipher step is not public: asking for it is an
:class:`UnsupportedError`, never a guess.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache, partial

from .ea import EA, des_encrypt
from .errors import FormatError, UnsupportedError
from .identity import MeterNumber, check_key_params, control_block
from .tid import BaseDate

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from _hashlib import HASH
    from collections.abc import Callable

_M64 = (1 << 64) - 1
DKGA04_VENDING_KEY_BYTES = 20  # 160 bits, as every compliance vector has it
PAN_LENGTH = 18  # the MeterPAN's digits, for both IINs


def dkga02(vending_key: bytes, meter: MeterNumber, kt: int, sgc: str, ti: int, krn: int) -> int:
    """DK = DES(VK, PANBlock ^ CONTROLBlock) ^ (PANBlock ^ CONTROLBlock) ^ VK (64-bit)."""
    if len(vending_key) != 8:
        raise FormatError("DKGA02 needs a 64-bit (8-byte) vending key")
    vk = int.from_bytes(vending_key, "big")
    x = meter.pan_block(common=kt == 3) ^ control_block(kt, sgc, ti, krn)
    return des_encrypt(x, vk) ^ x ^ vk


def _items(*items: str) -> bytes:
    """An item count, then each ASCII item with its length in front."""
    out = bytes([len(items)])
    for item in items:
        out += bytes([len(item)]) + item.encode("ascii")
    return out


@lru_cache(maxsize=256)
def _kdf_parts(kt: int, sgc: str, ti: int, krn: int, base: BaseDate, ea: EA) -> tuple[bytes, bytes, int]:
    """Everything in the KDF input but the MeterPAN, and the key's length in bytes; the same for a whole supply
    group."""
    check_key_params(kt, sgc, ti, krn)
    label = _items("04", base.code, f"{ea.value:02d}", f"{ti:02d}")
    context = _items(sgc, str(kt), str(krn), "0" * 18)[:-18]  # the PAN is appended per meter
    return label + b"\x00" + context, ea.key_bits.to_bytes(4, "big"), ea.key_bits // 8


def dkga04_input(meter: MeterNumber, kt: int, sgc: str, ti: int, krn: int, base: BaseDate, ea: EA) -> bytes:
    """Label || 0x00 || Context || L, as NIST SP 800-108 feedback mode builds it (SPEC.md §6.5)."""
    head, length, _ = _kdf_parts(kt, sgc, ti, krn, base, ea)
    return head + meter.pan.encode() + length


@lru_cache(maxsize=16)
def hmac_pads(vending_key: bytes) -> tuple[HASH, HASH]:
    """SHA-256 states after HMAC's inner and outer key blocks (RFC 2104), for one vending key.

    Why: ``hmac.digest`` hashes both key blocks again for every meter, half of DKGA04's cost; a supply group
    derives every meter's key under one vending key. Copies of these two states finish the HMAC for any message
    (the vectors and a property test hold it equal to ``hmac.digest``). Like the DES contexts of :mod:`.ea`, the
    states live in this process only and are never shown.
    """
    block = vending_key.ljust(64, b"\x00")  # a 20-byte key: shorter than SHA-256's block, so used as it is
    return hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD))


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


#: The longest message the accelerator's HMAC takes: one SHA-256 block once padded (DKGA04's inputs are 49).
_SHORT_MESSAGE = 55


def _reference_mac(vending_key: bytes, size: int) -> Callable[[bytes], int]:
    """HMAC-SHA-256 under ``vending_key``, its first ``size`` bytes as an int, from copies of the padded states."""
    inner, outer = hmac_pads(vending_key)

    def mac(message: bytes) -> int:
        h = inner.copy()
        h.update(message)
        o = outer.copy()
        o.update(h.digest())
        return int.from_bytes(o.digest()[:size], "big")

    return mac


class _Secret(bytes):
    """Key material (HMAC states derived from a vending key): bytes that never show in a repr, so a traceback
    with its locals or a log line of the partial holding them shows ``<secret>``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def key_mac(vending_key: bytes, size: int, width: int) -> tuple[Callable[[bytes], int], bytes | None]:
    """HMAC-SHA-256 under ``vending_key`` for messages of ``width`` bytes, truncated to ``size`` bytes: the
    accelerator's (:mod:`.accel`: both key blocks hashed once, a message in one call) when it is built and the
    messages fit one block, else :func:`_reference_mac`. With the accelerator, also the key's two states, which
    its batch form takes (the bulk path); else None."""
    from . import accel

    short, states_of = accel.function("hmac_short"), accel.function("hmac_states")
    if short is None or states_of is None or width > _SHORT_MESSAGE or len(vending_key) > 64:
        return _reference_mac(vending_key, size), None
    states = _Secret(states_of(vending_key))
    return partial(short, states, size), states


@lru_cache(maxsize=64)
def _dkga04_states(
    vending_key: bytes, kt: int, sgc: str, ti: int, krn: int, base: BaseDate, ea: EA
) -> tuple[Callable[[bytes], int], bytes, bytes]:
    """What DKGA04 shares across a supply group: the HMAC under its vending key (:func:`key_mac`), the KDF
    input's head (label and context) and tail (L). The checks run here: an error is raised on every call, never
    cached. Like the DES contexts of :mod:`.ea`, the key's states live in this process only and are never shown.
    """
    if len(vending_key) != DKGA04_VENDING_KEY_BYTES:
        raise FormatError("DKGA04 needs a 160-bit (20-byte) vending key")
    if ea is EA.DEA:
        raise UnsupportedError("DKGA04 is defined for EA07 and EA11 only")
    head, length, size = _kdf_parts(kt, sgc, ti, krn, base, ea)
    mac, _ = key_mac(vending_key, size, len(head) + PAN_LENGTH + len(length))
    return mac, head, length


def forget_choices() -> None:
    """Choose the HMAC's implementation again on next use (:func:`mita.sts.accel.use` calls this)."""
    _dkga04_states.cache_clear()


def dkga04(vending_key: bytes, meter: MeterNumber, kt: int, sgc: str, ti: int, krn: int, base: BaseDate, ea: EA) -> int:
    """The leftmost 64 (EA07) or 128 (EA11) bits of HMAC-SHA-256(VK, KDF input)."""
    mac, head, length = _dkga04_states(vending_key, kt, sgc, ti, krn, base, ea)
    return mac(head + meter.pan.encode() + length)


def derive_decoder_key(
    dkga: int,
    vending_key: bytes,
    meter: MeterNumber,
    kt: int,
    sgc: str,
    ti: int,
    krn: int,
    base: BaseDate = BaseDate.Y1993,
    ea: EA = EA.STA,
) -> int:
    """Dispatch on the DKGA number; the base date and EA matter for DKGA04 only."""
    if dkga == 2:
        return dkga02(vending_key, meter, kt, sgc, ti, krn)
    if dkga == 4:
        return dkga04(vending_key, meter, kt, sgc, ti, krn, base, ea)
    if dkga in (1, 3):
        raise UnsupportedError(f"DKGA0{dkga} is not implemented: its cipher step is not public")
    raise FormatError(f"DKGA must be 2 or 4 (got {dkga})")
