"""Recipes: how Mita issues tokens, over the primitives of this package.

The primitives (``tokens``, ``codec``, ``keychange``, ``bulk``) say what a token *is*; the recipes say which
tokens to make for a job, and in which order, the one way every caller does it: the vending service, key
change campaigns and the command line (as pyca/cryptography's recipes stand over its hazmat layer).

- :class:`KeyConfig` is what decides a meter's decoder key and its TIDs.
- :data:`KEY_CHANGE_RULES` is the list of moves a meter cannot follow. Each rule is one expression that reads
  the same over Python values and over SQL columns, so a campaign checks a whole selection in SQL with the very
  rules a single key change is checked with in Python (:func:`check_key_change`).
- :func:`key_change_tokens` and :func:`key_change_sets` make a change's set, one meter or many, in entry order.
- :func:`credit_token` and :func:`engineering_token` make the tokens a purchase and an operator ask for.

Pure like the rest of ``mita.sts``: keys, TIDs and random nibbles are arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .codec import encode
from .ea import EA
from .errors import StsError
from .keychange import key_change_set
from .tokens import (
    ALL_REGISTERS,
    ClearCredit,
    ClearTamperCondition,
    CreditKind,
    MeterTest,
    SetMaximumPhasePowerUnbalanceLimit,
    SetMaximumPowerLimit,
    SetTariffRate,
    Token,
    TransferCredit,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    Keys = int | Sequence[int] | npt.NDArray[Any]  # one decoder key per meter, as the bulk path takes them


class RecipeError(StsError):
    """A job no token set can do (a key change a meter cannot follow, an engineering token without its value)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KeyConfig:
    """What decides a meter's decoder key and its TIDs."""

    sgc: str
    krn: int
    kt: int
    ti: int
    ea: int
    base_date: int
    ken: int

    def as_dict(self) -> dict[str, Any]:
        # Every field is a scalar: no deep copy (``dataclasses.asdict`` makes one, 20-40 us on every vend)
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> KeyConfig:
        """The configuration in a document that holds it among other things (a meter's pending key, say)."""
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------- key changes


@dataclass(frozen=True)
class Rule:
    """A move a meter cannot follow: ``broken(old, new, new_dkga)`` is true when the move breaks the rule.

    Written with ``==``, ``!=``, ``&`` and ``|`` only, it reads the same over plain values and over SQLAlchemy
    columns (where it becomes a WHERE clause selecting the meters that break it).
    """

    code: str
    message: str
    broken: Callable[[Any, Any, Any], Any]


MISTY1, STA = int(EA.MISTY1), int(EA.STA)

KEY_CHANGE_RULES: tuple[Rule, ...] = (
    Rule(
        "invalid_request", "a meter's key cannot be changed to KT 0 (DITK)", lambda o, n, _: (n.kt == 0) & (o.kt != 0)
    ),
    # RO = 1 clears the meter's TID store: with the same decoder key the set could be entered again and again,
    # each time making every credit token new again, so a roll-over needs a new key (SPEC.md §10)
    Rule(
        "invalid_key_change",
        "a new base date needs a new vending key (KRN) as well",
        lambda o, n, _: (n.base_date != o.base_date) & (n.sgc == o.sgc) & (n.krn == o.krn),
    ),
    # key change tokens do not carry the algorithm: the only move is EA07 to EA11, with the 4-token set
    Rule(
        "invalid_key_change",
        "a meter can only move from EA07 to EA11",
        lambda o, n, _: (n.ea != o.ea) & ((o.ea != STA) | (n.ea != MISTY1)),
    ),
    Rule(
        "invalid_dkga",
        "EA11 needs 128-bit keys: the new key must be DKGA04",
        lambda _, n, dkga: (n.ea == MISTY1) & (dkga != 4),
    ),
)


def check_key_change(old: KeyConfig, new: KeyConfig, new_dkga: int) -> None:
    """What a meter can follow: the rules for any key change, whoever asks for it."""
    if new == old:
        raise RecipeError("invalid_request", "the meter already has this key configuration")
    for rule in KEY_CHANGE_RULES:
        if rule.broken(old, new, new_dkga):
            raise RecipeError(rule.code, rule.message)


def key_bits(ea: int) -> int:
    """A key change set carries a 128-bit key (4 tokens) to an EA11 meter, a 64-bit one (2 tokens) otherwise."""
    return 128 if ea == MISTY1 else 64


