"""Decoder keys for many meters (DKGA02, DKGA04), and key change sets installing new ones."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ..dkga import DKGA04_VENDING_KEY_BYTES, dkga04_input
from ..ea import EA
from ..errors import FormatError, RangeError, UnsupportedError
from ..identity import MeterNumber, check_key_params
from ..tid import BaseDate
from ..tokens import (
    Set1stSectionDecoderKey,
    Set2ndSectionDecoderKey,
    Set3rdSectionDecoderKey,
    Set4thSectionDecoderKey,
    Token,
)
from .arrays import U64, Keys, Tokens, _blocks, _check_range, _ea, _int_array, _keys64
from .layout import data_blocks, layout_data
from .tokens import encode_blocks


def dkga02(
    vending_key: bytes, meters: Sequence[MeterNumber] | npt.ArrayLike, control_block: int | npt.ArrayLike
) -> U64:
    """DKGA02 for many meters: DK = DES(VK, X) ^ X ^ VK with X = PANBlock ^ CONTROLBlock.

    ``meters`` is a sequence of :class:`MeterNumber` or an array of PAN blocks;
    ``control_block`` is :func:`mita.sts.control_block` (one for all, or one per meter). For a
    KT 3 control block the common PAN block (DRN digits zero) is used, as the single path does.
    One DES-ECB call covers every meter: ECB encrypts 8-byte blocks independently, and the
    vending key is the same for the whole supply group.
    """
    if len(vending_key) != 8:
        raise FormatError("DKGA02 needs a 64-bit (8-byte) vending key")
    cb = _int_array(control_block, "control_block")
    _check_range(cb, "control_block", 64)
    items: list[Any] = [] if isinstance(meters, np.ndarray) else list(meters)  # type: ignore[arg-type]
    numbers = [m for m in items if isinstance(m, MeterNumber)]
    if items and len(numbers) == len(items):
        try:
            cbs = np.broadcast_to(np.atleast_1d(cb).astype(np.uint64), (len(numbers),))
        except ValueError:
            raise FormatError("need one control block, or one per meter") from None
        common = (cbs >> np.uint64(60)) == 3
        pan = np.array([m.pan_block(common=bool(c)) for m, c in zip(numbers, common, strict=True)], dtype=np.uint64)
    else:
        pan = _blocks(np.asarray(meters))
    x = pan ^ np.atleast_1d(cb).astype(np.uint64)
    encryptor = Cipher(TripleDES(vending_key * 3), modes.ECB()).encryptor()
    enc = np.frombuffer(encryptor.update(x.astype(">u8").tobytes()) + encryptor.finalize(), dtype=">u8")
    out: U64 = enc.astype(np.uint64) ^ x ^ np.uint64(int.from_bytes(vending_key, "big"))
    return out


def dkga04(
    vending_key: bytes,
    meters: Sequence[MeterNumber],
    kt: int,
    sgc: str,
    ti: int,
    krn: int,
    base: BaseDate,
    ea: EA | int,
) -> npt.NDArray[Any]:
    """DKGA04 for many meters of one supply group: uint64 keys for EA07, (N, 16) uint8 for EA11.

    HMAC-SHA-256 has no batch form in the standard library, so this loops over ``hmac.digest``
    (C code, about a microsecond each); the outputs are laid out as :func:`encode_credit` wants.
    """
    ea_ = _ea(ea)
    if len(vending_key) != DKGA04_VENDING_KEY_BYTES:
        raise FormatError("DKGA04 needs a 160-bit (20-byte) vending key")
    if ea_ is EA.DEA:
        raise UnsupportedError("DKGA04 is defined for EA07 and EA11 only")
    size = ea_.key_bits // 8
    raw = b"".join(
        hmac.digest(vending_key, dkga04_input(m, kt, sgc, ti, krn, base, ea_), "sha256")[:size] for m in meters
    )
    keys = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    if ea_ is EA.MISTY1:
        return keys.copy()
    return keys.view(">u8").reshape(-1).astype(np.uint64)


def _key_words(keys: Keys, key_bits: int, n: int) -> list[U64]:
    """Decoder keys as their 32-bit words, most significant first (2 for 64-bit keys, 4 for 128)."""
    if key_bits == 64:
        k = _keys64(keys, n)
        return [k >> np.uint64(32), k & np.uint64(0xFFFFFFFF)]
    arr = np.asarray(keys)
    if arr.dtype == np.uint8 and arr.shape == (n, 16):
        words = np.ascontiguousarray(arr).view(">u4").reshape(n, 4).astype(np.uint64)
    else:
        try:
            each = np.broadcast_to(np.asarray(keys, dtype=object), (n,))
            raw = b"".join(int(k).to_bytes(16, "big") for k in each)
        except ValueError:
            raise FormatError(f"need one new key, or one per meter ({n})") from None
        except OverflowError:
            raise RangeError("a new key does not fit in 128 bits") from None
        words = np.frombuffer(raw, dtype=">u4").reshape(n, 4).astype(np.uint64)
    return [words[:, i].copy() for i in range(4)]


def key_change_sets(
    new_keys: Keys,
    old_keys: Keys,
    old_ea: EA | int,
    n: int,
    *,
    key_bits: int,
    ken: int,
    krn: int,
    kt: int,
    ti: int | npt.ArrayLike,
    ro: int,
    sgc: str | None = None,
) -> Tokens:
    """Key change sets for ``n`` meters: an (n, 2) or (n, 4) 'S20' array, sections 1st, 2nd[, 3rd, 4th].

    Each set installs ``new_keys[i]`` and is encrypted under ``old_keys[i]`` with the meters'
    current algorithm; the same digits as :func:`mita.sts.key_change_set` then ``encode`` per meter.
    """
    if key_bits not in (64, 128):
        raise FormatError(f"a decoder key has 64 or 128 bits (got {key_bits})")
    if not 0 <= ken <= 255:
        raise RangeError(f"key expiry number KEN must be 0..255 (got {ken})")
    tis = _int_array(ti, "ti")
    for one in {int(t) for t in np.atleast_1d(tis)}:  # the single path's rules, once per distinct TI
        check_key_params(kt, sgc if sgc is not None else "000000", one, krn)
    words = _key_words(new_keys, key_bits, n)
    fields: list[tuple[type[Token], dict[str, int | npt.ArrayLike]]] = [
        (Set1stSectionDecoderKey, {"kenho": ken >> 4, "krn": krn, "ro": ro, "kt": kt, "nkho": words[0]}),
        (Set2ndSectionDecoderKey, {"kenlo": ken & 15, "ti": ti, "nklo": words[-1]}),
    ]
    if key_bits == 128:
        if sgc is None:
            raise FormatError("a 4-token key change set needs the 6-digit SGC")
        code = int(sgc)
        fields += [
            (Set3rdSectionDecoderKey, {"sgclo": code & 0xFFF, "nkmo2": words[1]}),
            (Set4thSectionDecoderKey, {"sgcho": code >> 12, "nkmo1": words[2]}),
        ]
    out = np.empty((n, len(fields)), dtype="S20")
    for i, (token_type, values) in enumerate(fields):
        blocks = data_blocks(2, token_type.subclass, layout_data(token_type, n, **values))
        out[:, i] = encode_blocks(2, blocks, old_keys, old_ea)
    return out
