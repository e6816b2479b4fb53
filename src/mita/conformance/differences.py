"""Why two tokens for the same request differ: the other token decoded with the same key, field by field.

The order of the questions is the order a meter asks them (SPEC.md §9.2): are these 20 digits a token at all,
does the block decrypt to a valid CRC under this key, and then which field differs. A CRC that fails while the
44 data bits match ours is the other system's CRC (CRC instead of CRC_C, say); a CRC that fails with the data
bits different is a token for another key or a mistyped digit, and that is all one can say about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mita import sts
from mita.sts import EA
from mita.sts import ea as ea_mod
from mita.sts.codec import extract_class, parse_digits
from mita.sts.tokens import REGISTRY, from_block

#: The difference named when the other token's block fails its CRC and its data bits differ from ours.
NOT_A_TOKEN = "does not decrypt to a valid token with this key"


@dataclass(frozen=True, slots=True)
class Difference:
    """One field where the other system's answer differs from Mita's (values as JSON shows them)."""

    field: str  # "class", "subclass", "tid", "amount", "rnd", "crc", "decrypt", "format", a layout field, ...
    ours: Any
    theirs: Any
    token: int | None = None  # for a key change set: the position of the token in Mita's answer


def _block(token_class: int, encrypted: int, ea: EA, key: int | None) -> int | None:
    """The data block of a (class, encrypted block): decrypted for classes 0 and 2; None without a key."""
    if token_class == 1:
        return encrypted
    if key is None:
        return None
    return ea_mod.decrypt(ea, encrypted, key)


def explain(ours: str, theirs: str, ea: EA, key: int | None, token: int | None = None) -> list[Difference]:
    """What differs between Mita's token ``ours`` and the other system's ``theirs`` for the same request."""
    try:
        value = parse_digits(theirs)
    except sts.StsError as exc:
        return [Difference("format", "20 decimal digits", f"{theirs} ({exc.message})", token)]
    our_class, our_encrypted = extract_class(parse_digits(ours))
    their_class, their_encrypted = extract_class(value)
    if their_class == 3:
        return [Difference("class", our_class, "3 (reserved)", token)]
    our_block = _block(our_class, our_encrypted, ea, key)
    their_block = _block(their_class, their_encrypted, ea, key)
    if our_block is None or their_block is None:  # a class 0/2 token where Mita made class 1 (no key given)
        return [Difference("class", our_class, their_class, token)]
    try:
        theirs_token = from_block(their_class, their_block)
    except sts.CrcError:
        if their_class == our_class and their_block >> 16 == our_block >> 16:
            return [Difference("crc", f"{our_block & 0xFFFF:04x}", f"{their_block & 0xFFFF:04x}", token)]
        return [Difference("decrypt", "a valid token", NOT_A_TOKEN, token)]
    except sts.UnsupportedError:
        return [Difference("subclass", our_block >> 60, f"{their_block >> 60} (reserved or proprietary)", token)]
    ours_fields = from_block(our_class, our_block).fields()
    theirs_fields = theirs_token.fields()
    names = list(ours_fields) + [k for k in theirs_fields if k not in ours_fields]
    found = [
        Difference(name, ours_fields.get(name), theirs_fields.get(name), token)
        for name in names
        if ours_fields.get(name) != theirs_fields.get(name)
    ]
    return found or [Difference("token", ours, theirs, token)]


def section_of(token: str, ea: EA, key: int | None) -> int | None:
    """The subclass a key change token decodes to under ``key`` (None if it does not decode)."""
    try:
        decoded = sts.decode(token, ea, key)
    except sts.StsError:
        return None
    return decoded.subclass if decoded.token_class == 2 else None


def has_rnd(token_class: Any, subclass: Any) -> bool:
    """Whether a token type carries the free random nibble (its value is the vendor's choice)."""
    kind = REGISTRY.get((token_class, subclass)) if isinstance(token_class, int) and isinstance(subclass, int) else None
    return kind is not None and any(name == "rnd" for name, *_ in kind.LAYOUT)


def their_rnd(theirs: Any, ea: EA, key: int | None) -> int | None:
    """The random nibble of the other system's token, if it decodes under ``key`` and has one."""
    if not isinstance(theirs, str):
        return None
    try:
        rnd = sts.decode(theirs, ea, key).fields().get("rnd")
    except sts.StsError:
        return None
    return rnd if isinstance(rnd, int) else None


__all__ = ["NOT_A_TOKEN", "Difference", "explain", "has_rnd", "section_of", "their_rnd"]
