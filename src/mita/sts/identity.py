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
    return _luhn(payload)


#: An ASCII digit to the digit sum of its double (0, 2, 4, 6, 8, 1, 3, 5, 7, 9), as bytes.translate takes it.
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def _weighted(digits: bytes) -> int:
    """Luhn's sum of ASCII digits, table-driven: every second digit from the right doubled (by table, with its
    digit sum), the others summed as their ASCII codes less 48 each. A vend checks two Luhn digits per meter
    number, and the digit-by-digit loop cost more than the token's cipher."""
    return sum(digits[-1::-2].translate(_DOUBLED)) + sum(digits[-2::-2]) - 48 * (len(digits) >> 1)


def _luhn(payload: str) -> int:
    """:func:`luhn_digit` of a string already known to be ASCII digits."""
    return -_weighted(payload.encode("ascii")) % 10


#: Each IIN's share of the MeterPAN's Luhn sum: the IIN followed by as many zeros as its DRN has digits.
_IIN_WEIGHT = {iin: _weighted((iin + "0" * length).encode("ascii")) for iin, length in IIN_DRN_LENGTH.items()}
_IIN_FOR_LENGTH = {length: iin for iin, length in IIN_DRN_LENGTH.items()}


def _pan_digit_reference(drn: str, iin_weight: int) -> int:
    """The MeterPAN's Luhn digit for a DRN of ASCII digits whose IIN adds ``iin_weight`` to Luhn's sum, or -1
    when the DRN's own check digit is wrong (the compiled accelerator's ``pan_digit`` does the same in C).

    Both digits from one pass: with E the digits in even places from the right (the check digit's), O the others
    and D() the doubling table, the DRN is right when D(O) + E ends in 0, and the MeterPAN's digit completes
    D(E) + O + the IIN's share (Luhn's sum is linear in the digits). Sums of ASCII codes, less 48 per digit.
    """
    data = drn.encode("ascii")
    even, odd = data[-1::-2], data[-2::-2]
    if (sum(odd.translate(_DOUBLED)) + sum(even) - 48 * len(even)) % 10:
        return -1
    return -(sum(even.translate(_DOUBLED)) + sum(odd) - 48 * len(odd) + iin_weight) % 10


def _bind_pan_digit(drn: str, iin_weight: int) -> int:
    """On first use binds :data:`_pan_digit` to the compiled accelerator's (:mod:`.accel`), or to the reference."""
    global _pan_digit
    from . import accel

    _pan_digit = accel.function("pan_digit") or _pan_digit_reference
    return _pan_digit(drn, iin_weight)


_pan_digit = _bind_pan_digit


def forget_choices() -> None:
    """Choose the Luhn digits' implementation again on next use (:func:`mita.sts.accel.use` calls this)."""
    global _pan_digit
    _pan_digit = _bind_pan_digit


class MeterNumber(Value):
    """A validated IIN and DRN (the DRN includes its check digit)."""

    iin: str
    drn: str
    #: The 18-digit MeterPAN: IIN, DRN and a Luhn digit over both (kept, as DKGA04 reads it per token).
    pan: str = field(init=False, repr=False, compare=False)

    def __init__(self, iin: str, drn: str) -> None:
        # Written out rather than Value's generic constructor and a __post_init__: a vend parses one meter number
        # per token, and the generic walk cost as much as the checks (a test holds this signature to the fields).
        object.__setattr__(self, "iin", iin)
        object.__setattr__(self, "drn", drn)
        length = IIN_DRN_LENGTH.get(iin)
        if length is None:
            raise FormatError(f"IIN must be 600727 or 0000 (got {iin!r})")
        if len(drn) != length or not (drn.isascii() and drn.isdigit()):
            raise FormatError(f"with IIN {iin} the meter number must be {length} digits (got {drn!r})")
        pan_digit = _pan_digit(drn, _IIN_WEIGHT[iin])
        if pan_digit < 0:
            raise CheckDigitError(f"meter number {drn} has a wrong check digit")
        object.__setattr__(self, "pan", f"{iin}{drn}{pan_digit}")

    @classmethod
    def parse(cls, drn: str, iin: str | None = None) -> MeterNumber:
        """Take the IIN from the DRN's length when it is not given."""
        if not (drn.__class__ is str and drn.isdigit()):  # digits as typed need no clean-up (the hot path)
            drn = str(drn).strip().replace(" ", "").replace("-", "")
        if iin is None:
            found = _IIN_FOR_LENGTH.get(len(drn))
            if found is None:
                raise FormatError(f"a meter number has 11 or 13 digits (got {drn!r})")
            return cls(found, drn)
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
