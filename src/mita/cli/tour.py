"""``mita token tour``: a short tour of the token engine, on nothing but the library."""

from __future__ import annotations

import argparse

from .command import say

# The STS 531 compliance suite's published test key: never a real utility's.
DEMO_VENDING_KEY = bytes.fromhex("abababababababab")


def tour(_args: argparse.Namespace | None = None) -> None:
    """Derive a decoder key, issue tokens, and decode them back."""
    import datetime as dt

    from mita import sts

    meter = sts.MeterNumber.parse("47500150231")
    key = sts.dkga02(DEMO_VENDING_KEY, meter, kt=2, sgc="123456", ti=1, krn=1)
    say(f"Meter {meter.drn} (IIN {meter.iin}, PAN {meter.pan})")
    say("Decoder key derived with DKGA02 from the compliance-suite test vending key.\n")
    issued = dt.datetime(2026, 11, 25, 14, 0)
    base = sts.BaseDate.Y2014
    tid = sts.tid_from_datetime(issued, base)
    tokens: list[sts.Token] = [
        sts.TransferCredit(tid, 256, rnd=5),
        sts.TransferCredit(tid + 1, 1000, rnd=9, kind=sts.CreditKind.WATER),
        sts.SetMaximumPowerLimit(tid + 2, 5000, rnd=3),
        sts.ClearTamperCondition(tid + 3, rnd=1),
        sts.MeterTest(control=1),
    ]
    say(f"Tokens issued {issued:%Y-%m-%d %H:%M} (base date {int(base)}, EA07):")
    say(f"  {'token':<24}  {'class/sub':<9}  decoded back")
    for token in tokens:
        digits = sts.encode(token, sts.EA.STA, key)
        back = sts.decode(digits, sts.EA.STA, key)
        shown = {k: v for k, v in back.fields().items() if k not in ("class", "subclass")}
        grouped = " ".join(digits[i : i + 4] for i in range(0, 20, 4))
        say(f"  {grouped:<24}  {back.token_class}/{back.subclass:<7}  {shown}")
    try:
        sts.decode(sts.encode(tokens[0], sts.EA.STA, key), sts.EA.STA, key ^ 1)
    except sts.StsError as exc:
        say(f"\nThe same credit token under another meter's key: {exc.code} ({exc.message})")
    say("\nTry: mita token --help, or pipe JSON lines into mita token batch.")
