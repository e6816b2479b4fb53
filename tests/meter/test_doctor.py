"""The token doctor's pure part (mita.meter.doctor): verdicts, the key a token was made under, and mistyped digits.

Hypothesis draws tokens under EA07 and EA11 keys and one typing mistake (a wrong digit, two adjacent digits
swapped, a digit left out or typed twice): the doctor must name the position and give back the token as issued,
whenever its answer is one fix; when the issued tokens are known it always is. The verdicts are the meter
model's, on a copy of a meter that entered a history of tokens: used, old, key expired, wrong key (the previous
one, or a pending one), refused (a DDTK meter), and nothing of a key ever shows in an answer.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mita import sts
from mita.meter import Meter
from mita.meter import doctor as d
from mita.sts import recipes
from mita.sts.recipes import KeyConfig

NOW = dt.datetime(2026, 3, 10, 9, 30)
TID = sts.tid_from_datetime(NOW, 2014)  # TID >> 16 is 97
KEY = 0x0123456789ABCDEF
NEW_KEY = 0x1111222233334444
KEY128 = 0x00112233445566778899AABBCCDDEEFF
DRN = "47500150231"
OLD_CFG = KeyConfig("123456", 1, 2, 1, 7, 2014, 255)
NEW_CFG = KeyConfig("123456", 2, 2, 1, 7, 2014, 255)


def credit(tid: int, units: int = 100, key: int = KEY, ea: sts.EA = sts.EA.STA, rnd: int = 3) -> str:
    return sts.encode(recipes.credit_token("electricity", tid, units, rnd), ea, key)


def meter(ken: int = 255, kt: int = 2, profile: str = "legacy-ea07") -> Meter:
    return Meter.create(drn=DRN, ea=7, decoder_key=KEY, sgc="123456", ti=1, krn=1, kt=kt, ken=ken, profile=profile)


# 24 credit tokens a minute apart, all entered: the legacy meter remembers 20 of them
HISTORY = [credit(TID + i, 100 + i) for i in range(24)]
ENTRIES = [(t, NOW) for t in HISTORY]
ISSUED = {t: d.Issued(NOW, "credit", 100 + i, vend=f"vend-{i}", amount=5000) for i, t in enumerate(HISTORY)}


# ---------------------------------------------------------------------- the meter's verdicts


def test_a_new_token_is_accepted_and_an_entered_one_used_with_what_it_would_say_unentered() -> None:
    fresh = credit(TID + 30, 42)
    out = d.diagnose(fresh, meter(), NOW, entries=ENTRIES, base_date=2014, issued=ISSUED)
    assert (out.verdict, out.meter_result, out.key) == (d.Verdict.ACCEPTED, "accept", d.KeyRole.CURRENT)
    assert out.token is not None and (out.token.units, out.token.tid) == (42, TID + 30)
    assert out.token.issued_at == NOW + dt.timedelta(minutes=30)
    assert out.issued is None and "would accept" in out.words

    used = d.diagnose(HISTORY[-1], meter(), NOW, entries=ENTRIES, base_date=2014, issued=ISSUED)
    assert (used.verdict, used.display, used.if_not_entered) == (d.Verdict.USED, "Used", "accept")
    assert used.issued == ISSUED[HISTORY[-1]] and "vend-23" in used.words


def test_a_token_pushed_out_of_the_tid_store_is_old() -> None:
    out = d.diagnose(HISTORY[0], meter(), NOW, entries=ENTRIES, base_date=2014, issued=ISSUED)
    assert (out.verdict, out.meter_result) == (d.Verdict.OLD, "old")
    assert "20 tokens" in out.words
    # the 5th token is the oldest still remembered: used (and unentered it would have been taken)
    fifth = d.diagnose(HISTORY[4], meter(), NOW, entries=ENTRIES, base_date=2014, issued=ISSUED)
    assert (fifth.verdict, fifth.if_not_entered) == (d.Verdict.USED, "accept")
    fourth = d.diagnose(HISTORY[3], meter(), NOW, entries=ENTRIES, base_date=2014, issued=ISSUED)
    assert fourth.verdict is d.Verdict.OLD


def test_a_tid_past_the_key_expiry_is_key_expired() -> None:
    late = credit(((TID >> 16) + 1) << 16)
    out = d.diagnose(late, meter(ken=TID >> 16), NOW, base_date=2014)
    assert (out.verdict, out.meter_result) == (d.Verdict.KEY_EXPIRED, "key_expired")
    assert f"KEN {TID >> 16}" in out.words


def test_tokens_without_a_tid_are_never_used_up() -> None:
    test = sts.encode(sts.MeterTest(control=1, mfr_code=0), sts.EA.STA, KEY)
    out = d.diagnose(test, meter(), NOW, entries=[(test, NOW)] * 3)
    assert out.verdict is d.Verdict.ACCEPTED and "any number of times" in out.words
    section = d.diagnose(key_change_set()[0], meter(), NOW)
    assert (section.verdict, section.meter_result) == (d.Verdict.ACCEPTED, "kct_pending")
    assert "within 2 minutes" in section.words


def test_other_refusals_of_the_meter_are_refused_with_its_result() -> None:
    out = d.diagnose(credit(TID), meter(kt=1), NOW)  # a default key (DDTK) takes no credit
    assert (out.verdict, out.meter_result) == (d.Verdict.REFUSED, "ddtk")


def test_the_start_meter_is_left_as_it_was() -> None:
    start = meter()
    before = start.state.to_dict()
    d.diagnose(HISTORY[-1], start, NOW, entries=ENTRIES, issued=ISSUED)
    assert start.state.to_dict() == before


# ---------------------------------------------------------------------- other keys


def key_change_set() -> list[str]:
    return [digits for _, digits in recipes.key_change_tokens(OLD_CFG, NEW_CFG, KEY, NEW_KEY)]


def test_a_token_from_before_a_key_change_is_wrong_key_and_so_is_the_key_change_set_itself() -> None:
    kct = key_change_set()
    after = credit(TID + 40, 5, key=NEW_KEY)
    entries = [*ENTRIES, *((t, NOW) for t in kct), (after, NOW)]
    previous = d.KeyOption(d.KeyRole.PREVIOUS, 7, KEY, 2014, "KRN 1")
    fresh_old = credit(TID + 50)  # never entered, but under the old key
    out = d.diagnose(fresh_old, meter(), NOW, entries=entries, base_date=2014, others=[previous])
    assert (out.verdict, out.key, out.meter_result) == (d.Verdict.WRONG_KEY, d.KeyRole.PREVIOUS, "crc_error")
    assert "KRN 1" in out.words and "Issue it again" in out.words
    section = d.diagnose(kct[0], meter(), NOW, entries=entries, others=[previous])
    assert section.verdict is d.Verdict.WRONG_KEY and "not needed again" in section.words
    assert section.token is not None and section.token.values["krn"] == 2
    # the replayed meter holds the new key: the token made under it was entered
    assert d.diagnose(after, meter(), NOW, entries=entries, others=[previous]).verdict is d.Verdict.USED


def test_a_token_under_a_pending_key_is_wrong_key_until_the_set_is_entered() -> None:
    pending = d.KeyOption(d.KeyRole.PENDING, 7, NEW_KEY, 2014, "KRN 2 (pending)")
    after = credit(TID + 40, 5, key=NEW_KEY)
    out = d.diagnose(after, meter(), NOW, entries=ENTRIES, others=[pending])
    assert (out.verdict, out.key) == (d.Verdict.WRONG_KEY, d.KeyRole.PENDING)
    assert "key change tokens first" in out.words


def test_no_key_material_in_any_answer() -> None:
    previous = d.KeyOption(d.KeyRole.PREVIOUS, 7, KEY, 2014, "KRN 1")
    entries = [*ENTRIES, *((t, NOW) for t in key_change_set())]
    shown = json.dumps([d.diagnose(t, meter(), NOW, entries=entries, others=[previous]).to_dict()
                        for t in key_change_set()])  # fmt: skip
    for key in (KEY, NEW_KEY):
        assert f"{key:016x}" not in shown.lower() and str(key) not in shown
    for secret in ("nkho", "nklo", "nkmo1", "nkmo2"):
        assert secret not in shown
    assert f"{KEY:x}" not in repr(previous).lower() and str(KEY) not in repr(previous)


# ---------------------------------------------------------------------- format errors


@pytest.mark.parametrize(("typed", "position"), [("1234 5678 9O12 3456 7890", 10), ("12345678901234567890x", 21)])
def test_a_character_that_is_not_a_digit_is_named(typed: str, position: int) -> None:
    out = d.diagnose(typed, meter(), NOW)
    assert (out.verdict, out.position) == (d.Verdict.FORMAT_ERROR, position)
    assert "not a digit" in out.words
    assert ("the letter O" in out.words) == ("O" in typed)


def test_spaces_and_dashes_are_taken_as_typed_and_lengths_far_off_are_a_format_error() -> None:
    token = HISTORY[-1]
    spaced = "-".join(d.grouped(token).split())
    assert d.diagnose(spaced, meter(), NOW, entries=ENTRIES, issued=ISSUED).verdict is d.Verdict.USED
    short = d.diagnose(token[:15], meter(), NOW)
    assert (short.verdict, short.suggested) == (d.Verdict.FORMAT_ERROR, None) and "15 digits" in short.words


# ---------------------------------------------------------------------- mistyped digits (Hypothesis)

tokens = st.builds(
    lambda tid, units, rnd, wide: (
        (credit(tid, units, KEY128, sts.EA.MISTY1, rnd), sts.EA.MISTY1, KEY128)
        if wide
        else (credit(tid, units, KEY, sts.EA.STA, rnd), sts.EA.STA, KEY)
    ),
    st.integers(TID - 5000, TID + 5000),
    st.integers(1, 60000),
    st.integers(0, 15),
    st.booleans(),
)


def _key_meter(ea: sts.EA, key: int, digits: str) -> Meter:
    return d.key_meter(int(ea), key, digits)


@settings(max_examples=40, deadline=None)
@given(tokens, st.integers(0, 19), st.integers(1, 9))
def test_any_single_digit_change_is_found_at_its_position(drawn: tuple[str, sts.EA, int], at: int, by: int) -> None:
    token, ea, key = drawn
    typo = token[:at] + str((int(token[at]) + by) % 10) + token[at + 1 :]
    start = _key_meter(ea, key, token)
    out = d.diagnose(typo, start, NOW)
    if out.verdict is not d.Verdict.CRC_ERROR:  # the typo decodes by chance (1 in 65,536): nothing to find
        event("the typo decodes")
        return
    if out.candidates:
        event("several fixes")
        assert any(c.suggested == token for c in out.candidates)
    else:
        assert (out.position, out.suggested, out.fix) == (at + 1, token, "digit")
        assert out.corrected_verdict is d.Verdict.ACCEPTED
    # with the issued tokens known, the fix is always the one
    known = d.diagnose(typo, start, NOW, issued={token: d.Issued(NOW, "credit", 1, vend="v")})
    assert (known.position, known.suggested, known.candidates) == (at + 1, token, ())
    assert known.issued is not None and known.issued.vend == "v"


@settings(max_examples=25, deadline=None)
@given(tokens, st.integers(0, 18))
def test_two_swapped_digits_are_found(drawn: tuple[str, sts.EA, int], at: int) -> None:
    token, ea, key = drawn
    if token[at] == token[at + 1]:
        return
    typo = token[:at] + token[at + 1] + token[at] + token[at + 2 :]
    out = d.diagnose(typo, _key_meter(ea, key, token), NOW, issued={token: d.Issued(NOW, "credit", 1)})
    assert (out.verdict, out.fix, out.position, out.suggested) == (d.Verdict.CRC_ERROR, "swap", at + 1, token)


@settings(max_examples=20, deadline=None)
@given(tokens, st.integers(0, 19), st.booleans())
def test_a_missing_or_extra_digit_is_found(drawn: tuple[str, sts.EA, int], at: int, missing: bool) -> None:
    token, ea, key = drawn
    typo = token[:at] + token[at + 1 :] if missing else token[:at] + token[at] + token[at:]
    out = d.diagnose(typo, _key_meter(ea, key, token), NOW, issued={token: d.Issued(NOW, "credit", 1)})
    assert (out.verdict, out.suggested) == (d.Verdict.FORMAT_ERROR, token)
    assert out.fix == ("missing" if missing else "extra")
    # the position named is one where the fix gives the token back
    fixed = typo[: out.position - 1] + token[out.position - 1] + typo[out.position - 1 :] if missing else (
        typo[: out.position - 1] + typo[out.position :])  # fmt: skip
    assert out.position is not None and fixed == token


def test_a_mistyped_token_from_the_history_says_what_the_meter_would_do_with_the_fix() -> None:
    token = HISTORY[-1]
    typo = token[:6] + str((int(token[6]) + 5) % 10) + token[7:]
    out = d.diagnose(typo, meter(), NOW, entries=ENTRIES, issued=ISSUED)
    assert (out.verdict, out.position, out.suggested) == (d.Verdict.CRC_ERROR, 7, token)
    assert (out.corrected_verdict, out.if_not_entered) == (d.Verdict.USED, "accept")
    assert f"Digit 7 was mistyped: it should be {token[6]}, not {typo[6]}" in out.words
    assert out.issued == ISSUED[token]


def test_a_token_for_another_meter_has_no_fix() -> None:
    other = credit(TID, key=0x0F1E2D3C4B5A6978)
    out = d.diagnose(other, meter(), NOW, issued=ISSUED)
    assert (out.verdict, out.suggested) == (d.Verdict.CRC_ERROR, None)
    assert "another meter" in out.words
