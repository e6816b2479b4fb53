"""Meter identity: IIN, meter number (DRN), MeterPAN, PANBlock and CONTROLBlock.

IEC 62055-41 defines exactly two IINs for electricity meters: ``600727`` with
an 11-digit DRN and ``0000`` with a 13-digit DRN (10.3.1). The DRN ends in a
Luhn check digit over the manufacturer code and serial; a wrong digit is
almost always a typo, and a token made for a mistyped number would be lost
money, so we refuse it.
"""

from __future__ import annotations

from functools import lru_cache

from .errors import CheckDigitError, FormatError, RangeError
from .values import Value, field

IIN_DRN_LENGTH = {"600727": 11, "0000": 13}


def is_digits(text: str) -> bool:
    """ASCII decimal digits only: ``str.isdigit`` also takes "²" and Arabic-Indic digits."""
    return text.isascii() and text.isdigit()


def luhn_digit(payload: str) -> int:
    """The check digit to append to ``payload`` (mod-10, doubling from the right)."""
    if not is_digits(payload):
        raise FormatError(f"Luhn payload must be decimal digits (got {payload!r})")
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


class MeterNumber(Value):
    """A validated IIN and DRN (the DRN includes its check digit)."""

    iin: str
    drn: str
    #: The 18-digit MeterPAN: IIN, DRN and a Luhn digit over both (kept, as DKGA04 reads it per token).
    pan: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        length = IIN_DRN_LENGTH.get(self.iin)
        if length is None:
            raise FormatError(f"IIN must be 600727 or 0000 (got {self.iin!r})")
        if len(self.drn) != length or not is_digits(self.drn):
            raise FormatError(f"with IIN {self.iin} the meter number must be {length} digits (got {self.drn!r})")
        if luhn_digit(self.drn[:-1]) != int(self.drn[-1]):
            raise CheckDigitError(f"meter number {self.drn} has a wrong check digit")
        body = self.iin + self.drn
        object.__setattr__(self, "pan", body + str(luhn_digit(body)))

    @classmethod
    def parse(cls, drn: str, iin: str | None = None) -> MeterNumber:
        """Take the IIN from the DRN's length when it is not given."""
        drn = str(drn).strip().replace(" ", "").replace("-", "")
        if iin is None:
            iin = {11: "600727", 13: "0000"}.get(len(drn))
            if iin is None:
                raise FormatError(f"a meter number has 11 or 13 digits (got {drn!r})")
        return cls(str(iin), drn)

    @property
    def mfr_code(self) -> str:
        return self.drn[: len(self.drn) - 9]

    def pan_block(self, common: bool = False) -> int:
        """The rightmost 16 digits of IIN||DRN, read as 16 hex nibbles.

        For a common key (KT 3, DCTK) the DRN digits are zeros, so that every
        meter of the supply group gets the same key.
        """
        drn = "0" * len(self.drn) if common else self.drn
        return int((self.iin + drn)[-16:], 16)


@lru_cache(maxsize=256)
def control_block(kt: int, sgc: str, ti: int, krn: int) -> int:
    """KT(1) SGC(6) TI(2) KRN(1) FFFFFF, as 16 hex nibbles (TI written as 2 BCD digits)."""
    check_key_params(kt, sgc, ti, krn)
    return int(f"{kt}{sgc}{ti:02d}{krn}FFFFFF", 16)


def check_key_params(kt: int, sgc: str, ti: int, krn: int) -> None:
    if kt not in (0, 1, 2, 3):
        raise RangeError(f"key type KT must be 0..3 (got {kt})")
    if not isinstance(sgc, str) or len(sgc) != 6 or not is_digits(sgc):
        raise FormatError(f"supply group code SGC must be 6 digits (got {sgc!r})")
    if not 0 <= ti <= 99:
        raise RangeError(f"tariff index TI must be 0..99 (got {ti})")
    if not 1 <= krn <= 9:
        raise RangeError(f"key revision number KRN must be 1..9 (got {krn})")
