"""How a 20-digit STS token travels inside the token gateway's ``enter`` octet-string.

The STS-DLMS companion text that fixes this is not public; meters seen in the field use either packed BCD (two
digits an octet, the first digit in the high nibble: 10 octets) or the 20 ASCII digits. Packed BCD is the default
here; a profile may choose ASCII (:data:`TOKEN_ENCODING`). Decoding is strict: a wrong length or a nibble/byte
that is not a digit is a format failure (:class:`CarrierError`), never a guess.
"""

from __future__ import annotations

from typing import Literal

Encoding = Literal["bcd", "ascii"]

#: The token encoding of each meter profile (mita.meter.profiles); a profile not named here takes packed BCD.
TOKEN_ENCODING: dict[str, Encoding] = {
    "legacy-ea07": "bcd",
    "edition2-ea11": "bcd",
    "water-valve": "bcd",
}

DIGITS = 20


class CarrierError(ValueError):
    """The octet-string does not carry 20 decimal digits in the expected encoding."""


def encoding_of(profile: str) -> Encoding:
    return TOKEN_ENCODING.get(profile, "bcd")


def pack(token: str, encoding: Encoding = "bcd") -> bytes:
    """The octet-string for a 20-digit token (what a head-end sends)."""
    if len(token) != DIGITS or not token.isascii() or not token.isdigit():
        raise CarrierError(f"a token is {DIGITS} decimal digits")
    if encoding == "ascii":
        return token.encode("ascii")
    return bytes(int(token[i]) << 4 | int(token[i + 1]) for i in range(0, DIGITS, 2))


def unpack(data: bytes, encoding: Encoding = "bcd") -> str:
    """The 20 digits an octet-string carries (what the meter receives)."""
    if encoding == "ascii":
        if len(data) != DIGITS or not all(0x30 <= b <= 0x39 for b in data):
            raise CarrierError(f"an ASCII token is {DIGITS} digit characters")
        return data.decode("ascii")
    if len(data) != DIGITS // 2:
        raise CarrierError(f"a packed BCD token is {DIGITS // 2} octets, not {len(data)}")
    nibbles = [n for b in data for n in (b >> 4, b & 0xF)]
    if any(n > 9 for n in nibbles):
        raise CarrierError("a packed BCD token has a nibble that is not a decimal digit")
    return "".join(map(str, nibbles))
