"""Tokens to 20 digits and back (6.3.3, 6.4; SPEC.md §3).

Encoding: build the data block, encrypt it (classes 0 and 2), then insert
the two class bits at bits 28..27 of the 66-bit TokenData, moving the two bits
they displace to bits 65..64. The 20 digits are that number in decimal.
Decoding undoes each step and checks the CRC; the first failing step names
the error.
"""

from __future__ import annotations

from . import ea as _ea
from .ea import EA
from .errors import FormatError, UnsupportedError
from .tokens import Token, from_block, to_block

TOKEN_DIGITS = 20
_DIGITS = frozenset("0123456789")


_ENCRYPT = _ea.ENCRYPT  # each EA's cipher, the accelerator's when built (chosen on first use)
_KEY_LIMIT = {ea: 1 << ea.key_bits for ea in EA}
_MAX_66 = (1 << 66) - 1
_KEEP = ~(3 << 27) & ((1 << 64) - 1)


def insert_class(block: int, token_class: int) -> int:
    """66-bit TokenData from an (encrypted) 64-bit block and the class."""
    return (block >> 27 & 3) << 64 | (block & _KEEP) | token_class << 27


def extract_class(value: int) -> tuple[int, int]:
    """(class, 64-bit block) from 66-bit TokenData."""
    return value >> 27 & 3, (value & _KEEP) | (value >> 64) << 27


def to_digits(value: int) -> str:
    return f"{value:020d}"


def parse_digits(token: str) -> int:
    """The 66-bit value of a 20-digit token (spaces and dashes are ignored)."""
    text = str(token).replace(" ", "").replace("-", "")
    if len(text) != TOKEN_DIGITS or not (text.isascii() and text.isdigit()):
        raise FormatError(_not_a_token(str(token), len(text)))
    value = int(text)
    if value > _MAX_66:
        raise FormatError("token value exceeds 66 bits: not an STS token")
    return value


def _not_a_token(given: str, length: int) -> str:
    """Why ``given`` is not 20 digits: the first character that is not a digit (counted as typed), or the length."""
    for i, char in enumerate(given, 1):
        if char not in _DIGITS and char not in " -":
            return f"a token is {TOKEN_DIGITS} digits; character {i} is {char!r}"
    return f"a token is {TOKEN_DIGITS} digits (got {length})"


def encode(token: Token, ea: EA, key: int) -> str:
    """The 20 digits of ``token`` for a meter holding ``key`` (class 1 ignores it)."""
    block = to_block(token)
    token_class = token.token_class
    if token_class != 1:
        if not 0 <= key < _KEY_LIMIT[ea]:
            _ea.check_key(ea, key)  # raises the precise error
        block = _ENCRYPT[ea](block, key)
    return f"{(block >> 27 & 3) << 64 | (block & _KEEP) | token_class << 27:020d}"


def decode(token: str, ea: EA, key: int | None) -> Token:
    """Parse, decrypt and CRC-check a token; raises a typed :class:`StsError`."""
    token_class, block = extract_class(parse_digits(token))
    if token_class == 3:
        raise UnsupportedError("class 3 is reserved")
    if token_class != 1:
        if key is None:
            raise FormatError("a decoder key is needed to decode class 0 and class 2 tokens")
        _ea.check_key(ea, key)
        block = _ea.decrypt(ea, block, key)
    return from_block(token_class, block)
