"""``mita token doctor``: why a meter would take or refuse a token, in plain words, and which digit was mistyped.

Two ways to name the meter: ``--meter DRN`` (a meter of the database: its history says which tokens it took, its
key changes which keys it held, the vend that issued the token), or ``--decoder-key-file``/``--decoder-key-env``
with ``--ea`` (a fresh meter holding that key, no database). The answer is :mod:`mita.vend.doctor`'s, as
``POST /v1/tokens/doctor`` gives it; ``--json`` prints it unchanged. The command exits as ``mita meter enter``
would for the typed token (0: accepted, 11: old, 12: used, 10: refused by its CRC or format...), so a script can
branch without reading the answer.
"""

from __future__ import annotations

import argparse

from .command import emit, fail, say
from .options import add_base_date, add_database_url, add_ea, add_json, add_key_source

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DOC = (
    "Why a meter would accept or reject a token, in plain words.\n\n"
    "Give the meter's number (--meter: a meter of the database) or its decoder key with --ea (no database). The "
    "doctor decodes the token, finds the vend that issued it, and says whether the meter would take it: accepted, "
    "used, old, key_expired, wrong_key (made before a key change, or under one not installed yet), crc_error (with "
    "the digit to fix when one digit is wrong or two are swapped) or format_error (a digit missing or too many). "
    "Exits as `mita meter enter` would for the token typed."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="The token as typed: 20 digits, spaces and dashes allowed.")
    p.add_argument("--meter", metavar="DRN", help="A meter of the database: its number, with the check digit.")
    add_key_source(p, "decoder-key", "the meter's decoder key, hex (16 digits; 32 for EA11)")
    add_ea(p, help="With a decoder key: its algorithm, 07 (STA) or 11 (MISTY1).")
    add_base_date(p, "With a decoder key: the base date TIDs count from (default: the one in use now).")
    add_database_url(p)
    add_json(p)


def run(args: argparse.Namespace) -> int:
    from . import exits

    keyed = args.decoder_key_file is not None or args.decoder_key_env is not None
    if args.meter is not None and (keyed or args.ea is not None or args.base_date is not None):
        fail("usage", "mita token doctor: give --meter, or a decoder key with --ea: not both")
    if args.meter is not None:
        answer = _of_meter(args)
    elif keyed and args.ea is not None:
        answer = _by_key(args)
    else:
        fail(
            "usage", "mita token doctor: give --meter DRN, or --decoder-key-file FILE (or --decoder-key-env) with --ea"
        )
    if args.json:
        emit(answer)
    else:
        show(answer)
    return exits.for_meter_result(str(answer["meter_result"] or "format_error"))


def _of_meter(args: argparse.Namespace) -> dict[str, Any]:
    from mita.vend import registry

    from .dbshell import refusals, runtime

    services = runtime(args.database_url).services
    with refusals():
        return services.doctor(registry.SYSTEM, args.token, drn=args.meter)


def _by_key(args: argparse.Namespace) -> dict[str, Any]:
    from mita.vend import doctor
    from mita.vend.callers import local_now

    from . import secrets

    source = secrets.KeySource("decoder-key", args.decoder_key_file, args.decoder_key_env)
    key = secrets.read_key(source, what="the meter's decoder key", digits=secrets.decoder_key_digits(args.ea))
    assert key is not None  # required
    return doctor.by_key(args.token, key, args.ea, local_now(), args.base_date)


def show(answer: dict[str, Any]) -> None:
    """The answer for a person: the verdict and its words, then the facts, one a line."""
    from mita.meter.doctor import grouped

    say(f"{answer['verdict']}: {answer['words']}")
    if answer["suggested"]:
        say(f"  fix        digit {answer['position']} ({answer['fix']}): {grouped(answer['suggested'])}")
    for c in answer["candidates"]:
        say(f"  maybe      digit {c['position']} ({c['how']}): {grouped(c['suggested'])}")
    token = answer["token"]
    if token:
        made = f", made {token['issued_at'][:16]}" if token["issued_at"] else ""
        tid = f", TID {token['tid']}{made}" if token["tid"] is not None else ""
        units = f", {token['units']} units of {token['unit']}" if token["units"] is not None else ""
        say(f"  token      {token['kind']}{units}{tid}")
    if answer["key_label"] and answer["key"] != "current":
        say(f"  made under {answer['key_label']}")
    issued = answer["issued"]
    if issued:
        by = f" by {issued['vendor']}" if issued["vendor"] else ""
        what = f"vend {issued['vend']}" if issued["vend"] else f"campaign {issued['campaign']}"
        amount = f", amount {issued['amount']}" if issued["amount"] else ""
        state = " (reversed)" if issued["reversed"] else ""
        say(f"  issued     {issued['at'][:16]}{by}: {what}{amount}{state}")