def entry_order(old_ea: int, bits: int) -> tuple[int, ...]:
    """The order a set's sections (1st, 2nd[, 3rd, 4th]) are entered in.

    A 64-bit (EA07) meter learns of a 4-token set from its 3rd and 4th sections, so they go first.
    """
    if bits == 128 and old_ea != MISTY1:
        return (2, 3, 0, 1)
    return tuple(range(bits // 32))


def _set_fields(old: KeyConfig, new: KeyConfig) -> dict[str, Any]:
    return {
        "key_bits": key_bits(new.ea),
        "ken": new.ken,
        "krn": new.krn,
        "kt": new.kt,
        "ti": new.ti,
        "ro": int(new.base_date != old.base_date),  # a new base date restarts the meter's TIDs
        "sgc": new.sgc,
    }


def key_change_sections(old: KeyConfig, new: KeyConfig, new_key: int) -> list[Token]:
    """The set that moves a meter from ``old`` to ``new``, in entry order, before encryption."""
    fields = _set_fields(old, new)
    sections = key_change_set(new_key, **fields)
    return [sections[i] for i in entry_order(old.ea, fields["key_bits"])]


def key_change_tokens(old: KeyConfig, new: KeyConfig, old_key: int, new_key: int) -> list[tuple[Token, str]]:
    """The set as (section, 20 digits), encrypted under the meter's old key, in entry order (deterministic)."""
    if new_key == old_key and new.base_date != old.base_date:
        raise RecipeError("invalid_key_change", "a roll-over (RO = 1) must install a new decoder key")
    return [(s, encode(s, EA(old.ea), old_key)) for s in key_change_sections(old, new, new_key)]


def key_change_sets(old: KeyConfig, new: KeyConfig, old_keys: Keys, new_keys: Keys, n: int) -> npt.NDArray[Any]:
    """The sets of ``n`` meters sharing ``old`` and ``new`` (one decoder key each), as bulk digits, entry order."""
    from . import bulk  # NumPy: only callers of the bulk path pay for its import

    fields = _set_fields(old, new)
    sets = bulk.key_change_sets(new_keys, old_keys, old.ea, n, **fields)
    order = list(entry_order(old.ea, fields["key_bits"]))
    return sets if order == sorted(order) else sets[:, order]


# ---------------------------------------------------------------------- credit and engineering tokens

CREDIT_KINDS = {"electricity": CreditKind.ELECTRICITY, "water": CreditKind.WATER, "gas": CreditKind.GAS}


def credit_token(utility: str, tid: int, units: int, rnd: int) -> TransferCredit:
    """A purchase's credit in the meter's base units (0.1 kWh, 0.1 m³)."""
    return TransferCredit(tid, units, rnd, CREDIT_KINDS[utility])


# kind: (needs a TID, needs a value, how to make it from (tid, value, rnd))
ENGINEERING: dict[str, tuple[bool, bool, Callable[[int, int | None, int], Token]]] = {
    "clear_tamper": (True, False, lambda tid, _, rnd: ClearTamperCondition(tid, rnd=rnd)),
    "clear_credit": (True, False, lambda tid, v, rnd: ClearCredit(tid, ALL_REGISTERS if v is None else v, rnd)),
    "set_power_limit": (True, True, lambda tid, v, rnd: SetMaximumPowerLimit(tid, v or 0, rnd)),
    "set_phase_unbalance_limit": (True, True, lambda tid, v, rnd: SetMaximumPhasePowerUnbalanceLimit(tid, v or 0, rnd)),
    "set_tariff_rate": (True, True, lambda tid, v, rnd: SetTariffRate(tid, v or 0, rnd)),
    "test": (False, False, lambda _, v, __: MeterTest(control=1 if v is None else v)),
}


def engineering_needs_tid(kind: str) -> bool:
    """Whether the token carries a TID (and so is encrypted and spends one of the meter's TIDs)."""
    return _engineering(kind)[0]


def engineering_token(kind: str, tid: int, value: int | None, rnd: int) -> Token:
    """An operator's token: clear tamper, clear credit (all registers unless ``value``), power limits in watts,
    a tariff rate (the meter's own units, 0..65535), or a meter test (class 1, sent in clear)."""
    _, needs_value, make = _engineering(kind)
    if needs_value and value is None:
        raise RecipeError("invalid_request", f"{kind} needs a value")
    return make(tid, value, rnd)


def _engineering(kind: str) -> tuple[bool, bool, Callable[[int, int | None, int], Token]]:
    if kind not in ENGINEERING:
        raise RecipeError("invalid_kind", f"kind must be one of {', '.join(ENGINEERING)}")
    return ENGINEERING[kind]
