"""The token doctor: why a meter would take or refuse a token, in plain words, and which digit was mistyped.

Pure, as the rest of the meter model: the caller gives the meter as it started (a :class:`~mita.meter.model.Meter`)
and what it is assumed to have entered since (entered again on a copy, :func:`replay`), the keys the token might
have been made under instead, and the tokens known to be issued to the meter; nothing here reads a database or a
clock. The verdict is the meter model's own answer to the token, so the doctor keeps no second copy of its rules.

The steps, the first that concludes gives the verdict:

====  =================================================================  ==========================================
step  check                                                              verdict
====  =================================================================  ==========================================
1     digits only, 20 of them (19 or 21: the missing or extra digit      ``format_error`` (with ``position`` and
      is looked for)                                                     ``suggested`` when one fix decodes)
2     the meter (a copy) enters the token                                ``accepted``, ``used``, ``old``,
                                                                         ``key_expired`` or ``refused``
3     refused by CRC: it decodes under another key of the meter's        ``wrong_key``
      (previous, or pending) or is a token issued before a key change
4     every single digit changed (20 x 9) and every adjacent pair        ``crc_error`` (with ``position`` and
      swapped: those that decode under one of the keys (and, when        ``suggested`` when one fix is left)
      the issued tokens are known, those that are issued, if any)
====  =================================================================  ==========================================

A correction's own verdict (what the meter would do with the corrected digits) is ``corrected_verdict``.
No answer holds key material: key change sections show their KRN, KT and RO, never their key bits.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum

from mita import sts
from mita.sts.tid import base_date_in_use
from mita.sts.values import Value, field

from .model import ACCEPTED, Meter, Result
from .state import SECRET_FIELDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DIGITS = 20
#: A placeholder identity for a meter known only by its key (no database): 11 digits, a valid check digit.
KEY_ONLY_DRN = "0000000000" + str(sts.luhn_digit("0000000000"))


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # the meter would take it (if it was not entered yet)
    USED = "used"  # its TID is in the meter's store
    OLD = "old"  # older than every TID the meter remembers
    KEY_EXPIRED = "key_expired"  # TID past the key's expiry (KEN)
    WRONG_KEY = "wrong_key"  # made under another key: the meter's previous one, or a pending one
    CRC_ERROR = "crc_error"  # decodes under none of the keys: mistyped, or for another meter
    FORMAT_ERROR = "format_error"  # not 20 digits, or not digits
    REFUSED = "refused"  # another refusal of the meter (ddtk, overflow, unsupported...): meter_result says which


class KeyRole(StrEnum):
    CURRENT = "current"  # what the meter holds now
    PREVIOUS = "previous"  # what it held before a key change it installed
    PENDING = "pending"  # issued to it, not installed yet


#: The meter's results, by the verdict they give (any other refusal is REFUSED).
VERDICTS: dict[Result, Verdict] = {
    **dict.fromkeys(ACCEPTED, Verdict.ACCEPTED),
    Result.USED: Verdict.USED,
    Result.OLD: Verdict.OLD,
    Result.KEY_EXPIRED: Verdict.KEY_EXPIRED,
    Result.CRC_ERROR: Verdict.CRC_ERROR,
    Result.FORMAT_ERROR: Verdict.FORMAT_ERROR,
}

#: What each (class, subclass) is, for people.
KINDS: dict[tuple[int, int], str] = {
    (0, 0): "electricity credit", (0, 1): "water credit", (0, 2): "gas credit", (0, 3): "time credit",
    (0, 4): "electricity currency credit", (0, 5): "water currency credit", (0, 6): "gas currency credit",
    (0, 7): "time currency credit",
    (1, 0): "meter test or display token", (1, 1): "meter test or display token",
    (2, 0): "set power limit token", (2, 1): "clear credit token", (2, 2): "set tariff rate token",
    (2, 3): "key change token (1st section)", (2, 4): "key change token (2nd section)",
    (2, 5): "clear tamper token", (2, 6): "set phase unbalance limit token", (2, 7): "set water meter factor token",
    (2, 8): "key change token (3rd section)", (2, 9): "key change token (4th section)",
}  # fmt: skip
KEY_SECTIONS = frozenset({3, 4, 8, 9})
#: Base units of class 0 credit: what one unit of ``amount`` is.
UNITS = {0: "0.1 kWh", 1: "0.1 m³", 2: "0.1 m³", 3: "0.1 minute", 4: "0.00001 currency", 5: "0.00001 currency",
         6: "0.00001 currency", 7: "0.00001 currency"}  # fmt: skip
#: Letters typed for digits.
LOOKALIKES = {"O": "0", "o": "0", "I": "1", "l": "1", "S": "5", "B": "8"}
_HIDDEN = SECRET_FIELDS | {"class", "subclass", "rnd"}


# ---------------------------------------------------------------------- value types


class KeyOption(Value):
    """A key the token may have been made under; ``label`` names it for people (never the key)."""

    role: KeyRole
    ea: int
    decoder_key: int = field(repr=False)
    base_date: int
    label: str


class Issued(Value):
    """A token the vending system issued to the meter: the vend (or campaign) it came with."""

    at: dt.datetime
    kind: str  # the token's kind: credit, fbe, engineering, key_change
    units: int = 0
    vend: str | None = None
    vend_kind: str | None = None  # purchase, engineering, key_change
    amount: int | None = None  # minor units of the tariff's currency
    vendor: str | None = None
    reversed: bool = False
    campaign: int | None = None

    def to_dict(self, time: Callable[[dt.datetime], str]) -> dict[str, Any]:
        return {
            "vend": self.vend, "at": time(self.at), "kind": self.kind, "vend_kind": self.vend_kind,
            "amount": self.amount, "units": self.units, "vendor": self.vendor, "reversed": self.reversed,
            "campaign": self.campaign,
        }  # fmt: skip


class TokenFacts(Value):
    """What a decoded token says, without its key material: class, subclass, TID as a date, units, values."""

    token_class: int
    subclass: int
    kind: str
    tid: int | None = None
    base_date: int | None = None
    issued_at: dt.datetime | None = None  # the TID as the meter's wall-clock time
    units: int | None = None  # credit, in base units (UNITS)
    unit: str | None = None
    values: dict[str, int] = field(default_factory=dict)  # the other fields (power limit, KRN of a key change...)

    def to_dict(self, time: Callable[[dt.datetime], str]) -> dict[str, Any]:
        return {
            "class": self.token_class, "subclass": self.subclass, "kind": self.kind, "tid": self.tid,
            "base_date": self.base_date, "issued_at": None if self.issued_at is None else time(self.issued_at),
            "units": self.units, "unit": self.unit, "values": dict(self.values),
        }  # fmt: skip


class Fix(Value):
    """One way of reading a mistyped token: which digit (1-based), what it should be, the whole token then."""

    how: str  # digit (one wrong), swap (digits position and position+1 swapped), missing, extra
    position: int
    should: str  # the digit(s) at ``position`` in the fix ("" for an extra digit: it goes)
    suggested: str  # the 20 digits
    issued: bool = False  # the fix is a token issued to this meter


class Diagnosis(Value):
    verdict: Verdict
    words: str
    typed: str  # the digits as typed, spaces and dashes removed
    meter_result: str | None = None  # what the meter itself answers to the typed digits (a Result value)
    display: str | None = None  # what it shows
    position: int | None = None  # 1-based: the digit to fix
    suggested: str | None = None  # the 20 digits with it fixed
    fix: str | None = None  # Fix.how
    candidates: tuple[Fix, ...] = ()  # more than one fix decodes: each of them
    corrected_verdict: Verdict | None = None  # what the meter would do with the suggested digits
    key: KeyRole | None = None  # the key the (corrected) token decodes under
    key_label: str | None = None
    token: TokenFacts | None = None
    issued: Issued | None = None
    if_not_entered: str | None = None  # a used token: what the meter would answer had it not been entered

    def to_dict(self, time: Callable[[dt.datetime], str] = dt.datetime.isoformat) -> dict[str, Any]:
        """JSON-ready; ``time`` writes the times (the service adds the utility's offset)."""
        return {
            "verdict": self.verdict.value, "words": self.words, "typed": self.typed,
            "meter_result": self.meter_result, "display": self.display, "position": self.position,
            "suggested": self.suggested, "fix": self.fix,
            "candidates": [
                {"how": c.how, "position": c.position, "should": c.should, "suggested": c.suggested,
                 "issued": c.issued} for c in self.candidates
            ],
            "corrected_verdict": None if self.corrected_verdict is None else self.corrected_verdict.value,
            "key": None if self.key is None else self.key.value, "key_label": self.key_label,
            "token": None if self.token is None else self.token.to_dict(time),
            "issued": None if self.issued is None else self.issued.to_dict(time),
            "if_not_entered": self.if_not_entered,
        }  # fmt: skip


# ---------------------------------------------------------------------- the meter the doctor asks


def key_meter(ea: int, decoder_key: int, typed: str = "", *, profile: str | None = None) -> Meter:
    """A meter known only by its algorithm and decoder key (no database): fresh, its TID store empty, no key
    expiry. Its profile is the usual one for the algorithm (a water valve for a water credit token), and it
    takes class 1 tokens of any manufacturer, so that the only question left is the key."""
    algorithm = sts.EA.parse(ea)
    sts.ea.check_key(algorithm, decoder_key)
    mfr_code, water = 0, False
    try:
        token = sts.decode(_clean(typed), algorithm, decoder_key)
    except sts.StsError:
        token = None
    if isinstance(token, sts.MeterTest | sts.MeterTestWide):
        mfr_code = token.mfr_code
    water = token is not None and token.token_class == 0 and token.subclass in (1, 5)
    chosen = profile or ("water-valve" if water else "edition2-ea11" if algorithm is sts.EA.MISTY1 else "legacy-ea07")
    if isinstance(token, sts.MeterTestWide) and profile is None:
        chosen = "edition2-ea11"  # the 4-digit manufacturer code format
    return Meter.create(
        drn=KEY_ONLY_DRN, ea=int(algorithm), decoder_key=decoder_key, sgc="000000", ti=1, krn=1, kt=2, ken=255,
        profile=chosen, mfr_code=mfr_code % 10 ** (4 if chosen == "edition2-ea11" else 2),
    )  # fmt: skip


def replay(meter: Meter, entries: Iterable[tuple[str, dt.datetime]], skip: str | None = None) -> Meter:
    """``meter`` after entering ``entries`` (digits, when) in order, as a meter whose every issued token was
    typed in would be; ``skip``'s digits are left out. A rejected entry (a token under a key not installed, say)
    changes nothing but the keypad's lockout, which is cleared: the doctor asks about tokens, not the keypad."""
    for digits, at in entries:
        if digits == skip:
            continue
        meter.enter(digits, at)
        _unlock(meter)
    return meter


def _unlock(meter: Meter) -> None:
    s = meter.state
    s.failures, s.locked_until, s.lock_delay_s = 0, None, 0


def _entered(meter: Meter, digits: str, now: dt.datetime) -> tuple[Result, str, str]:
    """What the meter answers to ``digits`` (on a copy: the meter is left as it was): result, display, detail."""
    trial = Meter(copy.deepcopy(meter.state))
    _unlock(trial)
    out = trial.enter(digits, now)
    return out.result, out.display, out.detail


# ---------------------------------------------------------------------- diagnosis


def diagnose(
    typed: str,
    start: Meter,
    now: dt.datetime,
    *,
    entries: Sequence[tuple[str, dt.datetime]] = (),
    base_date: int | None = None,
    others: Sequence[KeyOption] = (),
    issued: Mapping[str, Issued] | None = None,
) -> Diagnosis:
    """Why the meter ``start`` would take or refuse ``typed`` at ``now``, once it has entered ``entries``.

    ``entries``: what the meter is assumed to have entered since ``start``, in order (every token the vending
    system issued to it, key change sets included; see :func:`replay`). ``base_date``: the meter's current base
    date, for TIDs as dates (default: the one in use at ``now``). ``others``: keys the token may have been made
    under instead of the meter's. ``issued``: the tokens the vending system issued to the meter, by digits (None:
    not known, no database). ``start`` is left as it was.
    """
    meter = replay(Meter(copy.deepcopy(start.state)), entries)
    base = base_date if base_date is not None else int(base_date_in_use(now))
    current = KeyOption(KeyRole.CURRENT, meter.state.ea, meter.state.decoder_key, base, "the meter's current key")
    doctor = _Doctor(meter, now, (current, *others), issued, (start, entries))
    digits = _clean(typed)
    bad = next((i for i, c in enumerate(digits, 1) if not ("0" <= c <= "9")), None)
    if bad is not None:
        char = digits[bad - 1]
        like = f" (the letter {char} for a {LOOKALIKES[char]}?)" if char in LOOKALIKES else ""
        words = f"Character {bad} ({char!r}) is not a digit{like}: a token is {DIGITS} digits, 0 to 9."
        return Diagnosis(Verdict.FORMAT_ERROR, words, digits, Result.FORMAT_ERROR.value, position=bad)
    if len(digits) != DIGITS:
        return doctor.length(digits)
    return doctor.whole(digits)


def _clean(typed: str) -> str:
    return "".join(str(typed).split()).replace("-", "")


def grouped(digits: str) -> str:
    """Digits in groups of four, as receipts print them."""
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


class _Doctor:
    """One diagnosis: the meter, the time, the keys to try (the meter's first), the issued tokens."""

    def __init__(
        self,
        meter: Meter,
        now: dt.datetime,
        keys: Sequence[KeyOption],
        issued: Mapping[str, Issued] | None,
        history: tuple[Meter, Sequence[tuple[str, dt.datetime]]],
    ) -> None:
        self.meter, self.now, self.keys, self.issued, self.history = meter, now, keys, issued, history
        self.reject = meter.profile.display[Result.CRC_ERROR]  # what the meter shows for a token of another key

    def unless_entered(self, digits: str) -> Result | None:
        """What the meter would answer to ``digits`` had they not been among the entries (None: they were not)."""
        start, entries = self.history
        if not any(d == digits for d, _ in entries):
            return None
        return _entered(replay(Meter(copy.deepcopy(start.state)), entries, skip=digits), digits, self.now)[0]

    # -------------------------------------------------------------- decoding

    def decodes(self, digits: str) -> tuple[KeyOption, sts.Token] | None:
        """The first key ``digits`` decode under (with a supported class and subclass), and the token."""
        for key in self.keys:
            try:
                return key, sts.decode(digits, sts.EA(key.ea), key.decoder_key)
            except sts.StsError:
                continue
        return None

    def facts(self, token: sts.Token, key: KeyOption) -> TokenFacts:
        fields = token.fields()
        tid = fields.get("tid")
        sub = token.subclass
        try:
            at = None if tid is None else sts.datetime_from_tid(tid, key.base_date)
        except sts.StsError:
            at = None
        credit = token.token_class == 0
        values = {k: int(v) for k, v in fields.items() if k not in _HIDDEN | {"tid", "amount"}}
        if not credit and "amount" in fields:
            values["amount"] = int(fields["amount"])
        return TokenFacts(
            token.token_class, sub, KINDS.get((token.token_class, sub), f"class {token.token_class} token"),
            tid, key.base_date if tid is not None else None, at,
            int(fields["amount"]) if credit else None, UNITS.get(sub) if credit else None, values,
        )  # fmt: skip

    def found(self, digits: str) -> Issued | None:
        return None if self.issued is None else self.issued.get(digits)

    # -------------------------------------------------------------- the steps

    def whole(self, digits: str) -> Diagnosis:
        """20 digits: the meter's answer; if it is a CRC refusal, the other keys, then the single-digit fixes."""
        result, display, detail = _entered(self.meter, digits, self.now)
        hit = self.decodes(digits)
        if hit is not None and hit[0].role is KeyRole.CURRENT:  # the meter's own answer (a class 1 for another
            return self.answered(digits, result, display, detail, hit)  # maker is refused though it decodes)
        head: dict[str, Any] = {"meter_result": result.value, "display": display}
        issued = self.found(digits)
        if hit is not None:
            key, token = hit
            facts = self.facts(token, key)
            words = _wrong_key(key, facts, display) + _issued_words(issued)
            return Diagnosis(Verdict.WRONG_KEY, words, digits, **head, key=key.role, key_label=key.label,
                             token=facts, issued=issued)  # fmt: skip
        if issued is not None:  # issued, yet no key opens it: a key the doctor could not get
            words = (
                f"The meter would refuse it ({display}): it was issued to this meter, under a key it no longer "
                f"holds (and that Mita could not open to check)." + _issued_words(issued)
            )
            return Diagnosis(Verdict.WRONG_KEY, words, digits, **head, issued=issued)
        # the meter's CRC refusal (or a class 3, or a value over 66 bits: what a mistyped digit makes too)
        fixes = self.fixes(_single_changes(digits))
        return self.corrected(digits, Verdict.CRC_ERROR, fixes, head, display)

    def length(self, digits: str) -> Diagnosis:
        """Not 20 digits: a missing or an extra one is looked for."""
        n = len(digits)
        head: dict[str, Any] = {"meter_result": Result.FORMAT_ERROR.value}
        if n not in (DIGITS - 1, DIGITS + 1):
            words = f"The token has {n} digits; a token has {DIGITS}. Check it against the receipt."
            return Diagnosis(Verdict.FORMAT_ERROR, words, digits, **head)
        changes = _missing(digits) if n == DIGITS - 1 else _extra(digits)
        return self.corrected(digits, Verdict.FORMAT_ERROR, self.fixes(changes), head, None)

    def fixes(self, changes: Iterable[Fix]) -> list[tuple[Fix, KeyOption, sts.Token]]:
        """The changes that decode; only the issued ones if any is issued."""
        good = []
        seen: set[str] = set()
        for fix in changes:
            if fix.suggested in seen:
                continue
            seen.add(fix.suggested)
            hit = self.decodes(fix.suggested)
            if hit is not None:
                issued = self.found(fix.suggested) is not None
                good.append((Fix(fix.how, fix.position, fix.should, fix.suggested, issued), *hit))
        if any(f.issued for f, _, _ in good):
            good = [g for g in good if g[0].issued]
        return good

    def corrected(
        self,
        digits: str,
        verdict: Verdict,
        good: list[tuple[Fix, KeyOption, sts.Token]],
        head: dict[str, Any],
        display: str | None,
    ) -> Diagnosis:
        """The answer for a token that needs fixing: the one fix that decodes, several, or none."""
        shown = f" ({display})" if display else ""
        if not good:
            return Diagnosis(verdict, _no_fix(digits, verdict, shown, self.keys), digits, **head)
        intro = (
            f"The meter would refuse it{shown}."
            if len(digits) == DIGITS
            else f"The token has {len(digits)} digits, not {DIGITS}."
        )
        if len(good) > 1:
            ways = "; ".join(_fix_words(f, digits) for f, _, _ in good)
            words = f"{intro} More than one small correction decodes: {ways}. Check the token on the receipt."
            return Diagnosis(verdict, words, digits, **head, candidates=tuple(f for f, _, _ in good))
        fix, key, token = good[0]
        inner = (
            self.whole(fix.suggested)
            if key.role is KeyRole.CURRENT
            else Diagnosis(Verdict.WRONG_KEY, _wrong_key(key, self.facts(token, key), self.reject), fix.suggested)
        )
        issued = self.found(fix.suggested)
        words = f"{intro} {_fix_words(fix, digits)}: it reads {grouped(fix.suggested)}. {inner.words}"
        if self.issued is not None and issued is None:
            words += " Mita issued no such token to this meter, though: check the token on the receipt."
        return Diagnosis(
            verdict, words, digits, **head, position=fix.position, suggested=fix.suggested, fix=fix.how,
            corrected_verdict=inner.verdict, key=key.role, key_label=key.label, token=self.facts(token, key),
            issued=issued, if_not_entered=inner.if_not_entered,
        )  # fmt: skip

    def answered(
        self, digits: str, result: Result, display: str, detail: str, hit: tuple[KeyOption, sts.Token]
    ) -> Diagnosis:
        """The meter decoded it: its own answer, with the token's facts and the vend that issued it."""
        verdict = VERDICTS.get(result, Verdict.REFUSED)
        key, token = hit
        facts = self.facts(token, key)
        issued = self.found(digits)
        after = self.unless_entered(digits) if verdict is Verdict.USED else None
        later = None if after is None else after.value
        words = _verdict_words(verdict, facts, display, detail, self.meter, later, self.issued is not None)
        return Diagnosis(
            verdict, words + _issued_words(issued), digits, result.value, display, key=key.role,
            key_label=key.label, token=facts, issued=issued, if_not_entered=later,
        )  # fmt: skip


# ---------------------------------------------------------------------- candidate fixes


def _single_changes(digits: str) -> Iterable[Fix]:
    """Every single digit changed (20 x 9), then every adjacent pair of different digits swapped."""
    for i, typed in enumerate(digits):
        for d in "0123456789":
            if d != typed:
                yield Fix("digit", i + 1, d, digits[:i] + d + digits[i + 1 :])
    for i in range(len(digits) - 1):
        a, b = digits[i], digits[i + 1]
        if a != b:
            yield Fix("swap", i + 1, b + a, digits[:i] + b + a + digits[i + 2 :])


def _missing(digits: str) -> Iterable[Fix]:
    for i in range(len(digits) + 1):
        for d in "0123456789":
            yield Fix("missing", i + 1, d, digits[:i] + d + digits[i:])


def _extra(digits: str) -> Iterable[Fix]:
    for i in range(len(digits)):
        yield Fix("extra", i + 1, "", digits[:i] + digits[i + 1 :])


# ---------------------------------------------------------------------- words


def _fix_words(fix: Fix, typed: str) -> str:
    """The fix in a sentence, with the digits as typed (the first digit is number 1)."""
    at = fix.position
    if fix.how == "digit":
        return f"Digit {at} was mistyped: it should be {fix.should}, not {typed[at - 1]}"
    if fix.how == "swap":
        return f"Digits {at} and {at + 1} are swapped: they should read {fix.should}, not {typed[at - 1 : at + 1]}"
    if fix.how == "missing":
        return f"Digit {at} is missing: it should be {fix.should}"
    return f"Digit {at} (a {typed[at - 1]}) is one too many"


def _no_fix(digits: str, verdict: Verdict, shown: str, keys: Sequence[KeyOption]) -> str:
    if verdict is Verdict.FORMAT_ERROR:
        what = "missing" if len(digits) < DIGITS else "too many"
        return (
            f"The token has {len(digits)} digits, not {DIGITS}: one is {what}, and no single fix of it decodes "
            f"for this meter. Check it against the receipt."
        )
    tried = "its key" if len(keys) == 1 else f"any of its {len(keys)} keys"
    return (
        f"The meter would refuse it{shown}: it does not decode under {tried}, nor does any single mistyped or "
        f"swapped digit explain it. More than one digit is wrong, or the token was made for another meter."
    )


def _credit_words(facts: TokenFacts | None) -> str:
    if facts is None:
        return "token"
    if facts.units is not None:
        return f"{facts.kind} of {facts.units} units ({facts.unit} each)"
    if facts.values and facts.token_class == 2 and facts.subclass in KEY_SECTIONS:
        shown = ", ".join(f"{k.upper()} {v}" for k, v in facts.values.items() if k in ("krn", "kt", "ro", "ti"))
        return f"{facts.kind}{f' ({shown})' if shown else ''}"
    return facts.kind


def _when(facts: TokenFacts | None) -> str:
    if facts is None or facts.tid is None:
        return ""
    at = f", made {facts.issued_at:%Y-%m-%d %H:%M}" if facts.issued_at is not None else ""
    return f" (TID {facts.tid}{at})"


def _verdict_words(
    verdict: Verdict,
    facts: TokenFacts | None,
    display: str,
    detail: str,
    meter: Meter,
    later: str | None,
    known: bool,
) -> str:
    what, when = _credit_words(facts), _when(facts)
    if verdict is Verdict.ACCEPTED and facts is not None and facts.tid is None:  # no TID: never used up
        if facts.token_class == 1:
            return f"The meter would accept this {what}: it carries no TID, and can be entered any number of times."
        window = meter.profile.key_change_window_s // 60
        return (
            f"The meter would accept this {what}: enter every token of its set, in order, within {window} minutes; "
            f"the meter installs the new key with the last one."
        )
    if verdict is Verdict.ACCEPTED:
        base = f"The meter would accept this {what}{when} if it has not been entered yet."
        return base if known else base + " (Without the database the doctor cannot know which tokens it took.)"
    if verdict is Verdict.USED:
        words = (
            f"The meter would show {display}: this {what}{when} was entered already (Mita assumes every token it "
            f"issued to this meter was entered)."
        )
        if later == Result.ACCEPT.value:
            words += " If it was never entered, the meter will accept it."
        elif later == Result.OLD.value:
            words += " Even if it was never entered, the meter would refuse it as old: newer tokens were entered."
        return words
    if verdict is Verdict.OLD:
        store = len(meter.state.tids)
        return (
            f"The meter would show {display}: this {what}{when} is older than every one of the {store} tokens the "
            f"meter remembers, so it can no longer be entered. Issue a new token if it is still needed."
        )
    if verdict is Verdict.KEY_EXPIRED:
        return (
            f"The meter would show {display}: this {what}{when} is past the expiry of the meter's key (KEN "
            f"{meter.state.ken}). The meter needs a key change."
        )
    return f"The meter would refuse this {what}{when} ({display}): {detail}."


def _wrong_key(key: KeyOption, facts: TokenFacts, display: str) -> str:
    what = _credit_words(facts) + _when(facts)
    if key.role is KeyRole.PENDING:
        return (
            f"The meter would refuse it ({display}): this {what} was made under {key.label}, a key change the meter "
            f"has not installed yet. Enter the key change tokens first, then this one."
        )
    if facts.token_class == 2 and facts.subclass in KEY_SECTIONS:
        return (
            f"The meter would refuse it ({display}): this {what} belongs to a key change the meter installed "
            f"already (it was made under {key.label}). It is not needed again."
        )
    return (
        f"The meter would refuse it ({display}): this {what} was made under {key.label}, before a key change the "
        f"meter has installed since. Issue it again under the current key."
    )


def _issued_words(issued: Issued | None) -> str:
    if issued is None:
        return ""
    if issued.vend is None:
        source = f"campaign {issued.campaign}" if issued.campaign is not None else "Mita"
        return f" Issued by {source} on {issued.at:%Y-%m-%d %H:%M}."
    by = f" by {issued.vendor}" if issued.vendor else ""
    words = f" Issued{by} on {issued.at:%Y-%m-%d %H:%M} (vend {issued.vend})."
    if issued.reversed:
        words += " That vend was reversed: the token should not be entered."
    return words
