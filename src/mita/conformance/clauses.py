"""What each kind of case exercises: the one table from case kinds, algorithms and key derivations to the
clauses of IEC 62055-41:2018 (Ed. 3) and the sections of the shared SPEC.md digest.

The clause numbers are those SPEC.md quotes from the public (translated) text of the standard and those the
engine's modules cite; a range ("6.3.9-6.3.14") is as fine as the public text let us place a token type. A case's
clauses are its kind's, then its algorithm's, then its key derivation's. Change
a clause here and the JSON report, the HTML page and the tests follow.
"""

from __future__ import annotations

from dataclasses import dataclass

STANDARD = "IEC 62055-41:2018"


@dataclass(frozen=True, slots=True)
class Clause:
    title: str
    clauses: tuple[str, ...]  # IEC 62055-41 clause numbers
    spec: str  # where SPEC.md (../shared/sts/SPEC.md) digests them


#: Case kinds, in the order the report lists them.
KINDS: dict[str, Clause] = {
    "credit": Clause(
        "Credit tokens (class 0, subclasses 0-3: electricity, water, gas, time): layout, TID, amount, CRC, "
        "encryption, class bits, 20 digits",
        ("6.2", "6.3.3", "6.3.5", "6.3.6.2", "6.3.7", "6.4"),
        "§1, §2, §3, §4",
    ),
    "currency_credit": Clause(
        "Currency credit tokens (class 0, subclasses 4-7): 5-bit exponent, sign, CRC_C",
        ("6.3.6.3", "6.3.22"),
        "§1.3, §2, §4.3",
    ),
    "meter_test": Clause(
        "InitiateMeterTest/Display tokens (class 1, sent in clear): control and manufacturer code",
        ("6.2.3", "6.3.8", "7.3.6"),
        "§1.2, §1.3",
    ),
    "management": Clause(
        "Management tokens (class 2): power limits, clear credit, tariff rate, clear tamper, water meter factor",
        ("6.3.9-6.3.14",),
        "§1.3, §4.3",
    ),
    "key_change": Clause(
        "Key change token sections (class 2, subclasses 3, 4, 8, 9), encrypted under the old key",
        ("6.2.4-6.2.8",),
        "§7",
    ),
    "key_change_set": Clause(
        "Key change sets: the sections assemble, in any order, to the new key a DKGA derives, and re-encode",
        ("6.2.8",),
        "§7",
    ),
    "key_derivation": Clause("Decoder key generation from a vending key and the meter's identity", ("6.5.3",), "§6"),
    "meter_identity": Clause(
        "Meter numbers: Luhn check digit, MeterPAN, PANBlock, CONTROLBlock",
        ("6.5.3.1", "6.5.3.2", "10.3.1"),
        "§6.1, §8",
    ),
    "cipher": Clause("Encryption algorithms on 64-bit blocks (tables, rounds, blocks)", ("6.5.4-6.5.6",), "§5"),
    "crc": Clause("CRC-16 of the 50 information bits, byte-swapped into the block", ("6.3.7",), "§2"),
    "crc_c": Clause("CRC_C of the currency subclasses (0x01 appended)", ("6.3.22",), "§2"),
    "amount": Clause(
        "TransferAmount: 16-bit exponent and mantissa, rounded up in the customer's favour", ("6.3.6.2",), "§4.3"
    ),
    "tid": Clause("Token identifier: whole minutes from the base date in 24 bits; roll-over", ("6.3.5",), "§4.2, §10"),
}

ALGORITHMS: dict[str, Clause] = {
    "EA07": Clause("STA, the Standard Transfer Algorithm (64-bit key)", ("6.5.4", "7.3.3"), "§5.1"),
    "EA09": Clause("DEA, single DES (64-bit key; deprecated)", ("6.5.5", "7.3.4"), "§5.2"),
    "EA11": Clause("MISTY1 (128-bit key)", ("6.5.6",), "§5.3"),
}

KEY_DERIVATIONS: dict[str, Clause] = {
    "DKGA02": Clause("DES of PANBlock xor CONTROLBlock", ("6.5.3.1", "6.5.3.2", "6.5.3.4"), "§6.3"),
    "DKGA04": Clause("KDF-HMAC-SHA-256 (NIST SP 800-108 feedback mode)", ("6.5.3.6",), "§6.5"),
}


def clauses_of(kind: str, algorithm: str | None, key_derivation: str | None) -> tuple[str, ...]:
    """A case's clauses: its kind's, then its algorithm's and its key derivation's, each once."""
    out: list[str] = []
    for table, name in ((KINDS, kind), (ALGORITHMS, algorithm), (KEY_DERIVATIONS, key_derivation)):
        if name is not None:
            out += [c for c in table[name].clauses if c not in out]
    return tuple(out)
