"""Decoder keys for many meters (DKGA02, DKGA04), and key change sets installing new ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .. import accel
from ..dkga import DKGA04_VENDING_KEY_BYTES, _kdf_parts, hmac_pads, key_mac
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
from .arrays import U8, U64, Keys, Tokens, _blocks, _check_range, _ea, _int_array, _keys64
from .layout import data_blocks, layout_data
from .meters import PAN_DIGITS, meter_pans, pan_blocks
from .tokens import encode_blocks


def _meter_kind(meters: Sequence[Any] | npt.NDArray[Any]) -> str:
    """How ``meters`` is given: "numbers" (MeterNumber objects), "strings" (meter numbers as text) or "blocks"."""
    if isinstance(meters, np.ndarray):
        return "strings" if meters.dtype.kind in "US" else "blocks"
    if len(meters) and isinstance(meters[0], MeterNumber) and all(isinstance(m, MeterNumber) for m in meters):
        return "numbers"
    return "strings" if len(meters) and isinstance(meters[0], str | bytes) else "blocks"


def _pans(meters: Sequence[Any] | npt.NDArray[Any]) -> Tokens:
    """'S18' MeterPANs of MeterNumber objects or of meter numbers as text."""
    if _meter_kind(meters) == "numbers":
        return np.array([m.pan for m in meters], dtype=f"S{PAN_DIGITS}")
    return meter_pans(meters)


def dkga02(
    vending_key: bytes,
    meters: Sequence[MeterNumber] | Sequence[str] | npt.ArrayLike,
    control_block: int | npt.ArrayLike,
) -> U64:
    """DKGA02 for many meters: DK = DES(VK, X) ^ X ^ VK with X = PANBlock ^ CONTROLBlock.

    ``meters`` is a sequence of :class:`MeterNumber`, of meter numbers as text (what a campaign or a partner's
    batch holds: checked and read in bulk, :func:`meter_pans`), or an array of PAN blocks;
    ``control_block`` is :func:`mita.sts.control_block` (one for all, or one per meter). For a
    KT 3 control block the common PAN block (DRN digits zero) is used, as the single path does.
    One DES-ECB call covers every meter: ECB encrypts 8-byte blocks independently, and the
    vending key is the same for the whole supply group.
    """
    if len(vending_key) != 8:
        raise FormatError("DKGA02 needs a 64-bit (8-byte) vending key")
    cb = _int_array(control_block, "control_block")
    _check_range(cb, "control_block", 64)
    given: Any = meters if isinstance(meters, np.ndarray) else list(meters)  # type: ignore[arg-type]
    kind = _meter_kind(given)
    if kind == "blocks":
        pan = _blocks(np.asarray(given))
    else:
        pans = _pans(given)
        try:
            cbs = np.broadcast_to(np.atleast_1d(cb).astype(np.uint64), (len(pans),))
        except ValueError:
            raise FormatError("need one control block, or one per meter") from None
        common = (cbs >> np.uint64(60)) == 3
        pan = pan_blocks(pans)
        if common.any():
            pan = np.where(common, pan_blocks(pans, common=True), pan)
    x = pan ^ np.atleast_1d(cb).astype(np.uint64)
    encryptor = Cipher(TripleDES(vending_key * 3), modes.ECB()).encryptor()
    enc = np.frombuffer(encryptor.update(x.astype(">u8").tobytes()) + encryptor.finalize(), dtype=">u8")
    out: U64 = enc.astype(np.uint64) ^ x ^ np.uint64(int.from_bytes(vending_key, "big"))
    return out


def _hmacs(vending_key: bytes, rows: U8, size: int) -> U8:
    """The first ``size`` bytes of HMAC-SHA-256(vending key, row) for each row of ``rows`` (n, width), as (n, size).

    With the accelerator, one call for every row (:func:`mita.sts.dkga.key_mac`'s states, C's batch form). Else
    from the key's two padded states (:func:`mita.sts.dkga.hmac_pads`), copied per message: ``hmac.digest`` would
    hash both key blocks again each time, and there is no batch HMAC in the standard library; each call of that
    loop is C (OpenSSL).
    """
    n, width = rows.shape
    _, states = key_mac(vending_key, size, width)
    batch = accel.function("hmac_batch")
    if states is not None and batch is not None:
        raw: bytes = batch(states, size, np.ascontiguousarray(rows).tobytes(), width)
        return np.frombuffer(raw, dtype=np.uint8).reshape(n, size)
    # 'S' items drop trailing NUL bytes; L (64 or 128 as 4 bytes) ends in a non-zero byte, so none are lost
    assert n == 0 or rows[0, -1] != 0
    messages = np.ascontiguousarray(rows).view(f"S{width}").reshape(n).tolist()
    inner, outer = hmac_pads(vending_key)
    inner_copy, outer_copy = inner.copy, outer.copy
    digests: list[bytes] = []
    append = digests.append
    for message in messages:
        h = inner_copy()
        h.update(message)
        o = outer_copy()
        o.update(h.digest())
        append(o.digest())
    macs = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 32)
    return macs[:, :size]


def dkga04(
    vending_key: bytes,
    meters: Sequence[MeterNumber] | Sequence[str] | npt.NDArray[Any],
    kt: int,
    sgc: str,
    ti: int,
    krn: int,
    base: BaseDate,
    ea: EA | int,
) -> npt.NDArray[Any]:
    """DKGA04 for many meters of one supply group: uint64 keys for EA07, (N, 16) uint8 for EA11.

    ``meters``: :class:`MeterNumber` objects or meter numbers as text (checked and read in bulk). The KDF
    inputs of all meters are built as one array (the supply group's label and context, each meter's PAN, the
    key length), then HMAC'd one by one (:func:`_hmacs`); the outputs are laid out as :func:`encode_credit`
    wants.
    """
    ea_ = _ea(ea)
    if len(vending_key) != DKGA04_VENDING_KEY_BYTES:
        raise FormatError("DKGA04 needs a 160-bit (20-byte) vending key")
    if ea_ is EA.DEA:
        raise UnsupportedError("DKGA04 is defined for EA07 and EA11 only")
    head, length, size = _kdf_parts(kt, sgc, ti, krn, base, ea_)
    pans = _pans(meters if isinstance(meters, np.ndarray) else list(meters))
    n = len(pans)
    if n == 0:
        return np.empty((0, 16), dtype=np.uint8) if ea_ is EA.MISTY1 else np.empty(0, dtype=np.uint64)
    width = len(head) + PAN_DIGITS + len(length)
    rows = np.empty((n, width), dtype=np.uint8)
    rows[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    rows[:, len(head) : len(head) + PAN_DIGITS] = np.ascontiguousarray(pans).view(np.uint8).reshape(n, PAN_DIGITS)
    rows[:, len(head) + PAN_DIGITS :] = np.frombuffer(length, dtype=np.uint8)
    keys = _hmacs(vending_key, rows, size)
    if ea_ is EA.MISTY1:
        return np.ascontiguousarray(keys)
    return np.ascontiguousarray(keys).view(">u8").reshape(-1).astype(np.uint64)


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
